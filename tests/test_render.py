"""Command rendering: templates, precedence, parameter formats, and that nothing reaches a shell."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backends.render import (
    Template,
    Variables,
    render,
)
from documents.problems import InputError
from documents.yaml_reader import Marks
from stack.plan import build_plan
from stack.project import load_project

from .conftest import ROOT

MARKS = Marks("t.yaml")


def _vars(**kw):
    base = dict(model_path="/models/m", model_name="m", port=40001, worker_ip="10.1.2.3", gpu_count=2,
                gpu_ids="0,1", env={})
    base.update(kw)
    return Variables(**base)


def t(text):
    return Template(text, MARKS, ("run_command",))


def test_all_builtin_variables():
    argv = render(t("{{model_path}} {{model_name}} {{port}} {{worker_ip}} {{gpu_count}} {{gpu_ids}}"), _vars())
    assert argv == ["/models/m", "m", "40001", "10.1.2.3", "2", "0,1"]


def test_env_variables_and_builtins_inside_one_argument():
    argv = render(t("--cache={{CACHE}}/{{model_name}} '--title=a b'"), _vars(env={"CACHE": "/c"}))
    assert argv == ["--cache=/c/m", "--title=a b"]


@pytest.mark.parametrize("evil", ["x; rm -rf /", "$(reboot)", "a' 'b", "`id`", "m --trust-remote-code",
                                  "a\nb", "'; echo pwned; '"])
def test_substituted_values_stay_one_argument(evil):
    argv = render(t("serve {{model_name}} --port {{port}}"), _vars(model_name=evil))
    assert argv == ["serve", evil, "--port", "40001"]
    argv = render(t('serve "{{model_name}}"'), _vars(model_name=evil))
    assert argv == ["serve", evil]


def test_sandbox_refuses_python_internals():
    with pytest.raises(InputError) as err:
        render(t("{{ model_name.__class__.__mro__ }}"), _vars())
    assert "t.yaml" in str(err.value)


def test_unknown_variable_names_file_field_and_variable():
    with pytest.raises(InputError) as err:
        render(t("--port {{prot}}"), _vars())
    (problem,) = err.value.problems
    assert problem.file == "t.yaml" and problem.field == "run_command"
    assert "unknown variable '{{prot}}' (did you mean 'port'?)" in problem.message


def test_secret_variables_are_never_rendered():
    with pytest.raises(InputError) as err:
        render(t("--token {{HF_TOKEN}}"), _vars(env={"HF_TOKEN": "secret:hf"}), secret_names=["HF_TOKEN"])
    assert "holds a secret" in str(err.value)


def _project(tmp_path: Path, backend: str, deployment: str):
    (tmp_path / "backends" / "p").mkdir(parents=True)
    (tmp_path / "backends" / "p" / "spec.yaml").write_text(backend)
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "t.yaml").write_text("inventory: ../inv.yaml\ndeployments:\n" + deployment)
    (tmp_path / "inv.yaml").write_text("hosts:\n  - name: h1\n    address: 127.0.30.1\n    accelerators:\n"
                                       "      - {vendor: nvidia, model: A100, vram: 80GiB, count: 2}\n")
    (tmp_path / "Pulumi.yaml").write_text("name: gpufleet\nruntime: python\n")
    return load_project("t", tmp_path)


BACKEND = """backend_name: p-custom
default_version: v1
default_entrypoint: backend-ep
default_run_command: backend-cmd {{LEVEL}}
default_env: {LEVEL: backend, ONLY_BACKEND: b}
default_backend_param: [--x=1]
parameter_format: space
version_configs:
  v1:
    image_name: img:v1
    custom_framework: cuda
    entrypoint: version-ep
    run_command: version-cmd {{LEVEL}}
    env: {LEVEL: version}
  v2:
    image_name: img:v2
    custom_framework: cuda
