"""``gpufleet probe --inventory F``: check every host of an inventory against what it really has."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from inventory.fleet import load_fleet
from stack.project import display, find_root

EXIT_FLEET = 5


def register(sub) -> None:
    p = sub.add_parser("probe", help="check the inventory's hosts over SSH: reachable, Docker, accelerators",
                       description="Connect to every host (the inventory's known_hosts and key, all at once, "
                                   "each within --timeout), read OS, CPUs, memory, Docker and its runtimes, and "
                                   "the accelerators (nvidia-smi, amd-smi or rocm-smi, npu-smi, ixsmi), and compare with the "
                                   "inventory. Exit 0 when every host matches, 5 when one does not or cannot be "
                                   "reached.")
    p.add_argument("--inventory", type=Path, required=True, metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--timeout", type=float, default=10, help="connect timeout per host, seconds (default 10)")
    p.set_defaults(run=cmd_probe)


def cmd_probe(args) -> int:
    from inventory.probe import probe_fleet  # paramiko: imported by the commands that use SSH

    root = args.root or find_root()
    fleet = load_fleet(args.inventory, display(args.inventory, root))
    timeout = max(1.0, min(args.timeout, 10.0))
    tty = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int, report) -> None:
        if tty:
            print(f"\rprobing {done}/{total} hosts", end="", file=sys.stderr, flush=True)

    reports = probe_fleet(fleet, timeout=timeout, progress=progress)
    if tty:
        print(file=sys.stderr)
    bad = [r for r in reports if r.status != "ok"]
    if args.json:
        print(json.dumps({"inventory": fleet.file, "hosts": [r.as_dict() for r in reports],
                          "summary": {s: sum(r.status == s for r in reports)
                                      for s in ("ok", "mismatch", "unreachable")}}, indent=2))
    else:
        for r in reports:
            what = f"{len(r.accelerators)} accelerators, docker {r.docker or '-'}" if r.status != "unreachable" else ""
            print(f"{r.host:<24} {r.status:<12} {what}")
            for problem in r.problems:
                print(f"  {problem}")
            for note in r.notes:
                print(f"  note: {note}")
        print(f"{len(reports) - len(bad)} ok, {sum(r.status == 'mismatch' for r in reports)} mismatch, "
              f"{sum(r.status == 'unreachable' for r in reports)} unreachable")
    return EXIT_FLEET if bad else 0
