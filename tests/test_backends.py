"""Backend specs: the shipped catalog, GPUStack's real catalog and community specs, GPUStack's rules."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backends.catalog import load_catalog
from backends.render import Template, Variables, render
from documents.problems import InputError

from .conftest import ROOT

SHIPPED = {"vLLM", "SGLang", "MindIE", "VoxBox", "llama.cpp", "MinerU", "PaddleX-GenAI-Server",
           "Text-Embeddings-Inference", "Kokoro-FastAPI", "TensorRT-LLM"}


def _variables(env):
    return Variables("/models/m", "m", 40000, "10.0.0.1", 2, "0,1", env)


def _render_every_version(catalog):
    rendered = {}
    for entry in catalog:
        for name, cfg in entry.spec.version_configs.items():
            env = {**entry.spec.default_env, **cfg.env}
            marks, path = entry.version_marks[name]
            command = cfg.run_command or entry.spec.default_run_command
            entrypoint = cfg.entrypoint or entry.spec.default_entrypoint
            argv = render(Template(command, marks, path), _variables(env)) if command else []
            ep = render(Template(entrypoint, marks, path), _variables(env)) if entrypoint else []
            rendered[(entry.name, name)] = (ep, argv)
    return rendered


def test_shipped_catalog_has_the_promised_backends(catalog):
    assert set(catalog.names()) == SHIPPED
    for name in ("vLLM", "SGLang", "MindIE", "VoxBox"):
        assert catalog.get(name).spec.backend_source == "built-in"
    for name in SHIPPED - {"vLLM", "SGLang", "MindIE", "VoxBox"}:
        assert catalog.get(name).spec.backend_source == "community"


def test_every_shipped_backend_has_a_readme_and_cpu_where_the_engine_has_one(catalog):
    for spec_file in (ROOT / "backends").glob("*/spec.yaml"):
        assert (spec_file.parent / "README.md").is_file(), spec_file
    for name in ("llama.cpp", "Text-Embeddings-Inference", "Kokoro-FastAPI", "VoxBox"):
        assert "cpu" in catalog.get(name).spec.frameworks, name


def test_every_shipped_version_renders_to_argv(catalog):
    rendered = _render_every_version(catalog)
    # built-ins with no run command: GPUStack's worker builds it (tests/test_builtins.py)
    assert rendered[("vLLM", "v0.16.0")] == (["vllm", "serve"], [])
    assert rendered[("llama.cpp", "cpu")][1] == ["-m", "/models/m", "--host", "0.0.0.0", "--port", "40000",
                                                 "--alias", "m"]
    # {{MODEL_NAME}} is supplied by default_env, as in GPUStack's catalog
    assert rendered[("PaddleX-GenAI-Server", "latest-nvidia-gpu")][1][3] == "PaddleOCR-VL-1.5-0.9B"
    assert rendered[("PaddleX-GenAI-Server", "latest-iluvatar-gpu")][1][3] == "m"  # version run_command wins
    assert rendered[("SGLang", "v0.5.4-cu129")][0] == ["python3", "-m", "sglang.launch_server"]
    # built-ins whose command GPUStack's worker builds (MindIE: config.json and its daemon) render nothing here
    assert all(argv for (name, _), (_, argv) in rendered.items() if name not in ("vLLM", "SGLang", "VoxBox", "MindIE"))
    assert rendered[("MindIE", "2.3.0-910b")] == ([], [])


def test_gpustack_community_catalog_loads_and_renders(reference: Path):
    catalog = load_catalog([reference / "gpustack-community-catalog.yaml"])
    assert len(catalog) >= 8
    assert all(e.spec.backend_source == "community" for e in catalog)
    rendered = _render_every_version(catalog)
    assert len(rendered) == sum(len(e.spec.version_configs) for e in catalog)
    assert rendered[("TokenSpeed", "0.1.3-sm90")][0] == ["tokenspeed", "serve"]
    assert rendered[("Kokoro-FastAPI", "latest-cpu")][1][-2:] == ["--log-level", "debug"]


def test_community_repository_specs_load(reference: Path):
    files = sorted((reference / "community-specs").glob("*.yaml"))
    assert files
    for file in files:
        catalog = load_catalog([file], community=[file])
        assert len(catalog) == 1, file
    # llama.cpp-54a1c4f names a default_version that does not exist: accepted at load time
    entry = next(iter(load_catalog([reference / "community-specs" / "llama.cpp-54a1c4f.yaml"])))
    assert entry.spec.default_version == "v1-custom"
    assert entry.spec.default_version not in entry.spec.version_configs


def test_a_pasted_community_spec_loads_as_community_with_a_note(reference: Path):
    catalog = load_catalog([reference / "community-specs" / "mis-tei-3961e3a.yaml"])
    assert catalog.get("mis-tei").spec.backend_source == "community"
    (note,) = catalog.notes
    assert "no -custom suffix: loaded as a community backend" in note.message and note.line == 1


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


def test_crlf_folded_and_null_fields_are_accepted(tmp_path):
    text = ("backend_name: x-custom\r\ndefault_run_command: >\r\n  serve {{model_path}}\r\n  --port {{port}}\r\n"
            "default_entrypoint:\r\nhealth_check_path:\r\ndefault_backend_param:\r\n"
            "version_configs:\r\n  v1:\r\n    image_name: img\r\n    custom_framework: cpu\r\n"
            "    entrypoint:\r\n    run_command:\r\n")
    entry = next(iter(load_catalog([_write(tmp_path, "a/spec.yaml", text)])))
    spec = entry.spec
    assert spec.health_check_path is None  # GPUStack: unset (no health check for a custom backend)
    assert spec.default_entrypoint is None and spec.default_backend_param == []
    argv = render(Template(spec.default_run_command, entry.marks, ()), _variables({}))
    assert argv == ["serve", "/models/m", "--port", "40000"]


def test_catalog_only_keys_are_ignored(tmp_path):
    text = ("backend_name: y-custom\nicon: data:image/png;base64,AAAA\nframework_index_map: {cpu: [v1]}\n"
            "is_built_in: false\nid: 7\ncreated_at: 2025-01-01\nversion_configs:\n"
            "  v1: {image_name: img, custom_framework: cpu, built_in_frameworks: null}\n")
    catalog = load_catalog([_write(tmp_path, "y/spec.yaml", text)])
    assert catalog.names() == ["y-custom"]


def test_default_backend_parameters_alias(tmp_path):
    text = ("backend_name: z-custom\ndefault_backend_parameters: [--a=1]\n"
            "version_configs: {v1: {image_name: img, custom_framework: cpu}}\n")
    entry = next(iter(load_catalog([_write(tmp_path, "z/spec.yaml", text)])))
    assert entry.spec.default_backend_param == ["--a=1"]


def test_custom_versions_extend_a_builtin(tmp_path):
    extra = _write(tmp_path, "vllm-extra/spec.yaml",
                   "backend_name: vLLM\nversion_configs:\n  v0.17.0-custom:\n"
                   "    image_name: vllm/vllm-openai:v0.17.0\n    custom_framework: cuda\n")
    catalog = load_catalog([extra, ROOT / "backends"])
    versions = catalog.get("vLLM").spec.version_configs
    assert "v0.17.0-custom" in versions and "v0.16.0" in versions


def test_a_users_spec_with_a_shipped_name_replaces_it_and_says_so(tmp_path):
    extra = _write(tmp_path, "vllm-extra/spec.yaml",
                   "backend_name: vLLM\nis_built_in: true\nversion_configs:\n  v0.17.0:\n"
                   "    image_name: vllm/vllm-openai:v0.17.0\n    custom_framework: cuda\n")
    catalog = load_catalog([ROOT / "backends", extra])
    assert list(catalog.get("vLLM").spec.version_configs) == ["v0.17.0"]
    (note,) = [n for n in catalog.notes if "replaces the shipped backend" in n.message]
    assert note.file == str(extra) and "backends/vllm/spec.yaml" in note.message


def test_gpustacks_whole_catalog_dropped_into_backends_updates_by_name(tmp_path, reference: Path):
    root = tmp_path / "backends"
    shutil.copytree(ROOT / "backends", root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copy(reference / "gpustack-community-catalog.yaml", root / "gpustack-community-catalog.yaml")
    catalog = load_catalog([root], tmp_path)
    replaced = sorted(n.message.split("'")[1] for n in catalog.notes if "replaces the shipped backend" in n.message)
    assert len(replaced) >= 5  # the catalog's entries of shipped community backends win
    shipped = load_catalog([ROOT / "backends"])
    assert len(catalog) == len(shipped) + (len(load_catalog([reference / "gpustack-community-catalog.yaml"]))
                                           - len(replaced))
    for name in replaced:
        assert catalog.get(name).marks.file == "backends/gpustack-community-catalog.yaml"


def test_every_catalog_entry_pasted_alone_loads(tmp_path, reference: Path):
    import yaml

    entries = yaml.safe_load((reference / "gpustack-community-catalog.yaml").read_text())
    for i, entry in enumerate(entries):
        path = _write(tmp_path, f"e{i}.yaml", yaml.safe_dump(entry))
        catalog = load_catalog([path])
        assert catalog.get(entry["backend_name"]).spec.backend_source == "community"


def test_gpustacks_spellings_and_extra_keys_are_accepted_with_notes(tmp_path):
    path = _write(tmp_path, "x.yaml", "backend_name: x\nbackend_source: built_in\nallowed_proxy_uris: [/v1/x]\n"
                                      "health_check_pth: /h\nversion_configs:\n  v1:\n    image_name: i\n"
                                      "    custom_framework: cpu\n    gpu_hint: a100\n")
    catalog = load_catalog([path])
    assert catalog.get("x").spec.backend_source == "built-in"
    messages = [(n.line, n.message) for n in catalog.notes]
    assert (4, "'health_check_pth' is not a backend field GPUStack reads; ignored (did you mean "
               "'health_check_path'?)") in messages
    assert any(line == 9 and "'gpu_hint' is not a version field" in m for line, m in messages)
    assert not any("allowed_proxy_uris" in m for _, m in messages)  # GPUStack's own key: silently ignored


def test_community_backends_take_custom_versions(tmp_path):
    extra = _write(tmp_path, "llama-mine/spec.yaml",
                   "backend_name: llama.cpp\nversion_configs:\n  b9999-custom:\n"
                   "    image_name: my/llama.cpp:b9999\n    custom_framework: cuda\n")
    catalog = load_catalog([ROOT / "backends", extra])
    assert "b9999-custom" in catalog.get("llama.cpp").spec.version_configs
    assert catalog.get("llama.cpp").spec.backend_source == "community"


def test_duplicate_backend_names_are_refused(tmp_path):
    one = _write(tmp_path, "a/spec.yaml", "backend_name: d-custom\nversion_configs: {v: {image_name: i, "
                                          "custom_framework: cpu}}\n")
    two = _write(tmp_path, "b/spec.yaml", "backend_name: d-custom\nversion_configs: {v: {image_name: i, "
                                          "custom_framework: cpu}}\n")
    with pytest.raises(InputError) as err:
        load_catalog([tmp_path])
    assert "already defined in" in str(err.value) and str(one) in str(err.value)
    assert err.value.problems[0].file == str(two)