"""


def test_precedence_deployment_over_version_over_backend(tmp_path):
    dep = ("  a: {backend: p-custom, model: {huggingface: o/m}, entrypoint: dep-ep, run_command: 'dep-cmd {{LEVEL}}',"
           " env: {LEVEL: deployment}, backend_parameters: ['--x=2', '--y=3']}\n"
           "  b: {backend: p-custom, model: {huggingface: o/m}}\n"
           "  c: {backend: p-custom, version: v2, model: {huggingface: o/m}}\n")
    project = _project(tmp_path, BACKEND, dep)
    a, b, c = project.workloads
    assert (a.entrypoint.text, a.run_command.text, a.env["LEVEL"]) == ("dep-ep", "dep-cmd {{LEVEL}}", "deployment")
    assert a.parameters == ["--x", "2", "--y", "3"]
    assert (b.entrypoint.text, b.run_command.text, b.env["LEVEL"]) == ("version-ep", "version-cmd {{LEVEL}}",
                                                                       "version")
    assert b.parameters == ["--x", "1"]
    assert (c.entrypoint.text, c.run_command.text, c.env["LEVEL"]) == ("backend-ep", "backend-cmd {{LEVEL}}",
                                                                       "backend")
    assert c.env["ONLY_BACKEND"] == "b" and c.image == "img:v2"


def test_an_image_alone_keeps_the_backends_command(tmp_path):
    dep = "  a: {backend: p-custom, image: 'my/img:dev', model: {local_path: /var/lib/gpufleet/models/m}}\n"
    (a,) = _project(tmp_path, BACKEND, dep).workloads
    assert a.image == "my/img:dev" and a.run_command.text == "version-cmd {{LEVEL}}" and not a.custom


def test_own_image_and_command_is_gpustacks_custom_mode_with_nothing_of_the_backend(tmp_path):
    dep = ("  a: {backend: p-custom, image: 'lmsysorg/sglang:v0.5.4', run_command: 'python3 -m sglang.launch_server "
           "--model-path {{model_path}} --port {{port}}', env: {A: '1'}, backend_parameters: ['--tp 1'], "
           "model: {huggingface: o/m}}\n")
    (a,) = _project(tmp_path, BACKEND, dep).workloads
    assert a.custom and a.entrypoint is None  # the image's own entrypoint, not the backend's
    assert a.env == {"A": "1"} and a.parameters == ["--tp", "1"]  # no default_env, no default params
    assert a.health_check_path is None and a.framework == "cuda"  # GPUStack: Custom has no health check


def test_backend_custom_needs_image_command_and_a_vendor(tmp_path):
    (a,) = _project(tmp_path, BACKEND, "  a: {backend: Custom, image: 'my/srv:1', run_command: 'serve --port "
                                       "{{port}}', selectors: {vendor: nvidia}, model: {huggingface: o/m}}\n"
                    ).workloads
    assert (a.backend.name, a.framework, a.image, a.entrypoint) == ("Custom", "cuda", "my/srv:1", None)
    with pytest.raises(InputError, match="set image and run_command"):
        _project(tmp_path / "b", BACKEND, "  a: {backend: Custom, model: {huggingface: o/m}}\n")
    with pytest.raises(InputError, match="needs selectors.vendor"):
        _project(tmp_path / "c", BACKEND, "  a: {backend: Custom, image: 'i:1', run_command: 'x', "
                                          "model: {huggingface: o/m}}\n")


def test_default_version_follows_gpustacks_resolution(tmp_path):
    backend = BACKEND.replace("default_version: v1", "default_version: v9")
    # pinned version: fine
    (a,) = _project(tmp_path, backend, "  a: {backend: p-custom, version: v2, model: {huggingface: o/m}}\n"
                    ).workloads
    assert a.version == "v2"
    # a non-built-in backend whose default_version names no version: its newest version (GPUStack's
    # resolve_target_version with compare_versions)
    (tmp_path / "stack" / "t.yaml").write_text(
        "inventory: ../inv.yaml\ndeployments:\n  a: {backend: p-custom, model: {huggingface: o/m}}\n")
    assert load_project("t", tmp_path).workloads[0].version == "v2"
    # a built-in backend has no such fallback: the deployment that relies on it fails, located
    (tmp_path / "backends" / "p" / "spec.yaml").write_text(backend.replace("p-custom", "P") + "is_built_in: true\n")
    (tmp_path / "stack" / "t.yaml").write_text(
        "inventory: ../inv.yaml\ndeployments:\n  a: {backend: P, model: {huggingface: o/m}}\n")
    with pytest.raises(InputError) as err:
        load_project("t", tmp_path)
    (problem,) = err.value.problems
    assert problem.file == "stack/t.yaml" and problem.line == 3
    assert "default_version 'v9' (backends/p/spec.yaml:2) names no version" in problem.message
    assert "v1, v2" in problem.message


@pytest.mark.parametrize("versions, expected", [
    (["v0.10.2", "v0.9.1", "v0.10.1"], "v0.10.2"), (["1.0.0-rc1", "1.0.0"], "1.0.0"),
    (["26.0.0-a2", "7.3.0-a2"], "26.0.0-a2"), (["latest-cpu", "latest-gpu"], "latest-gpu"),
])
def test_newest_version_as_gpustack_runtime_compares(versions, expected):
    from backends.versions import newest

    assert newest(versions) == expected


def test_demo_stack_resolves(catalog):
    project = load_project("demo", ROOT)
    assert len(project.workloads) >= 5
    frameworks = {w.framework for w in project.workloads}
    assert {"cuda", "rocm", "cann", "cpu"} <= frameworks


SHARED_STACK = """inventory: ../inventory/demo.yaml
deployments:
  chat:
    backend: vLLM
    model: {{huggingface: Qwen/Qwen3-8B}}
    replicas: 2
    resources: {{gpus: 1, vram: {vram}}}
    selectors: {{gpu_model: "*H100*"}}
    backend_parameters: {params}
