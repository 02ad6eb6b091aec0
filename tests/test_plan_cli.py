"""gpufleet plan / lock on real files: exit codes, JSON, the lock file and its errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("backends", "inventory", "stack"):
        shutil.copytree(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path)
    for lock in (tmp_path / "stack").glob("*.lock.yaml"):
        lock.unlink()
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_plan_demo_places_everything(project):
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert r.code == 0, r.err
    assert "9 placed (0 kept, 9 new, 0 moved), 0 removed, 0 unplaced" in r.out
    assert "llama-70b       0        nv-h100-1      0,1,2,3" in r.out


def test_plan_json_schema(project):
    r = run_cli("--root", project, "plan", "--stack", "demo", "--json")
    data = json.loads(r.out)
    assert set(data) == {"stack", "strategy", "summary", "replicas", "unplaced", "removed", "hosts", "resource_fit"}
    rep = data["replicas"][0]
    assert set(rep) == {"deployment", "replica", "host", "address", "vendor", "gpus", "uuids", "vram_per_gpu_mib",
                        "whole", "port", "status", "reason", "previous_host"}
    assert {h["host"] for h in data["hosts"]} == {"nv-h100-1", "nv-a100-1", "nv-l40s-1", "amd-mi300x-1",
                                                  "ascend-910b-1", "cpu-1"}
    vendors = {r["vendor"] for r in data["replicas"]}
    assert vendors == {"nvidia", "amd", "ascend", None}


def test_unplaced_exits_3_with_explanation(project):
    edit(project / "stack" / "demo.yaml", "resources: {gpus: 2, vram: whole}\n    selectors: {vendor: amd}",
         "resources: {gpus: 9, vram: whole}\n    selectors: {vendor: amd}")
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert r.code == 3
    assert ("qwen3-32b-rocm/0: no single host can ever hold 9 × whole rocm: the most rocm devices on one host "
            "is 8;") in r.out
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (u,) = data["unplaced"]
    assert u["rejected"] == {"framework": 5, "device_count": 1} and u["never_fits"]


def test_lock_is_written_kept_and_byte_identical(project):
    r = run_cli("--root", project, "lock", "--stack", "demo")
    assert r.code == 0 and r.out.startswith("wrote: stack/demo.lock.yaml (9 replicas)")
    lock = (project / "stack" / "demo.lock.yaml").read_text()
    assert "secret" not in lock and "HF_TOKEN" not in lock
    r = run_cli("--root", project, "lock", "--stack", "demo")
    assert r.out.startswith("unchanged:")
    assert (project / "stack" / "demo.lock.yaml").read_text() == lock
    plan = run_cli("--root", project, "plan", "--stack", "demo")
    assert "9 placed (9 kept, 0 new, 0 moved)" in plan.out
    # host order and deployment order in the files do not matter
    inv = project / "inventory" / "demo.yaml"
    head, _, hosts = inv.read_text().partition("hosts:\n")
    blocks = ["  - name:" + b for b in hosts.split("  - name:")[1:]]
    inv.write_text(head + "hosts:\n" + "".join(reversed(blocks)))
    (project / "stack" / "demo.lock.yaml").unlink()
    run_cli("--root", project, "lock", "--stack", "demo")
    assert (project / "stack" / "demo.lock.yaml").read_text() == lock


def test_cordon_moves_only_that_hosts_replicas(project):
    run_cli("--root", project, "lock", "--stack", "demo")
    edit(project / "inventory" / "demo.yaml", "    address: 127.0.10.3\n    labels: {zone: b}\n",
         "    address: 127.0.10.3\n    labels: {zone: b}\n    state: cordoned\n")
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    for r in data["replicas"]:
        if r["status"] == "moved":
            assert (r["reason"], r["previous_host"]) == ("host_cordoned", "nv-l40s-1")
        else:
            assert r["status"] == "kept"
    assert data["summary"]["moved"] == 2


def test_no_lock_and_explicit_lock_and_strategy(project):
    run_cli("--root", project, "lock", "--stack", "demo")
    r = run_cli("--root", project, "plan", "--stack", "demo", "--no-lock", "--strategy", "spread", "--json")
    data = json.loads(r.out)
    assert data["strategy"] == "spread" and data["summary"]["kept"] == 0


def test_broken_lock_is_an_input_error(project):
    (project / "stack" / "demo.lock.yaml").write_text("version: 1\nstack: demo\nreplicas:\n  a/0: {host: x, port: 0,"
                                                      " claim: {framework: cuda, gpus: 1, vram_mib: whole}}\n")
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert r.code == 2
    assert "stack/demo.lock.yaml:4:24: replicas.a/0.port: must be 1 or more, got the number 0" in r.err


def test_unknown_stack_lists_known_ones(project):
    r = run_cli("--root", project, "plan", "--stack", "prod")
    assert r.code == 2 and "no stack file for stack 'prod'; stacks here: demo" in r.err
