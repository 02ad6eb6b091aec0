"""``gpufleet plan`` and ``gpufleet lock``: placement from the command line."""
from __future__ import annotations

import json
from pathlib import Path

from stack.lock import lock_path, write_lock
from stack.plan import plan_placement
from stack.project import display, find_root, load_project

from .report import placement_json, placement_text

EXIT_OK, EXIT_UNPLACED = 0, 3


def register(sub) -> None:
    p = sub.add_parser("plan", help="place every replica onto hosts and GPUs and show the result",
                       description="Run the placement pass for a stack: which replica lands on which host, GPUs "
                                   "and port, and what moved since the lock. Exit 0 when everything is placed, "
                                   "3 when something is not, 2 on invalid input.")
    _stack_args(p)
    p.add_argument("--lock", type=Path, default=None, metavar="FILE",
                   help="prior placement to keep (default: stack/<stack>.lock.yaml when it exists)")
    p.add_argument("--no-lock", action="store_true", help="ignore any lock: place everything fresh")
    p.add_argument("--json", action="store_true", help="print one JSON object (schema in the README)")
    p.set_defaults(run=cmd_plan)

    lk = sub.add_parser("lock", help="write stack/<stack>.lock.yaml from a fresh plan",
                        description="Plan the stack (keeping what the current lock places, where it still fits) "
                                    "and write the result to the lock file. Commit the lock with the change "
                                    "that caused it.")
    _stack_args(lk)
    lk.add_argument("--lock", type=Path, default=None, metavar="FILE",
                    help="lock file to read and write (default: stack/<stack>.lock.yaml)")
    lk.set_defaults(run=cmd_lock)


def _stack_args(p) -> None:
    p.add_argument("--stack", required=True, metavar="S",
                   help="stack name (stack/S.yaml) or a path to a stack file")
    p.add_argument("--inventory", type=Path, default=None, metavar="FILE",
                   help="inventory to place onto (default: the one the stack file names)")
    p.add_argument("--strategy", choices=("binpack", "spread"), default=None,
                   help="override the stack file's strategy")


def compute(args):
    root = args.root or find_root()
    project = load_project(args.stack, root, args.inventory)
    path = args.lock or lock_path(project.stack_file)
    _, placement = plan_placement(project, path, args.strategy, use_lock=not getattr(args, "no_lock", False))
    return project, placement, path


def cmd_plan(args) -> int:
    project, placement, _ = compute(args)
    from .main import print_notes

    print_notes(project.catalog.notes)
    if args.json:
        print(json.dumps(placement_json(project.name, project.fleet, placement), indent=2))
    else:
        print(placement_text(project.name, project.fleet, placement, project.fleet.file))
    return EXIT_UNPLACED if placement.unplaced else EXIT_OK


def cmd_lock(args) -> int:
    project, placement, path = compute(args)
    shown = display(path, project.root)
    changed = write_lock(path, project.name, placement, shown)
    print(f"{'wrote' if changed else 'unchanged'}: {shown} ({len(placement.assignments)} replicas)")
    for u in placement.unplaced:
        print(u.message)
    return EXIT_UNPLACED if placement.unplaced else EXIT_OK
