"""Two stacks on one inventory: neither takes the other's GPUs or ports, names never collide."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import copy_project, run_cli
from .pulumi_harness import run_program

PROD = """inventory: ../inventory/demo.yaml
deployments:
  big:
    backend: vLLM
    model: {huggingface: meta-llama/Llama-3.3-70B-Instruct}
    replicas: 1
    resources: {gpus: 8, vram: whole, min_vram: 79GiB}
  small:
    backend: vLLM
    model: {huggingface: Qwen/Qwen3-8B}
    replicas: 2
    resources: {gpus: 1, vram: 20GiB}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy_project(tmp_path, program=True, lock=False)
    (tmp_path / "stack" / "prod.yaml").write_text(PROD)
    return tmp_path


def _plan(project: Path, stack: str) -> tuple[int, dict]:
    r = run_cli("--root", project, "plan", "--stack", stack, "--json")
    return r.code, json.loads(r.out)


def _taken(plan: dict) -> tuple[set, set]:
    gpus = {(r["host"], r["vendor"], g) for r in plan["replicas"] for g in r["gpus"]}
    ports = {(r["host"], r["port"]) for r in plan["replicas"]}
    return gpus, ports


def _assert_no_overcommit(*plans: dict) -> None:
    """Across stacks: a whole GPU has one claimant, shared GPUs hold at most their VRAM, ports are unique."""
    size = {(h["host"]): h for h in plans[0]["hosts"]}
    claims: dict = {}
    ports: set = set()
    for plan in plans:
        for r in plan["replicas"]:
            assert (r["host"], r["port"]) not in ports, r
            ports.add((r["host"], r["port"]))
            for g in r["gpus"]:
                claims.setdefault((r["host"], r["vendor"], g), []).append((r["whole"], r["vram_per_gpu_mib"]))
    for key, got in claims.items():
        if any(whole for whole, _ in got):
            assert len(got) == 1, (key, got)
        else:
            whole_size = next(h for h in plans[0]["hosts"] if h["host"] == key[0])
            assert sum(v for _, v in got) <= whole_size["vram_total_mib"] / whole_size["devices"], (key, got)
    assert size


def test_a_stack_leaves_the_gpus_and_ports_of_another_stacks_lock_alone(project):
    assert run_cli("--root", project, "lock", "--stack", "prod").code == 0
    code_prod, prod = _plan(project, "prod")
    code_demo, demo = _plan(project, "demo")
    prod_gpus, _ = _taken(prod)
    demo_gpus, _ = _taken(demo)
    assert prod_gpus and demo_gpus
    _assert_no_overcommit(prod, demo)
    # prod's 8-GPU replica holds the whole H100 host: demo's 4 x H100 replica cannot land there
    assert ("nv-h100-1", "nvidia", 0) in prod_gpus
    assert code_demo == 3
    (llama,) = [u for u in demo["unplaced"] if u["deployment"] == "llama-70b"]
    assert "taken by stack prod" in llama["message"]


def test_both_stacks_lock_without_overlap_whichever_locks_first(project):
    assert run_cli("--root", project, "lock", "--stack", "demo").code == 0
    r = run_cli("--root", project, "lock", "--stack", "prod")
    assert r.code == 3  # the H100 host is demo's now: prod's 8-GPU replica does not fit
    assert "taken by stack demo" in r.out
    _, demo = _plan(project, "demo")
    _, prod = _plan(project, "prod")
    _assert_no_overcommit(demo, prod)


def test_container_names_and_labels_carry_the_stack(project):
    assert run_cli("--root", project, "lock", "--stack", "prod").code == 0
    prod = run_program(project, stack="prod")
    demo = run_program(project, stack="demo", config={"allowUnplaced": "true", "allowStaleLock": "true"})
    prod_names, demo_names = set(prod.containers), set(demo.containers)
    assert prod_names and demo_names and not prod_names & demo_names
    assert all(n.startswith("gpufleet-prod-") for n in prod_names)
    assert all(n.startswith("gpufleet-demo-") for n in demo_names)
    labels = {lbl["label"]: lbl["value"] for lbl in next(iter(prod.containers.values())).inputs["labels"]}
    assert labels["gpufleet.stack"] == "prod"


def test_a_broken_lock_of_another_stack_stops_the_plan(project):
    (project / "stack" / "prod.lock.yaml").write_text("version: 1\nstack: prod\nreplicas: [\n")
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert r.code == 2 and "stack/prod.lock.yaml:" in r.err
