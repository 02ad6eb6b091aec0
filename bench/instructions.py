"""Instructions executed, counted by valgrind's cachegrind: the same on every run of the same code, where wall
time on a shared machine drifts by a third within a day. On the CPU-and-memory bench project
(bench/placement.py's ``write_bench_project``): starting Python and loading the files, then placing once, and
the whole ``gpufleet plan --json --no-lock`` command as a user runs it (imports, files, placement, explanations,
the JSON written). Prints one JSON object.

    apt-get install valgrind
    .venv/bin/python bench/instructions.py --hosts 2000
    .venv/bin/python bench/instructions.py --hosts 2000 --against /tmp/older   # another checkout, same files
    .venv/bin/python bench/instructions.py --growth 1000,2000,3000,4000,6000,8000   # how each grows with the fleet

``--growth``: the same counts at each size (the same generator and seed, 4.5-4.8 replicas a host, 121 % of
the GPUs asked), the replicas left over at each, each count per host, the ratio of each step to the step in
hosts, and the exponent of a least-squares fit of log(instructions) on log(hosts) (1.0: linear). The
placement's later steps work on what the fresh pass leaves over, which varies from one fleet to the next, so
single steps scatter around the fit (about 12 minutes for those six sizes).

About 20x slower than a plain run (2,000 hosts: a minute or two on 2 cores). Instructions are not time (cache
misses and branch mispredictions count for nothing here), but a change that executes fewer of them for the
same plan is faster wherever it runs.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.placement import bytecode_env, growth_exponent, host_counts, write_bench_project  # noqa: E402

#: run in the checkout measured: load the project, place ``times`` times
_RUN = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from stack.demands import demands_for
from stack.placement import place
from stack.project import load_project
project = load_project("bench", Path(sys.argv[2]))
demands = demands_for(project.workloads)
for _ in range(int(sys.argv[3])):
    place(project.fleet, demands)
"""

#: the whole command, run by the checkout's own ``cli.main`` (its output is not kept)
_PLAN = """
import sys
sys.path.insert(0, sys.argv[1])
sys.argv = ["gpufleet", "--root", sys.argv[2], "plan", "--stack", "bench", "--json", "--no-lock"]
from cli.main import run
run()
"""

#: as a user runs it, bytecode cached (a counted run would otherwise compile whatever changed since the last write)
_ENV = {**bytecode_env(), "PYTHONHASHSEED": "0"}


def count(checkout: Path, project: Path, times: int | None) -> int:
    """Instructions of one process: load ``project`` with the code of ``checkout``, place ``times`` times (None:
    the whole ``gpufleet plan`` command instead)."""
    script = [_RUN, str(checkout), str(project), str(times)] if times is not None else \
        [_PLAN, str(checkout), str(project)]
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          sys.executable, "-c", *script],
                         cwd=checkout, capture_output=True, text=True, env=_ENV)
    if out.returncode not in (0, 3):  # (3: the plan leaves replicas over, as the bench's does)
        raise SystemExit(f"valgrind run failed in {checkout}:\n{out.stderr[-2000:]}")
    line = next(x for x in out.stderr.splitlines() if "I   refs:" in x or "I    refs:" in x)
    return int(line.split()[-1].replace(",", ""))


def count_all(checkouts: list[Path], project: Path) -> dict[tuple[Path, int | None], int]:
    """``count`` of each checkout on ``project``: (checkout, 0) starting and loading, (checkout, 1) that and one
    placement, (checkout, None) the whole command; as many at a time as there are cores."""
    for c in checkouts:  # not counted: writes the bytecode the counted runs read
        subprocess.run([sys.executable, "-c", _RUN, str(c), str(project), "0"], cwd=c, env=_ENV, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "-c", _PLAN, str(c), str(project)], cwd=c, env=_ENV, capture_output=True)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        jobs = {(c, k): pool.submit(count, c, project, k) for c in checkouts for k in (0, 1, None)}
        return {key: job.result() for key, job in jobs.items()}


