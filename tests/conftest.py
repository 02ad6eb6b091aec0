"""Shared fixtures: the project root, GPUStack's reference material, a CLI runner."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

# property tests draw the same examples on every run (seeded from each test), so a change passes or fails on its own
# merits, never on the draw: a random draw once failed a test that every run before had passed (the re-pack's, in
# tests/test_placement_repack.py). HYPOTHESIS_PROFILE=explore draws new examples each run, to look for such cases.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

ROOT = Path(__file__).resolve().parent.parent
#: GPUStack's community catalog and community specs, copied into the repository (see its NOTICE)
REFERENCE = ROOT / "tests" / "data" / "gpustack"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> CliResult:
    """Run ``gpufleet`` in-process and capture what it prints."""
    from cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def reference() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def catalog():
    from backends.catalog import load_catalog

    return load_catalog([ROOT / "backends"], ROOT)


@pytest.fixture(scope="session")
def fleet_host():
    """One test host: a real sshd and a real dockerd on a loopback address (tests/fleet_host.py)."""
    from .fleet_host import FleetHostProcess, missing_tools

    required = os.environ.get("GPUFLEET_REQUIRE_FLEET") == "1"  # .ci/run sets it: CI must not skip these
    reason = None
    if os.geteuid() != 0:
        reason = "fleet tests start sshd and dockerd and need root"
    elif missing_tools():
        reason = (f"fleet tests need {', '.join(missing_tools())}: apt-get install docker.io openssh-server "
                  "busybox-static (.ci/run does)")
    if reason:
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    proc = FleetHostProcess()
    started: list = []
    try:
        try:
            started.append(proc.start())
        except Exception as first:  # noqa: BLE001 - a daemon slow to start on a loaded machine: once more
            proc.stop()
            proc = FleetHostProcess()
            try:
                started.append(proc.start())
            except Exception as second:
                raise second from first
        yield started[0]
    finally:
        for host in started:  # close the shared SSH connections the tests opened (ControlPersist)
            for sock in Path.home().joinpath(".ssh").glob("gf-*"):
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "-l", "root", host.address],
                               capture_output=True, timeout=30)
        proc.stop()


def copy_project(dest: Path, *, program: bool = False, lock: bool = True) -> Path:
    """A copy of this project's files to edit in a test: backends, inventory, stack (and the Pulumi program)."""
    import shutil

    names = ("backends", "inventory", "stack") + (("components",) if program else ())
    for name in names:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Pulumi.yaml", "Pulumi.demo.yaml"):
        shutil.copy(ROOT / name, dest)
    if not lock:
        (dest / "stack" / "demo.lock.yaml").unlink()
    return dest


def no_ruin_and_recreate(run, least_vram=None, least_gpus=None) -> bool:
    """``engine.ruin_and_recreate`` switched off: the plan stays as the steps before it leave it."""
    return False


@contextlib.contextmanager
def exact_search_off():
    """Placement without the exact search of small plans (stack.placement.exact), the runs in other orders after it
    (``engine.OTHER_RUNS``) and the ruin and recreate after them (stack.placement.recreate) inside the block: what
    the heuristic steps alone place, in one order."""
    import stack.placement.engine as engine

    saved, others, shake = engine.place_more, engine.OTHER_RUNS, engine.ruin_and_recreate
    engine.place_more, engine.OTHER_RUNS = (lambda run, by_key, least_vram=None: False), ()
    engine.ruin_and_recreate = no_ruin_and_recreate
    try:
        yield
    finally:
        engine.place_more, engine.OTHER_RUNS, engine.ruin_and_recreate = saved, others, shake


@pytest.fixture
def heuristics_only():
    """``exact_search_off`` for a whole test, for tests that show what one heuristic step does: on fleets this
    small the search would also place what the step is there to place."""
    with exact_search_off():
        yield
