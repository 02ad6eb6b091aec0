"""Community backends get the argv and entrypoint GPUStack's CustomServer builds for them.

tests/data/gpustack/community_argv.json was recorded by running GPUStack's own functions
(``replace_command_param``, ``shlex.split``, ``flatten_to_argv``, ``_normalize_param_format``,
``get_container_entrypoint``; see its "source") on every version of every community spec we keep
(community-specs/ and GPUStack's aggregated catalog) for 1 GPU, 4 GPUs, a shared claim, a user
parallelism flag and user overrides. gpufleet renders each argument on its own (jinja2 sandbox)
instead of substituting into text and splitting it again; for these specs the result is the same.
"""
from __future__ import annotations

import json

import pytest

from backends.parameters import flatten_to_argv, normalize_param_format
from backends.render import Template, Variables, render
from documents.yaml_reader import Marks

from .conftest import ROOT

GOLDEN = json.loads((ROOT / "tests" / "data" / "gpustack" / "community_argv.json").read_text())
SPECS: dict = {}


def _spec(case: dict) -> dict:
    """The version's templates, read from the same file the recording read."""
    from documents.yaml_reader import read_yaml

    key = case["from"]
    if key not in SPECS:
        folder = ROOT / "tests" / "data" / "gpustack"
        path = folder / "community-specs" / key if key.endswith(".yaml") and key != \
            "gpustack-community-catalog.yaml" else folder / key
        data, _ = read_yaml(path, key)
        SPECS[key] = data if isinstance(data, list) else [data]
    return next(s for s in SPECS[key] if s["backend_name"] == case["backend"])


def _id(c: dict) -> str:
    return f"{c['backend']}-{c['version']}-{c['case']}"


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[_id(c) for c in GOLDEN["cases"]])
def test_same_argv_and_entrypoint_as_gpustack(case):
    spec = _spec(case)
    version = spec["version_configs"][case["version"]] or {}
    run = version.get("run_command") or spec.get("default_run_command")
    entry = version.get("entrypoint") or spec.get("default_entrypoint")
    variables = Variables("/models/m", "m", 40000, "10.0.0.5", case["gpus"],
                          ",".join(str(i) for i in range(case["gpus"])), case["env"])
    marks = Marks(case["from"])
    argv = render(Template(run, marks, ()), variables) if run else []
    argv += normalize_param_format(flatten_to_argv(case["parameters"]), spec.get("parameter_format"))
    assert argv == case["argv"]
    ours = render(Template(entry, marks, ()), variables) if entry else None
    assert ours == case["entrypoint"]


def test_the_golden_file_covers_every_community_spec_we_keep():
    kept = {(c["backend"], c["version"]) for c in GOLDEN["cases"]}
    assert len(kept) >= 40
    assert {c["case"] for c in GOLDEN["cases"]} == {"1 GPU", "4 GPUs", "shared claim", "user parallelism",
                                                   "user override"}


#: where a shipped spec deliberately differs from GPUStack's catalog, and why (README says so too)
DEVIATIONS = {
    # GPUStack's gateway maps model names; gpufleet has none, so clients need the name on the engine
    ("Text-Embeddings-Inference", "--served-model-name {{model_name}}"),
    # without it a multi-GPU replica of TensorRT-LLM uses one GPU of those it holds
    ("TensorRT-LLM", "--tp_size {{gpu_count}}"),
    # debug logging of every request is not a production default
    ("Kokoro-FastAPI", "--log-level info"),
}


def _without_deviation(backend: str, text: str | None, theirs: str | None) -> str | None:
    for name, extra in DEVIATIONS:
        if name == backend and text and extra in text and extra not in (theirs or ""):
            if extra == "--log-level info":
                return text.replace(extra, "--log-level debug")
            return text.replace(" " + extra, "")
    return text


def test_the_shipped_community_backends_are_the_ones_recorded():
    """What backends/ ships runs the templates the golden file was recorded on, less the listed deviations."""
    import yaml

    recorded = {(c["backend"], c["version"]): c for c in GOLDEN["cases"]}
    checked = 0
    for path in sorted((ROOT / "backends").glob("*/spec.yaml")):
        data = yaml.safe_load(path.read_text())
        for spec in data if isinstance(data, list) else [data]:
            if spec.get("is_built_in") or spec.get("backend_source") in ("built_in", "built-in"):
                continue
            for version, config in spec["version_configs"].items():
                case = recorded[(spec["backend_name"], version)]
                source = _spec(case)
                theirs = source["version_configs"][version] or {}
                config = config or {}
                their_run = theirs.get("run_command") or source.get("default_run_command")
                mine = _without_deviation(spec["backend_name"],
                                          config.get("run_command") or spec.get("default_run_command"), their_run)
                assert mine == their_run, (path, version)
                assert (config.get("entrypoint") or spec.get("default_entrypoint")) == \
                    (theirs.get("entrypoint") or source.get("default_entrypoint")), (path, version)
                checked += 1
    assert checked >= 20
