"""MindIE runs as GPUStack runs it: its config.json, environment, daemon and serving script.

tests/data/gpustack/mindie.json was recorded by running GPUStack's own AscendMindIEServer._start
(see its "source") and capturing what it hands to the container runtime.
"""
from __future__ import annotations

import json

import pytest

from backends import mindie_config as mindie

from .conftest import ROOT, copy_project, run_cli
from .test_plan_cli import edit

GOLDEN = json.loads((ROOT / "tests" / "data" / "gpustack" / "mindie.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[f"{c['npus']}npu-{c['derived_max_model_len']}"
                                                       for c in GOLDEN["cases"]])
def test_same_config_environment_and_command_as_gpustack(case):
    (path, (config, mode)), = case["files"].items()
    assert path == mindie.CONFIG_PATH and mode == "0o640"
    pending = mindie.config_text(mindie.config("/models/m", "m", "10.0.0.5", 40000, case["npus"],
                                               mindie.PENDING_SEQ_LEN))
    assert json.loads(mindie.settle(pending, case["derived_max_model_len"])) == config
    assert mindie.environment(case["model_env"]) == case["env"]
    assert case["command"] is None and case["command_args"] == [mindie.DAEMON]
    assert case["working_dir"] == mindie.WORKING_DIR and case["script"] == mindie.SERVE_SCRIPT


def _mindie_project(tmp_path, params: str = ""):
    project = copy_project(tmp_path)
    stack = project / "stack" / "demo.yaml"
    edit(stack, "deployments:", "deployments:\n  mindie-qwen:\n    backend: MindIE\n"
         "    model: {huggingface: Qwen/Qwen3-8B}\n    resources: {gpus: 2, vram: whole}\n" + params)
    return project


def test_a_mindie_replica_gets_the_file_the_daemon_and_no_flags(tmp_path):
    from stack.plan import build_plan
    from stack.project import load_project

    project = _mindie_project(tmp_path)
    plan = build_plan(load_project("demo", project), lock_file=None)
    (spec,) = [c for c in plan.containers if c.deployment == "mindie-qwen"]
    assert spec.image == "gpustack/runner:cann8.5-910b-mindie2.3.0"
    assert spec.entrypoint == ("/usr/bin/bash", "-c", mindie.SERVE_SCRIPT, "gpustack-serving-command-script")
    assert spec.command == (mindie.DAEMON,) and spec.working_dir == mindie.WORKING_DIR
    (path, content, mode), = spec.uploads
    cfg = json.loads(mindie.settle(content, 40960))
    model = cfg["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0]
    assert (path, mode) == (mindie.CONFIG_PATH, "0640")
    assert model["modelWeightPath"] == "/var/lib/gpufleet/models/huggingface/Qwen/Qwen3-8B"
    assert model["worldSize"] == 2 and cfg["BackendConfig"]["npuDeviceIds"] == [[0, 1]]
    assert cfg["ServerConfig"]["port"] == spec.port and cfg["ServerConfig"]["ipAddress"] == spec.address
    assert cfg["BackendConfig"]["ModelDeployConfig"]["maxSeqLen"] == 8192  # config.json allows 40960: capped
    env = dict(spec.env)
    assert env["MIES_CONFIG_JSON_PATH"] == mindie.CONFIG_PATH and "ASCEND_RT_VISIBLE_DEVICES" not in env
    assert spec.healthcheck is not None and spec.healthcheck.test[-1] == "/info"
    assert spec.waits_for_fetch_outputs  # the sequence length comes from the fetched config.json


def test_mindie_parameters_are_refused_with_the_reason(tmp_path):
    project = _mindie_project(tmp_path, "    backend_parameters: [--max-batch-size=64]\n")
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert r.code == 2
    assert ("deployments.mindie-qwen.backend_parameters: MindIE takes its settings from config.json, which GPUStack "
            "writes from these parameters (AscendMindIEParameters); gpufleet writes GPUStack's default config.json and "
            "does not translate parameters yet: remove --max-batch-size=64, or set MindIE's environment (e.g. "
            "NPU_MEMORY_FRACTION) in env") in r.err, r.err
