"""``gpufleet``: validate files, show the catalog, plan placements, write the lock.

Exit status: 0 fine, 2 bad input (one ``file:line:col: field: message`` line per problem),
3 some replica could not be placed (``plan``).  Bad input never prints a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from backends.catalog import Catalog, load_catalog
from documents.problems import InputError, Problem, ProblemList
from documents.yaml_reader import path_kind, read_yaml
from inventory.fleet import load_fleet
from inventory.known_hosts import known_hosts_problems
from stack.collector import collector_paused
from stack.project import display, find_root, load_project, stack_files

from .tables import render_table

EXIT_OK, EXIT_INPUT, EXIT_UNPLACED = 0, 2, 3


def main(argv: list[str] | None = None) -> int:
    # a command builds many acyclic objects (files, plans) that reference counting frees; the cyclic
    # collector's scans only cost time (a 2,000-host plan: about 10 %). Restored for in-process callers.
    with collector_paused():
        return _main(argv)


def run() -> None:
    """The ``gpufleet`` command: ``main``, its output flushed, then the process ends without tearing its heap
    down one object at a time. A 2,000-host plan leaves about a million objects that nothing reads again;
    freeing them took 0.04 s of a 1.0 s ``gpufleet plan`` (mypy ends the same way). Nothing of gpufleet's runs
    at exit: files it writes are closed when written. An exception is not caught here: Python reports it and
    exits as usual."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `gpufleet plan | head`: the reader is gone, and so is what it did not read
        pass  # the command's own status, not Python's 120 and a message about the pipe
    os._exit(code)


def _main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_INPUT
    try:
        return args.run(args)
    except InputError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        n = len(err.problems)
        print(f"gpufleet: {n} problem{'s' if n != 1 else ''}; nothing was changed", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:  # `gpufleet plan | head`
        return EXIT_OK


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpufleet")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpufleet",
        description="Declarative inference engines on GPU servers. Backend specs (GPUStack format), a host "
                    "inventory and a stack file become a placement plan and, through Pulumi, containers on "
                    "hosts over SSH.",
        epilog="Exit status (every command): 0 ok; 2 invalid input, one file:line:col line per problem, nothing "
               "changed; 3 something could not be placed; 4 the lock is stale (lock --check); 5 a host does not "
               "match the inventory or cannot be reached (probe); 6 what runs differs from the plan (status).")
    p.add_argument("--version", action="version", version=f"gpufleet {_version()}")
    p.add_argument("--root", type=Path, default=None,
                   help="project folder (default: the nearest folder with Pulumi.yaml and backends/)")
    sub = p.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    v = sub.add_parser("validate", help="check backend specs, catalogs, inventories and stack files",
                       description="Validate the given files (kind detected from content), or with no PATH the "
                                   "whole project: every backends/*/spec.yaml, inventory/*.yaml and stack/*.yaml, "
                                   "with cross-references (backend and version exist, frameworks fit the "
                                   "inventory, template variables are known).")
    v.add_argument("--json", action="store_true", help="one JSON object: counts, problems and notes")
    v.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                   help="a spec.yaml, a catalog list, a folder of backend folders, an inventory or a stack file")
    v.set_defaults(run=cmd_validate)

    c = sub.add_parser("catalog", help="list backends, versions, frameworks and images",
                       description="List every backend in backends/ with its versions, frameworks and images.")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    c.set_defaults(run=cmd_catalog)

    from . import discover, models, placement, probe, promote, schemas, status

    for command in (placement, models, probe, discover, promote, schemas, status):
        command.register(sub)
    return p


# ----------------------------------------------------------------------------- validate