"""


def _shared(tmp_path, vram="30GiB", params="[]", backend="vLLM"):
    root = tmp_path / "p"
    for name in ("backends", "inventory", "stack"):
        shutil.copytree(ROOT / name, root / name)
    (root / "stack" / "demo.lock.yaml").unlink()
    (root / "stack" / "demo.yaml").write_text(SHARED_STACK.format(vram=vram, params=params).replace("vLLM", backend))
    return build_plan(load_project("demo", root))


def test_a_shared_claim_caps_vllms_memory_at_its_share(tmp_path):
    plan = _shared(tmp_path)
    for c in plan.containers:  # 30 GiB of an 81559 MiB H100, injected before the user's parameters
        i = c.command.index("--gpu-memory-utilization")
        assert c.command[i + 1] == "0.376" and i < c.command.index("--trust-remote-code")
    a, b = plan.placement.assignments
    assert (a.host, a.gpus) == (b.host, b.gpus)  # both on one GPU: they fit only because of the cap


def test_sglang_gets_its_static_memory_fraction(tmp_path):
    plan = _shared(tmp_path, backend="SGLang")
    for c in plan.containers:
        i = c.command.index("--mem-fraction-static")
        assert c.command[i + 1] == "0.376"


def test_a_user_cap_above_the_claim_is_refused_and_one_below_is_kept(tmp_path):
    with pytest.raises(InputError) as err:
        _shared(tmp_path / "a", params="[--gpu-memory-utilization=0.9]")
    assert "--gpu-memory-utilization 0.9 lets replica 0 take 71.7 GiB of a 80 GiB GPU" in str(err.value)
    assert "stack/demo.yaml:" in str(err.value)
    plan = _shared(tmp_path / "b", params="[--gpu-memory-utilization=0.3]")
    assert all(c.command.count("--gpu-memory-utilization=0.3") == 1 and "--gpu-memory-utilization" not in c.command
               for c in plan.containers)


def test_a_backend_without_a_memory_cap_refuses_an_enforced_share(tmp_path):
    root = tmp_path / "p"
    for name in ("backends", "inventory", "stack"):
        shutil.copytree(ROOT / name, root / name)
    text = (root / "stack" / "demo.yaml").read_text().replace("vram: 24GiB, share: advisory", "vram: 24GiB")
    (root / "stack" / "demo.yaml").write_text(text)
    with pytest.raises(InputError, match="llama.cpp has no setting gpufleet knows that caps its GPU memory"):
        load_project("demo", root)


@pytest.mark.parametrize("backend, dep_extra, expected", [
    ("vLLM", "", "/v1/models"),                       # the spec's own
    ("SGLang", "", "/health"),
    ("MindIE", "", "/info"),                          # GPUStack's rule for MindIE without a path
    ("llama.cpp", "", "/v1/models"),
    ("vLLM", ", health_check_path: /ping", "/ping"),  # the deployment's wins
    ("vLLM", ", env: {GPUSTACK_MODEL_HEALTH_CHECK_PATH: /ready}", "/ready"),
])
def test_health_paths_follow_gpustacks_is_ready(backend, dep_extra, expected):
    from stack.workloads import health_path

    project = load_project("demo", ROOT)
    entry = project.catalog.get(backend)
    dep = project.stack.deployments["qwen3-8b"].model_copy(update={"backend": backend})
    if dep_extra:
        import yaml

        extra = yaml.safe_load("{" + dep_extra.lstrip(", ") + "}")
        dep = dep.model_copy(update=extra)
    assert health_path(dep, entry, custom=False) == expected


def test_a_community_backend_without_a_path_has_no_health_check(tmp_path):
    backend = BACKEND.replace("p-custom", "q").replace("default_version: v1", "default_version: v1\nbackend_source: community")
    (a,) = _project(tmp_path, backend, "  a: {backend: q, model: {huggingface: o/m}}\n").workloads
    assert a.health_check_path is None


def _shipped_tokens() -> set[str]:
    """Every argument with a brace in the command templates of the shipped specs and GPUStack's community ones."""
    import shlex

    import yaml

    keys = ("run_command", "entrypoint", "default_run_command", "default_entrypoint")
    found: set[str] = set()
    stack = [yaml.safe_load(p.read_text()) for p in [*(ROOT / "backends").glob("*/spec.yaml"),
                                                     *(ROOT / "tests/data/gpustack").rglob("*.yaml")]]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found |= {t for k in keys if isinstance(item.get(k), str) for t in shlex.split(item[k]) if "{" in t}
            stack += item.values()
        elif isinstance(item, list):
            stack += item
    return found


