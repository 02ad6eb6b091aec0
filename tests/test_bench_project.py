"""The files the process and instruction benches write (bench/placement.py's write_bench_project) are a
project gpufleet accepts as a user's, describing the generator's fleet and workload: the same hosts with the
same devices, CPUs and memory, the same replicas with the same asks (every fifth deployment also selects a
zone, so the files exercise label selectors), cards and frameworks of three vendors, and `gpufleet plan`
plans or explains every replica."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bench.placement import bench_workload, growth_exponent, host_counts, write_bench_project
from stack.demands import demands_for
from stack.project import load_project

from .conftest import run_cli


def _host(h) -> tuple:
    return (h.name, h.address, h.label_map, h.cpus, h.ram_mib, h.reserved_cpus, h.reserved_ram_mib,
            h.port_start, h.port_end, [(g.vendor, g.model, g.vram_mib, len(g.devices)) for g in h.groups])


def _ask(d) -> tuple:
    return (d.deployment, d.framework, d.gpus, d.vram_mib, d.cpus, d.ram_mib)


def test_the_bench_project_is_the_generated_fleet_and_workload(tmp_path):
    write_bench_project(40, 7, tmp_path)
    fleet, demands = bench_workload(40, 7)
    project = load_project("bench", tmp_path)
    assert [_host(h) for h in project.fleet.hosts] == [_host(h) for h in fleet.hosts]
    loaded = demands_for(project.workloads)
    assert Counter(map(_ask, loaded)) == Counter(map(_ask, demands))
    assert sum(1 for d in loaded if d.labels) > 0
    assert {g.vendor for h in project.fleet.hosts for g in h.groups} == {"nvidia", "amd", "ascend"}
    assert {d.framework for d in loaded} == {"cuda", "rocm", "cann", "cpu"}

    result = run_cli("--root", tmp_path, "plan", "--stack", "bench", "--json", "--no-lock")
    assert result.code in (0, 3), result.err
    summary = json.loads(result.out)["summary"]
    assert summary["replicas"] == summary["placed"] + summary["unplaced"] == len(demands)


def test_the_bench_project_is_written_at_the_load_asked(tmp_path):
    # bench/placement.py --process N --load L: a fleet nearly full (0.9) is not the overloaded default (1.0)
    write_bench_project(40, 7, tmp_path, load=0.8)
    fleet, demands = bench_workload(40, 7, load=0.8)
    loaded = demands_for(load_project("bench", tmp_path).workloads)
    assert Counter(map(_ask, loaded)) == Counter(map(_ask, demands))
    full = bench_workload(40, 7)[1]
    assert len(demands) < len(full)
    gpus = sum(len(g.devices) for h in fleet.hosts for g in h.groups)
    asked = sum(d.gpus if d.whole else d.vram_mib / (80 * 1024) for d in demands if d.gpus)
    assert 0.8 * gpus <= asked < 0.8 * gpus + 32  # it stops after the deployment that passes it (4 × 8 GPUs)


def test_growth_is_fitted_on_the_logs_and_sizes_are_read_or_refused():
    # bench/placement.py --process N,N,... and bench/instructions.py --growth report this exponent
    sizes = [1000, 2000, 3000, 4000, 6000, 8000]
    assert growth_exponent(sizes, [3 * n for n in sizes]) == pytest.approx(1.0)
    assert growth_exponent(sizes, [n * n + 0.0 for n in sizes]) == pytest.approx(2.0)
    assert growth_exponent(sizes, [5.0 for _ in sizes]) == pytest.approx(0.0)
    assert host_counts("4000, 1000,2000,1000", "--growth") == [1000, 2000, 4000]
    for bad in ("", "abc", "1000,x", "0,1000", "-5"):
        with pytest.raises(SystemExit, match="--growth takes host counts separated by commas"):
            host_counts(bad, "--growth")


def test_the_steps_bench_times_each_step_of_both_checkouts_on_the_same_plan(tmp_path, monkeypatch, capsys):
    """bench/steps.py, alternating this checkout with itself on a small project: each step of each run is
    timed once (the steps nest, and only the outermost counts), so together they take no longer than the whole
    placement, and both checkouts make the same plan."""
    import bench.steps as steps

    root = Path(steps.__file__).resolve().parent.parent
    monkeypatch.setattr("sys.argv", ["steps.py", "--hosts", "20", "--runs", "2", "--against", str(root)])
    steps.main()
    out = json.loads(capsys.readouterr().out)
    for name in ("this", "against"):
        got = out[name]
        assert got["placed"] > 0
        assert set(got["seconds"]) >= {"fresh", "give_way", "finish", "place"}
        for run in range(2):
            parts = sum(times[run] for step, times in got["seconds"].items() if step != "place")
            # each figure is rounded to a millisecond: half of one off at most, for each step and the whole
            assert 0 < parts <= got["seconds"]["place"][run] + 0.0005 * len(got["seconds"])
    assert out["same_plan_counts"] is True
    assert set(out["this_faster_in_pairs"].values()) <= {0, 1, 2}


def test_the_steps_bench_refuses_a_folder_that_is_no_checkout(tmp_path, monkeypatch):
    import bench.steps as steps

    monkeypatch.setattr("sys.argv", ["steps.py", "--against", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        steps.main()
    assert "not a gpufleet checkout" in str(stopped.value) and "git worktree add" in str(stopped.value)