#: the replicas one placement leaves over (not counted: the work after the fresh pass depends on them)
_LEFT_OVER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from stack.demands import demands_for
from stack.placement import place
from stack.project import load_project
project = load_project("bench", Path(sys.argv[2]))
demands = demands_for(project.workloads)
print(len(demands), len(place(project.fleet, demands).unplaced))
"""


def growth(sizes: list[int], seed: int) -> dict:
    """``--growth``: this checkout's counts at each size, per host, step by step, and fitted."""
    rows = []
    for n in sizes:
        project = Path(tempfile.mkdtemp(prefix="gf-instructions-"))
        try:
            write_bench_project(n, seed, project)
            out = subprocess.run([sys.executable, "-c", _LEFT_OVER, str(ROOT), str(project)], cwd=ROOT, env=_ENV,
                                 check=True, capture_output=True, text=True)
            replicas, left_over = map(int, out.stdout.split())
            got = count_all([ROOT], project)
        finally:
            shutil.rmtree(project, ignore_errors=True)
        rows.append({"hosts": n, "replicas": replicas, "left_over": left_over,
                     "start_and_load_instructions": got[ROOT, 0], "placement_instructions": got[ROOT, 1] - got[ROOT, 0],
                     "plan_command_instructions": got[ROOT, None]})
        print(f"{n} hosts counted", file=sys.stderr, flush=True)
    kinds = ("start_and_load", "placement", "plan_command")
    for row in rows:
        for kind in kinds:
            row[f"{kind}_per_host"] = round(row[f"{kind}_instructions"] / row["hosts"])
    steps = [{"hosts": f"{a['hosts']} -> {b['hosts']}", "hosts_ratio": round(b["hosts"] / a["hosts"], 3),
              **{f"{kind}_ratio": round(b[f"{kind}_instructions"] / a[f"{kind}_instructions"], 3) for kind in kinds}}
             for a, b in zip(rows, rows[1:])]
    fitted = {kind: round(growth_exponent([r["hosts"] for r in rows], [r[f"{kind}_instructions"] for r in rows]), 3)
              for kind in kinds} if len(rows) > 1 else {}
    return {"seed": seed, "sizes": rows, "steps": steps, "exponent": fitted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20261121)
    ap.add_argument("--against", type=Path, action="append", default=[], metavar="CHECKOUT",
                    help="also count another checkout's code on the same files (repeatable)")
    ap.add_argument("--growth", metavar="N,N,...", help="count this checkout at each of these fleet sizes instead")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench/instructions.py needs valgrind: apt-get install valgrind")
    if args.growth is not None:
        sizes = host_counts(args.growth, "--growth")
        if args.against:
            raise SystemExit("--growth counts this checkout only; leave out --against")
        print(json.dumps(growth(sizes, args.seed), indent=2))
        return
    checkouts = [ROOT, *(p.resolve() for p in args.against)]
    project = Path(tempfile.mkdtemp(prefix="gf-instructions-"))
    try:
        write_bench_project(args.hosts, args.seed, project)
        got = count_all(checkouts, project)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    rows = [{"checkout": str(c), "start_and_load_instructions": got[c, 0],
             "placement_instructions": got[c, 1] - got[c, 0], "plan_command_instructions": got[c, None]}
            for c in checkouts]
    base = rows[0]
    for row in rows[1:]:  # how this checkout compares with each other one
        row["this_checkout_placement_change"] = round(base["placement_instructions"]
                                                      / row["placement_instructions"] - 1, 4)
        row["this_checkout_load_change"] = round(base["start_and_load_instructions"]
                                                 / row["start_and_load_instructions"] - 1, 4)
        row["this_checkout_plan_command_change"] = round(base["plan_command_instructions"]
                                                         / row["plan_command_instructions"] - 1, 4)
    print(json.dumps({"hosts": args.hosts, "seed": args.seed, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