PLAIN = ["{{model_path}}", "--port={{ port }}", "{{a}}{{b}}", "x{{ gpu_ids }}y", "{{_x1}}", "a=b,{{c}}"]
NOT_PLAIN = ["{{ x|lower }}", "{{- x }}", "{{ x -}}", "{{ true }}", "{{ None }}", "{{ x if y else z }}",
             "{% if x %}a{% endif %}", "{{ x }}\n", "a\r\n{{ x }}", "{ {{x}} }", '{"a": {{ x }}}', "{{ x.y }}",
             "{{ x[0] }}", "{# c #}{{ x }}", "{{\tx }}", "{{ 1x }}", "{{x}", "a}b{{c}}"]


def test_plain_tokens_are_read_as_jinja2_reads_them():
    from backends import sandbox
    from backends.render import _plain_names

    shipped = _shipped_tokens()
    assert len(shipped) >= 5
    for token in sorted(shipped) + PLAIN:
        names = _plain_names(token)
        assert names is not None, token  # what specs are written with takes the fast path
        assert names == sandbox.compile_token(token)[1], token
    for token in NOT_PLAIN:
        assert _plain_names(token) is None, token


def test_plain_tokens_render_and_check_without_jinja2():
    import subprocess
    import sys

    code = ("import sys\n"
            "from stack.project import load_project\n"
            "from pathlib import Path\n"
            "load_project('demo', Path('.'))\n"
            "assert 'jinja2' not in sys.modules, 'jinja2 was loaded to check plain templates'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
