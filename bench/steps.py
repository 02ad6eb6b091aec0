"""Where a plan's time goes, step by step, and a change judged by alternating with another checkout. Prints one
JSON object.

The process bench's project (bench/placement.py ``write_bench_project``: three vendors, CPUs and memory, selectors,
CPU-only replicas, 121 % of the GPUs asked) is written once; each run loads it and places it once in a process of
its own, timing each step of the placement. With ``--against DIR`` (another checkout, e.g. a ``git worktree`` of
the commit before) the runs alternate between the two checkouts on the same files: this machine's speed drifts by
15-20 % within minutes, so two series timed apart compare the minutes, not the code, while each pair of runs
shares them. Instructions (bench/instructions.py) are steadier, but miss what a change does to memory traffic,
which is much of a 20,000-host plan's time.

    .venv/bin/python bench/steps.py --hosts 2000
    .venv/bin/python bench/steps.py --hosts 21000 --runs 6 --against /tmp/older

Steps, each summed over every run a plan makes (a second order's, a small plan's other runs), its time counted
once, in the outermost step timed: ``fresh`` (the fresh pass's runs of equally constrained replicas), ``repair``,
``trade`` (the trade steps before a give-way; those after it count in ``give_way``), ``give_way`` (with the retry
and trade steps after it), ``finish`` (the explanations and the plan returned), and ``place`` (``engine.place`` as
a caller times it, steps not listed and the cyclic collector's collection as it returns included).

Even pairs can mislead: six that all favoured one side were the minutes, two more series of six were not
(bench/RESULTS.md, b246bc5). Run a few series before believing a few percent.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.placement import bytecode_env, calibration, interpreter, write_bench_project  # noqa: E402

#: the engine's methods timed, under the names the output gives them
STEPS = {"place_in_two_rounds": "fresh", "repair": "repair", "trade": "trade", "give_way": "give_way",
         "finish": "finish"}

#: one run, in the checkout given: load the project, place it once with each step timed
_RUN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from stack.demands import demands_for
from stack.placement import engine
from stack.project import load_project

project = load_project("bench", Path(sys.argv[2]))
demands = demands_for(project.workloads)
spent, active = {}, []

def timed(method_name, step):
    method = getattr(engine._Run, method_name)
    def run(self, *args, **kwargs):
        if active:  # inside another step timed: its time is that step's
            return method(self, *args, **kwargs)
        active.append(step)
        t0 = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            spent[step] = spent.get(step, 0.0) + time.perf_counter() - t0
            active.pop()
    setattr(engine._Run, method_name, run)

for method_name, step in json.loads(sys.argv[3]).items():
    if hasattr(engine._Run, method_name):
        timed(method_name, step)
t0 = time.perf_counter()
placement = engine.place(project.fleet, demands)
spent["place"] = time.perf_counter() - t0
print(json.dumps({"seconds": spent, "placed": len(placement.assignments), "unplaced": len(placement.unplaced)}))
"""


def run_once(checkout: Path, project: Path) -> dict:
    got = subprocess.run([sys.executable, "-c", _RUN, str(checkout), str(project), json.dumps(STEPS)],
                         capture_output=True, text=True, env=bytecode_env())
    if got.returncode != 0:
        sys.exit(f"bench/steps.py: the run in {checkout} failed:\n{got.stderr[-2000:]}")
    return json.loads(got.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20261121)
    ap.add_argument("--load", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3, help="runs of each checkout (default 3)")
    ap.add_argument("--against", type=Path, help="another checkout: runs alternate with it, its run first")
    args = ap.parse_args()
    if args.against is not None and not (args.against / "stack" / "placement" / "engine.py").is_file():
        sys.exit(f"bench/steps.py: --against {args.against}: not a gpufleet checkout (no stack/placement/engine.py); "
                 "make one with `git worktree add DIR COMMIT`")
    checkouts = {"against": args.against.resolve(), "this": ROOT} if args.against else {"this": ROOT}
    project = Path(tempfile.mkdtemp(prefix="gf-steps-"))
    try:
        write_bench_project(args.hosts, args.seed, project, args.load)
        runs: dict[str, list[dict]] = {name: [] for name in checkouts}
        for _ in range(args.runs):
            for name, checkout in checkouts.items():
                runs[name].append(run_once(checkout, project))
    finally:
        shutil.rmtree(project, ignore_errors=True)
    out: dict = {"calibration_seconds": calibration(), "python": interpreter(), "hosts": args.hosts,
                 "seed": args.seed, "load": args.load, "runs": args.runs}
    for name, got in runs.items():
        steps = sorted({step for r in got for step in r["seconds"]})
        out[name] = {
            "checkout": str(checkouts[name]), "placed": got[-1]["placed"], "unplaced": got[-1]["unplaced"],
            "seconds_median": {s: round(statistics.median(r["seconds"].get(s, 0.0) for r in got), 3) for s in steps},
            "seconds": {s: [round(r["seconds"].get(s, 0.0), 3) for r in got] for s in steps}}
    if args.against is not None:
        mine, theirs = runs["this"], runs["against"]
        out["this_faster_in_pairs"] = {
            s: sum(m["seconds"].get(s, 0.0) < t["seconds"].get(s, 0.0) for m, t in zip(mine, theirs))
            for s in sorted(out["this"]["seconds"])}
        out["same_plan_counts"] = all((m["placed"], m["unplaced"]) == (t["placed"], t["unplaced"])
                                      for m, t in zip(mine, theirs))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
