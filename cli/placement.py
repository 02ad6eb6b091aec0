"""``gpufleet plan`` and ``gpufleet lock``: placement from the command line."""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

from documents.problems import InputError, Problem
from documents.yaml_reader import path_kind, read_text
from stack.lock import lock_path, render_lock, write_lock
from stack.plan import plan_placement
from stack.project import display, find_root, load_project

from .markdown import placement_markdown
from .report import placement_json, placement_text

EXIT_OK, EXIT_UNPLACED, EXIT_STALE = 0, 3, 4


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
    p.add_argument("--format", choices=("table", "json", "markdown"), default=None,
                   help="table (default), json (= --json), or markdown for a pull-request comment")
    p.set_defaults(run=cmd_plan)

    lk = sub.add_parser("lock", help="write stack/<stack>.lock.yaml from a fresh plan",
                        description="Plan the stack (keeping what the current lock places, where it still fits) "
                                    "and write the result to the lock file. Commit the lock with the change "
                                    "that caused it.")
    _stack_args(lk)
    lk.add_argument("--lock", type=Path, default=None, metavar="FILE",
                    help="lock file to read and write (default: stack/<stack>.lock.yaml)")
    lk.add_argument("--check", action="store_true",
                    help="write nothing; exit 4 and print the difference when the lock is not what placement "
                         "would write (a CI gate)")
    lk.add_argument("--no-lock", action="store_true", help="ignore the current lock: place everything fresh")
    lk.add_argument("--allow-unplaced", action="store_true",
                    help="write the lock even when some replica cannot be placed (default: write nothing, exit 3)")
    lk.set_defaults(run=cmd_lock)


def _stack_args(p) -> None:
    p.add_argument("--stack", required=True, metavar="S",
                   help="stack name (stack/S.yaml) or a path to a stack file")
    p.add_argument("--inventory", type=Path, default=None, metavar="FILE",
                   help="inventory to place onto (default: the one the stack file names)")
    p.add_argument("--strategy", choices=("binpack", "spread"), default=None,
                   help="override the stack file's strategy")


def compute(args, must_exist: bool = False):
    """Load and place. An explicit --lock must exist when it is read as the prior (plan, lock --check)."""
    root = args.root or find_root()
    project = load_project(args.stack, root, args.inventory)
    path = args.lock or lock_path(project.stack_file)
    use_lock = not getattr(args, "no_lock", False)
    if use_lock and (args.lock is not None and must_exist or getattr(args, "check", False)) \
            and path_kind(path) != "file":
        raise InputError([Problem(display(path, root), 0, 0, "", "lock file not found; give an existing --lock, "
                                  "or run `gpufleet lock` first (--no-lock plans without one)")])
    _, placement = plan_placement(project, path, args.strategy, use_lock=use_lock)
    return project, placement, path


def cmd_plan(args) -> int:
    project, placement, _ = compute(args, must_exist=True)
    from .main import print_notes

    print_notes(project.notes)
    fmt = args.format or ("json" if args.json else "table")
    if fmt == "json":
        # indented for a person at a terminal; one line for a pipe (json's C encoder: a 9,000-replica
        # plan is written in 0.05 s instead of 0.5 s). Freshly built lists and dicts hold no cycle: the
        # encoder's check for one, an id recorded per container, was 8 % of its time
        print(json.dumps({**placement_json(project.name, project.fleet, placement),
                          "resource_fit": project.fits()}, indent=2 if sys.stdout.isatty() else None,
                         check_circular=False))
    elif fmt == "markdown":
        lock = display(args.lock or lock_path(project.stack_file), project.root)
        print(placement_markdown(project.name, project.fleet, placement, lock), end="")
    else:
        print(placement_text(project.name, project.fleet, placement, project.fleet.file))
    return EXIT_UNPLACED if placement.unplaced else EXIT_OK


def _replica_lines(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if line.startswith("reserved:") or line.startswith("# reserved:"):
            break
        lines.append(line)
    return lines


def cmd_lock(args) -> int:
    project, placement, path = compute(args)
    shown = display(path, project.root)
    if args.check:
        # the replicas must be what placement writes; `reserved` belongs to the change that wrote it
        wanted = _replica_lines(render_lock(project.name, placement))
        have = _replica_lines(read_text(path, shown))
        if have == wanted:
            print(f"ok: {shown} is what placement writes ({len(placement.assignments)} replicas)")
            return EXIT_UNPLACED if placement.unplaced else EXIT_OK
        diff = difflib.unified_diff(have, wanted, f"{shown} (committed)",
                                    f"{shown} (placement)", lineterm="")
        print("\n".join(diff))
        print(f"{shown} is stale: run `gpufleet lock --stack {args.stack}` and commit the result", file=sys.stderr)
        return EXIT_STALE
    for u in placement.unplaced:
        print(u.message)
    if placement.unplaced and not args.allow_unplaced:
        print(f"nothing written: {len(placement.unplaced)} replica(s) cannot be placed (--allow-unplaced writes "
              "the lock anyway)", file=sys.stderr)
        return EXIT_UNPLACED
    changed = write_lock(path, project.name, placement, shown)
    print(f"{'wrote' if changed else 'unchanged'}: {shown} ({len(placement.assignments)} replicas)")
    return EXIT_UNPLACED if placement.unplaced else EXIT_OK
