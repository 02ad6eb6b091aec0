"""Instructions executed, counted by valgrind's cachegrind: the same on every run of the same code, where wall
time on a shared machine drifts by a third within a day. On the CPU-and-memory bench project
(bench/placement.py's ``write_bench_project``): starting Python and loading the files, then placing once, and
the whole ``gpufleet plan --json --no-lock`` command as a user runs it (imports, files, placement, explanations,
the JSON written). Prints one JSON object.

    apt-get install valgrind
    .venv/bin/python bench/instructions.py --hosts 2000
    .venv/bin/python bench/instructions.py --hosts 2000 --against /tmp/older   # another checkout, same files

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

from bench.placement import bytecode_env, write_bench_project  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20261121)
    ap.add_argument("--against", type=Path, action="append", default=[], metavar="CHECKOUT",
                    help="also count another checkout's code on the same files (repeatable)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench/instructions.py needs valgrind: apt-get install valgrind")
    checkouts = [ROOT, *(p.resolve() for p in args.against)]
    project = Path(tempfile.mkdtemp(prefix="gf-instructions-"))
    try:
        write_bench_project(args.hosts, args.seed, project)
        for c in checkouts:  # not counted: writes the bytecode the counted runs read
            subprocess.run([sys.executable, "-c", _RUN, str(c), str(project), "0"], cwd=c, env=_ENV, check=True,
                           capture_output=True)
            subprocess.run([sys.executable, "-c", _PLAN, str(c), str(project)], cwd=c, env=_ENV, capture_output=True)
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            jobs = {(c, k): pool.submit(count, c, project, k) for c in checkouts for k in (0, 1, None)}
            got = {key: job.result() for key, job in jobs.items()}
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
