"""``gpufleet promote SRC DST``: carry what a change is made of from one stack file to the next.

What travels (the change under review): backend, version, model and model_name, image, run
command and entrypoint, non-secret environment, backend parameters and dropped defaults, the
health check path. What stays (the environment's own): replicas, resources, selectors, spread,
GPU pinning, the inventory, and secret references. A deployment DST lacks is copied whole
(its replicas and resources too: review them).

DST's file is edited round-trip (ruamel.yaml), so its comments, key order and quoting survive
wherever the promotion does not touch them. It refuses when SRC does not validate or does not
fully place: a broken change is not promoted.
"""
from __future__ import annotations

import copy
import difflib
import io
import sys

from documents.problems import InputError, Problem
from documents.yaml_reader import read_text
from stack.plan import plan_placement
from stack.project import display, find_root, load_project

#: deployment keys a promotion copies from SRC
TRAVELS = ("backend", "version", "model", "model_name", "image", "run_command", "entrypoint", "backend_parameters",
           "drop_default_parameters", "health_check_path")
SECRET = "secret:"


def register(sub) -> None:
    p = sub.add_parser("promote", help="copy a change from one stack file to another (dev -> staging -> prod)",
                       description="Copy backend, version, model, image/command/entrypoint overrides, non-secret env, "
                                   "backend parameters and health check path of deployments from stack SRC to stack "
                                   "DST, keeping DST's replicas, resources, selectors, GPU pinning, inventory and "
                                   "secret references. Prints the diff of DST's file; --write writes it (comments "
                                   "and key order kept). Refuses when SRC does not validate or does not fully place.")
    p.add_argument("src", metavar="SRC", help="stack to promote from (name or path)")
    p.add_argument("dst", metavar="DST", help="stack to promote to (name or path)")
    p.add_argument("--deployment", action="append", default=None, metavar="NAME",
                   help="promote only this deployment (repeatable; default: every deployment of SRC)")
    p.add_argument("--write", action="store_true", help="write DST's file (default: print the diff only)")
    p.set_defaults(run=cmd_promote)


def cmd_promote(args) -> int:
    root = args.root or find_root()
    src = load_project(args.src, root)
    _, placement = plan_placement(src)  # as `gpufleet plan` places it: its lock, other stacks' GPUs
    if placement.unplaced:
        raise InputError([Problem(display(src.stack_file, root), 0, 0, "",
                                  f"stack {src.name} does not fully place ({len(placement.unplaced)} unplaced, e.g. "
                                  f"{placement.unplaced[0].message}); fix it before promoting")])
    dst = load_project(args.dst, root)
    names = args.deployment or sorted(src.stack.deployments)
    unknown = [n for n in names if n not in src.stack.deployments]
    if unknown:
        raise InputError([Problem(display(src.stack_file, root), 0, 0, "",
                                  f"no deployment {', '.join(unknown)} in stack {src.name}; it has "
                                  f"{', '.join(sorted(src.stack.deployments)) or 'none'}")])
    yaml = _yaml()
    src_doc = yaml.load(read_text(src.stack_file, display(src.stack_file, root)))
    before = read_text(dst.stack_file, display(dst.stack_file, root))
    dst_doc = yaml.load(before)
    notes = promote(src_doc, dst_doc, names)
    out = io.StringIO()
    yaml.dump(dst_doc, out)
    after = out.getvalue()
    shown = display(dst.stack_file, root)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if after == before:
        print(f"{shown}: nothing to promote from {src.name}")
        return 0
    sys.stdout.writelines(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                               f"{shown} (now)", f"{shown} (promoted from {src.name})"))
    if args.write:
        tmp = dst.stack_file.with_name(dst.stack_file.name + ".tmp")
        tmp.write_text(after)
        tmp.replace(dst.stack_file)
        load_project(str(dst.stack_file), root)  # what was written validates, or says where it does not
        print(f"wrote: {shown}", file=sys.stderr)
    return 0


def _yaml():
    from ruamel.yaml import YAML  # imported by the one command that writes YAML round-trip

    yaml = YAML()  # round-trip: comments, order and quotes kept
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def promote(src_doc, dst_doc, names: list[str]) -> list[str]:
    """Edit ``dst_doc`` in place; returns notes for the operator."""
    notes = []
    src_deps = src_doc.get("deployments") or {}
    if dst_doc.get("deployments") is None:
        dst_doc["deployments"] = type(src_deps)()
    dst_deps = dst_doc["deployments"]
    for name in names:
        s = src_deps[name]
        if name not in dst_deps:
            dst_deps[name] = copy.deepcopy(s)
            notes.append(f"{name} is new in the target: copied whole, replicas and resources included; review them")
            continue
        d = dst_deps[name]
        for key in TRAVELS:
            if key in s:
                if d.get(key) != s[key]:
                    d[key] = copy.deepcopy(s[key])
            elif key in d:
                del d[key]
        _promote_env(s.get("env") or {}, d, name, notes)
    return notes


def _promote_env(src_env, d, name: str, notes: list[str]) -> None:
    """Plain values travel; the target's secret references stay; a secret the target lacks is referenced."""
    if not src_env and "env" not in d:
        return
    if "env" not in d or d["env"] is None:
        d["env"] = type(src_env)()
    env = d["env"]
    for key, value in src_env.items():
        theirs = env.get(key)
        if isinstance(theirs, str) and theirs.startswith(SECRET):
            continue  # the environment's own secret
        if isinstance(value, str) and value.startswith(SECRET):
            if key not in env:
                env[key] = value
                notes.append(f"{name}: {key} is {value} in the source; set that secret for the target stack "
                             f"(pulumi config set --secret {value[len(SECRET):]} …)")
            continue
        if theirs != value:
            env[key] = value
    for key in [k for k in env if k not in src_env]:
        if not (isinstance(env[key], str) and env[key].startswith(SECRET)):
            del env[key]


__all__ = ["register", "promote", "TRAVELS"]
