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


def _locked(project: Path, stack: str, hosts: list) -> dict:
    """A stack's lock as ``_assert_no_overcommit`` reads a plan (replicas, and the hosts of a plan)."""
    from stack.lock import read_lock

    lock = read_lock(project / "stack" / f"{stack}.lock.yaml")
    return {"hosts": hosts, "replicas": [
        {"host": lr.host, "vendor": lr.vendor, "gpus": list(lr.gpus), "port": lr.port, "whole": lr.claim.vram_mib is None,
         "vram_per_gpu_mib": lr.claim.vram_mib} for lr in lock.values()]}


def test_two_locks_written_apart_never_keep_a_replica_on_what_the_other_holds(project):
    """Two pull requests lock two stacks, each before the other's lock was merged: both locks claim the H100 host.
    The next plan of either stack treats the other's lock as taken, its own replicas there included: they move (or
    are left over, saying which stack holds their place), never kept on GPUs or ports the other lock holds."""
    assert run_cli("--root", project, "lock", "--stack", "demo").code == 0
    demo_lock = project / "stack" / "demo.lock.yaml"
    aside = demo_lock.read_text()
    demo_lock.unlink()
    assert run_cli("--root", project, "lock", "--stack", "prod").code == 0
    demo_lock.write_text(aside)  # both merged: each lock was written without the other
    code, demo = _plan(project, "demo")
    prod_locked = _locked(project, "prod", demo["hosts"])
    demo_locked = _locked(project, "demo", demo["hosts"])
    both = {(r["host"], r["vendor"], g) for r in demo_locked["replicas"] for g in r["gpus"]} & \
        {(r["host"], r["vendor"], g) for r in prod_locked["replicas"] for g in r["gpus"]}
    assert ("nv-h100-1", "nvidia", 0) in both  # the race: demo's llama-70b and prod's big on the same GPUs
    _assert_no_overcommit(demo, prod_locked)
    (llama,) = [u for u in demo["unplaced"] if u["deployment"] == "llama-70b"]
    assert code == 3 and "taken by stack prod" in llama["message"]
    assert {r["status"] for r in demo["replicas"]} <= {"kept", "moved", "new"}
    # and the other way round: prod's plan keeps nothing on what demo's lock holds
    _, prod = _plan(project, "prod")
    _assert_no_overcommit(prod, demo_locked)


def test_another_stacks_replica_resized_in_place_holds_its_new_claim_and_what_its_old_one_held_beyond(project):
    """A lock's ``reserved`` lists the old claim of a replica it keeps where it is with a smaller one (its container
    is replaced by the next up, and others on its GPU may start first): a stack beside it holds the replica's new
    claim and the difference, not both claims whole."""
    from stack.plan import other_stacks_held
    from stack.project import load_project

    def entry(vram_mib: int, cpus: int, port: int) -> str:
        return json.dumps({"host": "nv-h100-1", "vendor": "nvidia", "gpus": [3], "port": port,
                           "claim": {"framework": "cuda", "gpus": 1, "vram_mib": vram_mib, "cpus": cpus}})

    (project / "stack" / "prod.lock.yaml").write_text(
        'version: 1\nstack: "prod"\nreplicas:\n'
        f'  "small/0": {entry(10240, 2, 40001)}\n'
        'reserved:\n'
        f'  "small/0": {entry(24576, 6, 40001)}\n'  # (the same replica, as it was)
        f'  "small/1": {entry(20480, 4, 40002)}\n')  # (one that left: held whole)
    held = other_stacks_held(load_project("demo", project))["prod"]
    got = [(lr.key, lr.gpus, lr.port, lr.claim.vram_mib, lr.claim.cpus) for lr in held]
    assert got == [("small/0", (3,), 40001, 10240, 2), ("small/0", (3,), 40001, 14336, 4),
                   ("small/1", (3,), 40002, 20480, 4)]
