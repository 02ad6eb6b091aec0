"""The lock is checked, never guessed: lock --check as a CI gate, missing and foreign locks, partial plans."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import copy_project, run_cli
from .test_plan_cli import edit


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


def test_check_passes_on_a_fresh_lock_and_fails_with_the_difference_on_a_stale_one(project):
    ok = run_cli("--root", project, "lock", "--check", "--stack", "demo")
    assert ok.code == 0 and ok.out.startswith("ok: stack/demo.lock.yaml is what placement writes"), ok.err
    edit(project / "stack" / "demo.yaml", "    replicas: 2\n    resources: {gpus: 1, vram: whole}",
         "    replicas: 3\n    resources: {gpus: 1, vram: whole}")
    before = (project / "stack" / "demo.lock.yaml").read_text()
    stale = run_cli("--root", project, "lock", "--check", "--stack", "demo")
    assert stale.code == 4
    assert '+  "qwen3-8b/2"' in stale.out and "--- stack/demo.lock.yaml (committed)" in stale.out
    assert "is stale: run `gpufleet lock --stack demo`" in stale.err
    assert (project / "stack" / "demo.lock.yaml").read_text() == before  # --check writes nothing


def test_check_right_after_a_change_with_reservations_passes(project):
    edit(project / "stack" / "demo.yaml", "    replicas: 2\n    resources: {gpus: 1, vram: 12GiB",
         "    replicas: 1\n    resources: {gpus: 1, vram: 12GiB")
    assert run_cli("--root", project, "lock", "--stack", "demo").code == 0
    assert "reserved:" in (project / "stack" / "demo.lock.yaml").read_text()
    assert run_cli("--root", project, "lock", "--check", "--stack", "demo").code == 0


def test_a_missing_or_foreign_lock_is_an_error(project):
    nope = project / "stack" / "nope.lock.yaml"
    missing = run_cli("--root", project, "lock", "--check", "--stack", "demo", "--lock", nope)
    assert missing.code == 2 and "stack/nope.lock.yaml: lock file not found" in missing.err
    plan = run_cli("--root", project, "plan", "--stack", "demo", "--lock", nope)
    assert plan.code == 2 and "lock file not found" in plan.err
    foreign = project / "stack" / "prod.lock.yaml"
    foreign.write_text((project / "stack" / "demo.lock.yaml").read_text().replace('stack: "demo"', 'stack: "prod"'))
    wrong = run_cli("--root", project, "plan", "--stack", "demo", "--lock", foreign)
    assert wrong.code == 2 and "written for stack 'prod', not 'demo'" in wrong.err


def test_lock_writes_nothing_when_the_plan_is_incomplete_unless_asked(project):
    edit(project / "stack" / "demo.yaml", "    replicas: 2\n    resources: {gpus: 1, vram: whole}",
         "    replicas: 40\n    resources: {gpus: 1, vram: whole}")
    before = (project / "stack" / "demo.lock.yaml").read_text()
    r = run_cli("--root", project, "lock", "--stack", "demo")
    assert r.code == 3 and "nothing written" in r.err
    assert (project / "stack" / "demo.lock.yaml").read_text() == before
    r = run_cli("--root", project, "lock", "--stack", "demo", "--allow-unplaced")
    assert r.code == 3 and r.out.splitlines()[-1].startswith("wrote: stack/demo.lock.yaml")


def test_a_lock_of_another_inventory_is_an_error(project):
    lock = project / "stack" / "demo.lock.yaml"
    lock.write_text(lock.read_text().replace('"host": "', '"host": "other-'))
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert r.code == 2 and "belongs to another inventory" in r.err and "stack/demo.lock.yaml" in r.err
    fresh = run_cli("--root", project, "lock", "--stack", "demo", "--no-lock")
    assert fresh.code == 0 and '"host": "other-' not in (project / "stack" / "demo.lock.yaml").read_text()
