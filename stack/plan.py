"""The Plan: the seam between deciding and doing.

For every placed replica a fully rendered ContainerSpec; plus the placement itself, the hosts
involved and whether the lock on disk still matches.  Pulumi components read only this.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from documents.problems import InputError, Problem, ProblemList
from documents.yaml_reader import path_kind, read_yaml
from inventory.fleet import Host

from .collector import collector_paused
from .demands import demands_for
from .lock import Prior, lock_matches, lock_path, read_prior
from .placement import LockedReplica, Placement, held_beyond, place
from .project import Project, display, inventory_path, stack_files

if TYPE_CHECKING:
    from .containers import ContainerSpec


@dataclass(frozen=True)
class Plan:
    stack: str
    placement: Placement
    containers: tuple[ContainerSpec, ...]  # sorted by deployment, replica
    hosts: tuple[Host, ...]  # every host of the inventory, sorted by name
    lock_file: str
    lock_stale: bool  # the lock on disk differs from this placement: run `gpufleet lock`
    max_unavailable: int = 1  # replicas of a deployment replaced at a time
    notes: tuple = ()  # what loading the catalog ignored or decided (documents.problems.Problem)

    def images_by_host(self) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for c in self.containers:
            out.setdefault(c.host, set()).add(c.image)
        return {h: sorted(images) for h, images in sorted(out.items())}

    def endpoints(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in self.containers:
            out.setdefault(c.deployment, []).append(c.endpoint)
        return out


@collector_paused()
def plan_placement(project: Project, lock_file: Path | None = None, strategy: str | None = None,
                   use_lock: bool = True) -> tuple[Prior, Placement]:
    """The placement of a project: its lock kept where it fits, other stacks' GPUs and ports left alone."""
    path = lock_file or lock_path(project.stack_file)
    prior = read_prior(path, display(path, project.root), project.name) if use_lock else Prior({})
    hosts = {lr.host for lr in prior.replicas.values()}
    if hosts and not hosts & set(project.fleet.names()):
        raise InputError([Problem(display(path, project.root), 0, 0, "",
                                  f"none of this lock's hosts ({', '.join(sorted(hosts)[:3])}…) is in "
                                  f"{project.fleet.file}: it belongs to another inventory; give this inventory's "
                                  "lock, or --no-lock to place fresh")])
    placement = place(project.fleet, demands_for(project.workloads), prior.replicas,
                      strategy or project.stack.strategy, prior.reserved, other_stacks_held(project))
    return prior, placement


def other_stacks_held(project: Project) -> dict[str, tuple[LockedReplica, ...]]:
    """Replicas (and reservations) in the locks of the other stacks beside this one on the same inventory."""
    inventory = _resolved(inventory_path(project.stack_file, project.stack))
    held: dict[str, tuple[LockedReplica, ...]] = {}
    problems = ProblemList()
    for other in stack_files(project.stack_file.parent):
        if _resolved(other) == _resolved(project.stack_file):
            continue
        data, _ = problems.absorb(read_yaml, other, display(other, project.root)) or (None, None)
        if not isinstance(data, dict) or not isinstance(data.get("inventory"), str):
            continue  # not a stack file (or broken: its own validation says so)
        if _resolved(other.parent / data["inventory"]) != inventory:
            continue
        lock = lock_path(other)
        prior = problems.absorb(read_prior, lock, display(lock, project.root), other.stem)
        if prior is not None and (prior.replicas or prior.reserved):
            # (a replica that stack resized in place holds its new claim, and what its old one held beyond it)
            beyond = (held_beyond(r, prior.replicas.get(r.key)) for r in prior.reserved)
            held[other.stem] = tuple(prior.replicas.values()) + tuple(x for x in beyond if x is not None)
    problems.raise_if_any()
    return held


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path)


def _moved_from(a, departed: dict[str, str]) -> str | None:
    previous = a.previous_host if a.status == "moved" else departed.get(a.key)
    return previous if previous and previous != a.host else None


def build_plan(project: Project, lock_file: Path | None = None, strategy: str | None = None) -> Plan:
    from .containers import render_container  # rendering: `gpufleet plan` does not import it (5 ms)

    path = lock_file or lock_path(project.stack_file)
    shown = display(path, project.root)
    prior, placement = plan_placement(project, lock_file, strategy)
    workloads = {w.name: w for w in project.workloads}
    # a replica the lock's last change moved off a host is created on its new host before the old
    # container goes: from this plan's own moves, or from the lock's reservations of the last change
    departed = {r.key: r.host for r in prior.reserved}
    containers = tuple(
        render_container(project.name, workloads[a.deployment], a, project.fleet.host(a.host), project.stack,
                         _moved_from(a, departed))
        for a in placement.assignments)
    stale = path_kind(path) != "file" or not lock_matches(prior, placement)
    return Plan(project.name, placement, containers, project.fleet.hosts, shown, stale,
                project.stack.rollout.max_unavailable, tuple(project.notes))
