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