def cmd_validate(args) -> int:
    root = args.root or find_root()
    problems = ProblemList()
    counts = {"backends": 0, "inventories": 0, "stacks": 0}
    notes: list[Problem] = []
    backends: set[str] = set()
    if not args.paths:
        catalog = problems.absorb(load_catalog, [root / "backends"], root)
        if catalog is not None:
            backends |= set(catalog.names())
            notes += catalog.notes
        stacks = stack_files(root / "stack")
        for path in stacks:
            project = problems.absorb(load_project, str(path), root)
            if project is not None:
                counts["stacks"] += 1
                notes += project.notes
        for path in sorted((root / "inventory").glob("*.yaml")):
            fleet = problems.absorb(load_fleet, path, display(path, root))
            if fleet is not None:
                counts["inventories"] += 1
                problems.extend(known_hosts_problems(fleet, root))
    else:
        for path in args.paths:
            got = problems.absorb(_validate_path, path, root)
            if got:
                kind, names, found = got
                counts[kind] += 1 if kind != "backends" else 0
                backends |= names
                notes += found
    counts["backends"] = len(backends)
    if getattr(args, "json", False):
        print(json.dumps({"ok": not problems, "counts": counts,
                          "problems": [_problem_json(p) for p in problems.items],
                          "notes": [_problem_json(n) for n in sorted(set(notes), key=Problem.sort_key)]}, indent=2))
        return EXIT_OK if not problems else EXIT_INPUT
    print_notes(notes)
    problems.raise_if_any()
    print("ok: " + ", ".join(f"{n} {k if n != 1 else k.rstrip('s').replace('inventorie', 'inventory')}"
                             for k, n in counts.items()))
    return EXIT_OK


def _problem_json(p: Problem) -> dict:
    return {"file": p.file, "line": p.line, "col": p.col, "field": p.field, "message": p.message, "text": str(p)}


def print_notes(notes: list[Problem]) -> None:
    """What loading ignored or decided (GPUStack's leniency), one line each, before the result."""
    for note in sorted(set(notes), key=Problem.sort_key):
        print(f"note: {note}", file=sys.stderr)


def _validate_path(path: Path, root: Path) -> tuple[str, set[str], list[Problem]]:
    """Check one file in the project's context, exactly as `plan` would load it."""
    shown = display(path, root)
    backends = root / "backends"
    if path_kind(path) == "folder":
        catalog = load_catalog([path], root)
        if not len(catalog):
            raise InputError([Problem(shown, 0, 0, "", "no <name>/spec.yaml or catalog files in this folder")])
        return "backends", set(catalog.names()), catalog.notes
    data, marks = read_yaml(path, shown)
    if isinstance(data, list) or (isinstance(data, dict) and "backend_name" in data):
        # in the project's context, as plan sees it: name rules and replacements depend on the rest
        inside = path.resolve().is_relative_to(backends.resolve())
        catalog = load_catalog([backends] if inside else [backends, path], root)
        # the backends this file defines, or adds versions to
        mine = {e.name for e in catalog if any(m.file == shown for m, _ in e.version_marks.values())}
        return "backends", mine, [n for n in catalog.notes if n.file == shown]
    if isinstance(data, dict) and "hosts" in data:
        fleet = load_fleet(path, shown)
        found = known_hosts_problems(fleet, root if not Path(shown).is_absolute() else Path("/"))
        if found:
            raise InputError(found)
        return "inventories", set(), []
    if isinstance(data, dict) and ("deployments" in data or "inventory" in data):
        project = load_project(str(path), root)
        return "stacks", set(), project.notes
    raise InputError([marks.problem((), "cannot tell what this file is: a backend spec has backend_name, an "
                                        "inventory has hosts, a stack file has inventory and deployments")])


# ----------------------------------------------------------------------------- catalog

def catalog_rows(catalog: Catalog) -> list[dict]:
    out = []
    for entry in catalog:
        spec = entry.spec
        out.append({
            "backend": spec.backend_name,
            "source": spec.backend_source,
            "default_version": spec.default_version,
            "default_version_valid": spec.default_version in spec.version_configs,
            "health_check_path": spec.health_check_path,
            "versions": [{"version": name, "framework": v.custom_framework, "image": v.image_name}
                         for name, v in spec.version_configs.items()],
        })
    return out


def cmd_catalog(args) -> int:
    root = args.root or find_root()
    rows = catalog_rows(load_catalog([root / "backends"], root))
    if args.json:
        print(json.dumps({"backends": rows}, indent=2, sort_keys=True))
        return EXIT_OK
    table = [("BACKEND", "SOURCE", "VERSION", "FRAMEWORK", "IMAGE")]
    for row in rows:
        for i, v in enumerate(row["versions"]):
            mark = " (default)" if v["version"] == row["default_version"] else ""
            table.append((row["backend"] if i == 0 else "", row["source"] if i == 0 else "",
                          v["version"] + mark, v["framework"], v["image"]))
    print(format_table(table))
    return EXIT_OK


def format_table(rows: list[tuple]) -> str:
    return render_table(rows[0], rows[1:])


if __name__ == "__main__":  # pragma: no cover
    run()
