"""The Plan: the seam between deciding and doing.

For every placed replica a fully rendered ContainerSpec; plus the placement itself, the hosts
involved and whether the lock on disk still matches.  Pulumi components read only this.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from documents.yaml_reader import path_kind, read_text
from inventory.fleet import Host

from .containers import ContainerSpec, render_container
from .demands import demands_for
from .lock import lock_path, read_lock, render_lock
from .placement import Placement, place
from .project import Project, display


@dataclass(frozen=True)
class Plan:
    stack: str
    placement: Placement
    containers: tuple[ContainerSpec, ...]  # sorted by deployment, replica
    hosts: tuple[Host, ...]  # every host of the inventory, sorted by name
    lock_file: str
    lock_stale: bool  # the lock on disk differs from this placement: run `gpufleet lock`

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


def build_plan(project: Project, lock_file: Path | None = None, strategy: str | None = None) -> Plan:
    path = lock_file or lock_path(project.stack_file)
    shown = display(path, project.root)
    prior = read_lock(path, shown, project.name)
    placement = place(project.fleet, demands_for(project.workloads), prior, strategy or project.stack.strategy)
    workloads = {w.name: w for w in project.workloads}
    containers = tuple(
        render_container(project.name, workloads[a.deployment], a, project.fleet.host(a.host), project.stack)
        for a in placement.assignments)
    stale = path_kind(path) != "file" or read_text(path, shown) != render_lock(project.name, placement)
    return Plan(project.name, placement, containers, project.fleet.hosts, shown, stale)
