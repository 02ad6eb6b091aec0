"""vLLM and SGLang command lines equal what GPUStack's own workers build for the same inputs.

tests/data/gpustack/builtins.json was recorded by running GPUStack's argument functions (see its
"source") for 1 GPU, several GPUs, a shared claim, user parallelism flags and user overrides,
over several versions. The one difference is gpufleet's own: a shared claim on vLLM also sets
--gpu-memory-utilization (GPUStack leaves vLLM at its default 0.9; gpufleet enforces the share).
"""
from __future__ import annotations

import json

import pytest

from backends.builtins import BUILDERS, BuiltinContext

from .conftest import ROOT

GOLDEN = json.loads((ROOT / "tests" / "data" / "gpustack" / "builtins.json").read_text())


def _id(c: dict) -> str:
    return f"{c['backend']}-{c['version']}-{c['gpus']}gpu-{' '.join(c['parameters'])}-{c['fraction']}"


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[_id(c) for c in GOLDEN["cases"]])
def test_same_argv_as_gpustack(case):
    ctx = BuiltinContext("/models/m", "m", "10.0.0.5", 40000, case["gpus"], case["version"],
                         tuple(case["parameters"]), case["env"], case["fraction"])
    ours = BUILDERS[case["backend"]](ctx)
    if case["backend"] == "vLLM" and case["fraction"] is not None:
        i = ours.index("--gpu-memory-utilization")
        assert ours[i + 1] == str(case["fraction"])
        ours = ours[:i] + ours[i + 2:]
    assert ours == case["argv"]


def test_the_golden_file_covers_what_the_issue_names():
    cases = GOLDEN["cases"]
    for backend in ("vLLM", "SGLang"):
        mine = [c for c in cases if c["backend"] == backend]
        assert any(c["gpus"] == 1 for c in mine) and any(c["gpus"] > 2 for c in mine)
        assert any(c["fraction"] for c in mine)
        assert any(any("pipeline" in p or "pp" in p for p in c["parameters"]) for c in mine)


def test_voxbox_gets_its_device_as_the_container_numbers_it():
    gpu = BUILDERS["VoxBox"](BuiltinContext("/m", "m", "10.0.0.5", 40000, 1, "0.0.21-cuda", (), {}, None, "0"))
    assert gpu == ["--model", "/m", "--data-dir", "/var/lib/vox-box", "--host", "10.0.0.5", "--port", "40000",
                   "--device", "cuda:0"]
    cpu = BUILDERS["VoxBox"](BuiltinContext("/m", "m", "10.0.0.5", 40000, 0, "0.0.21-cpu", (), {}, None, None))
    assert "--device" not in cpu
    mine = BUILDERS["VoxBox"](BuiltinContext("/m", "m", "1.2.3.4", 1, 1, "x", ("--device", "cpu"), {}, None, "0"))
    assert mine.count("--device") == 1 and mine[mine.index("--device") + 1] == "cpu"


MAX_LEN = json.loads((ROOT / "tests" / "data" / "gpustack" / "max_model_len.json").read_text())


@pytest.mark.parametrize("case", MAX_LEN["cases"], ids=[c["name"] for c in MAX_LEN["cases"]])
def test_context_length_derived_as_gpustack_derives_it(case, tmp_path):
    """The fetch script's port of get_hf_text_config + get_max_model_len, on the configs GPUStack's
    own functions were run on (tests/data/gpustack/max_model_len.json)."""
    import importlib.util

    from stack.fetches import SCRIPT

    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("fetch_script", loader=None))
    exec(compile(SCRIPT, "stack/fetch_script.py", "exec"), module.__dict__)
    (tmp_path / "config.json").write_text(json.dumps(case["config"]))
    assert module.max_model_len(str(tmp_path)) == case["derived"]


@pytest.mark.parametrize("case", MAX_LEN["cases"], ids=[c["name"] for c in MAX_LEN["cases"]])
def test_the_context_cap_is_settled_by_what_the_fetch_read(case):
    """GPUStack puts the cap right after the model (before parallelism): kept with 8192 when the
    derived length is above 8192, gone otherwise."""
    from dataclasses import replace as dc_replace

    from stack.containers import finalize_command

    for backend, key in (("vLLM", "vllm"), ("SGLang", "sglang")):
        ctx = BuiltinContext("/models/m", "m", "10.0.0.5", 40000, 2, "v0.11.0", (), {}, None, context_cap=True)
        final = finalize_command(_spec_with(BUILDERS[backend](ctx)), "/models/m", case["derived"])
        base = BUILDERS[backend](dc_replace(ctx, context_cap=False))
        after_model = 1 if backend == "vLLM" else 2
        assert final == base[:after_model] + case[key] + base[after_model:]


def test_a_user_context_flag_means_no_cap():
    for backend, given in (("vLLM", "--max-model-len=4096"), ("SGLang", "--context-length=4096")):
        argv = BUILDERS[backend](BuiltinContext("/m", "m", "1.2.3.4", 1, 1, "v0.11.0", (given,), {}, None,
                                                context_cap=True))
        from backends.builtins import CONTEXT_CAP
        assert CONTEXT_CAP not in argv and given in argv


def _spec_with(command):
    from stack.containers import ContainerSpec
    from stack.fetches import FetchSpec

    fetch = FetchSpec("h", "huggingface", "o/m", None, "/c", "/models/m", "/models/m", "img", (), (), 60, 8)
    return ContainerSpec("d", 0, "h", "1.2.3.4", 1, "n", "img", None, tuple(command), (), (), (), (), (), (),
                         None, 0, None, None, False, 0, fetch=fetch)
