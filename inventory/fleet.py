"""The inventory as plain, immutable data: what placement and the components read.

``load_fleet`` validates the file, applies ``defaults``, checks what spans hosts (duplicate
names, duplicate device indices, two entries for one machine, overlapping port ranges on
one address) and returns a :class:`Fleet` sorted by host name, so file order never matters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

from documents.problems import InputError, Problem
from documents.validation import validate
from documents.yaml_reader import Marks, read_yaml

from .schema import MAX_DEVICE_INDEX, InventoryFile
from .sizes import format_mib
from .vendors import VENDORS


@dataclass(frozen=True, slots=True)
class Device:
    index: int
    uuid: str | None = None
    pci_bus_id: str | None = None
    render_node: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    """Identical devices (one vendor and model) on one host; a replica's GPUs come from one group."""

    vendor: str
    model: str
    vram_mib: int
    devices: tuple[Device, ...]

    @property
    def framework(self) -> str:
        return VENDORS[self.vendor].framework

    def describe(self) -> str:
        return f"{len(self.devices)} × {self.model} ({format_mib(self.vram_mib)}, {self.vendor})"


@dataclass(frozen=True, slots=True)
class SshTarget:
    user: str
    port: int
    identity_file: str | None
    known_hosts: str | None


@dataclass(frozen=True, slots=True)
class RegistryLogin:
    address: str
    username: str
    password_key: str  # the Pulumi config key of the password


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: str
    ssh: SshTarget
    labels: tuple[tuple[str, str], ...]
    state: str
    port_start: int
    port_end: int
    model_cache: str
    groups: tuple[DeviceGroup, ...]
    #: host folders a deployment's local_path may lie under (the model cache is always one)
    model_roots: tuple[str, ...] = ()
    registries: tuple[RegistryLogin, ...] = ()
    cpus: int | None = None
    ram_mib: int | None = None
    #: kept for the system (the inventory's reserved): placement gives replicas the rest
    reserved_cpus: float = 0
    reserved_ram_mib: int = 0

    @property
    def allocatable_cpus(self) -> float | None:
        """CPUs replicas may claim; None when the inventory does not say (then nothing is checked)."""
        return None if self.cpus is None else self.cpus - self.reserved_cpus

    @property
    def allocatable_ram_mib(self) -> int | None:
        return None if self.ram_mib is None else self.ram_mib - self.reserved_ram_mib

    @property
    def frameworks(self) -> frozenset[str]:
        return frozenset({g.framework for g in self.groups} | {"cpu"})

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def active(self) -> bool:
        return self.state == "active"

    def device_count(self) -> int:
        return sum(len(g.devices) for g in self.groups)


@dataclass(frozen=True)
class Fleet:
    hosts: tuple[Host, ...]
    file: str = "<memory>"
    #: where each host is written (the marks of its file, its path there), for problems found later
    #: (known_hosts, probe): looked up only then, so a good inventory is never read for positions
    where: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "hosts", tuple(sorted(self.hosts, key=lambda h: h.name)))
        object.__setattr__(self, "_by_name", {h.name: h for h in self.hosts})

    def position(self, name: str) -> tuple[int, int]:
        """(line, column) of the host's entry in the inventory; (0, 0) for a host not read from one."""
        marks, path = self.where.get(name, (None, ()))
        return marks.of_value(path) if marks is not None else (0, 0)

    def host(self, name: str) -> Host | None:
        return self._by_name.get(name)  # type: ignore[attr-defined]

    def names(self) -> list[str]:
        return [h.name for h in self.hosts]


def load_fleet(path: Path, display: str | None = None) -> Fleet:
    data, marks = read_yaml(path, display)
    if not isinstance(data, dict):
        raise InputError([marks.problem((), "an inventory is a mapping with 'hosts' (and optional 'defaults')")])
    inv = validate(InventoryFile, data, marks)
    # SSH paths relative to the inventory are kept relative to the project (as displayed), so every
    # checkout renders the same provider settings; Pulumi runs in the project folder
    shown = Path(display) if display else path
    return build_fleet(inv, marks, shown.parent if not shown.is_absolute() else path.parent)


def build_fleet(inv: InventoryFile, marks: Marks, base_dir: Path | None = None) -> Fleet:
    problems: list[Problem] = []
    d = inv.defaults
    hosts: list[Host] = []
    where: dict[str, tuple[Marks, tuple]] = {}
    seen_names: dict[str, int] = {}
    seen_endpoint: dict[tuple[str, int], str] = {}
    for i, entry in enumerate(inv.hosts):
        path = ("hosts", i)
        if entry.name in seen_names:
            first = marks.of_value(("hosts", seen_names[entry.name]))[0]
            problems.append(marks.problem(path + ("name",), f"duplicate host name '{entry.name}' (first on line "
                                                            f"{first}); host names must be unique"))
            continue
        seen_names[entry.name] = i
        ssh = _ssh_target(entry.ssh.user or d.ssh.user or "root", entry.ssh.port or d.ssh.port or 22,
                          _rel(entry.ssh.identity_file or d.ssh.identity_file, base_dir),
                          _rel(entry.ssh.known_hosts or d.ssh.known_hosts, base_dir))
        endpoint = (entry.address, ssh.port)
        if endpoint in seen_endpoint:
            problems.append(marks.problem(path + ("address",),
                                          f"host '{entry.name}' has the same address and SSH port as "
                                          f"'{seen_endpoint[endpoint]}': one machine must be one entry"))
        seen_endpoint[endpoint] = entry.name
        groups = []
        used: dict[str, dict[int, int]] = {}
        for g_i, g in enumerate(entry.accelerators):
            taken = used.setdefault(g.vendor, {})
            first = max(taken, default=-1) + 1
            if g.count is not None:
                if first + g.count - 1 > MAX_DEVICE_INDEX:
                    problems.append(marks.problem(path + ("accelerators", g_i, "count"),
                                                  f"count {g.count} numbers these {g.vendor} devices from {first} "
                                                  f"(after index {first - 1} of an earlier group), past the highest "
                                                  f"device index {MAX_DEVICE_INDEX}; list them with indices instead"))
                    continue
                # numbered after every index taken, so none repeats: most groups of a fleet
                taken.update(dict.fromkeys(range(first, first + g.count), g_i))
                groups.append(_counted_group(g.vendor, g.model, g.vram, first, g.count))
                continue
            devices = []
            for index, uuid, pci_bus_id, render_node in g.entries(first_index=first):
                if index in taken:
                    problems.append(marks.problem(path + ("accelerators", g_i),
                                                  f"{g.vendor} device index {index} is listed twice on "
                                                  f"host '{entry.name}'; each device index appears once"))
                    continue
                taken[index] = g_i
                devices.append(_plain_device(index) if uuid is None and pci_bus_id is None and render_node is None
                               else Device(index, uuid, pci_bus_id, render_node))
            groups.append(_group(g.vendor, g.model, g.vram, devices))
        start, end = entry.port_range or d.port_range
        reserved = entry.reserved or d.reserved
        for what, have, keep, unit in (("cpus", entry.cpus, reserved.cpus, ""), ("ram", entry.ram, reserved.ram, " MiB")):
            if have is not None and keep >= have:
                problems.append(marks.problem(path + (("reserved",) if entry.reserved else ()),
                                              f"host '{entry.name}' reserves {keep:g}{unit} of its {have}{unit} "
                                              f"{what} for the system, leaving nothing for replicas; lower "
                                              "reserved or correct the host's capacity"))
        hosts.append(Host(
            name=entry.name, address=entry.address, ssh=ssh,
            labels=tuple(sorted({**d.labels, **entry.labels}.items())),
            state=entry.state, port_start=start, port_end=end,
            model_cache=entry.model_cache or d.model_cache, groups=tuple(groups),
            model_roots=_roots(entry.model_roots or d.model_roots or [], entry.model_cache or d.model_cache),
            registries=tuple(RegistryLogin(r.address, r.username, r.password[len("secret:"):])
                             for r in (entry.registries if entry.registries is not None else d.registries)),
            cpus=entry.cpus, ram_mib=entry.ram,
            reserved_cpus=reserved.cpus, reserved_ram_mib=reserved.ram,
        ))
        where[entry.name] = (marks, path)
    problems.extend(_port_overlaps(hosts, where))
    if problems:
        raise InputError(problems)
    return Fleet(tuple(hosts), marks.file, where)


@lru_cache(maxsize=4096)
def _counted_group(vendor: str, model: str, vram: int, first: int, count: int) -> DeviceGroup:
    """A group of ``count`` devices numbered from ``first``, known by index alone: immutable, so hosts with the
    same cards share one (placement keys a group's state by its host's name with it: stack.placement.state)."""
    return DeviceGroup(vendor, model, vram, tuple(_plain_device(i) for i in range(first, first + count)))


@lru_cache(maxsize=4096)
def _ssh_target(user: str, port: int, identity_file: str | None, known_hosts: str | None) -> SshTarget:
    """Immutable, and the same for most hosts (the inventory's defaults): one per distinct value."""
    return SshTarget(user, port, identity_file, known_hosts)


@cache
def _plain_device(index: int) -> Device:
    """A device known by its index alone (at most 1,024 of them): immutable, so one per index serves every
    host (a frozen dataclass costs a setattr per field, and a fleet lists thousands of devices)."""
    return Device(index)


def _roots(roots: list[str], cache: str) -> tuple[str, ...]:
    return tuple(sorted({*roots, cache}))


def _group(vendor: str, model: str, vram: int, devices: list[Device]) -> DeviceGroup:
    return DeviceGroup(vendor, model, vram, tuple(sorted(devices, key=lambda d: d.index)))


def _port_overlaps(hosts: list[Host], where: dict) -> list[Problem]:
    """Entries on one address share one network namespace under host networking."""
    by_address: dict[str, list[Host]] = {}
    for h in hosts:
        by_address.setdefault(h.address, []).append(h)
    problems = []
    for group in by_address.values():
        group.sort(key=lambda h: (h.port_start, h.name))
        for a, b in zip(group, group[1:]):
            if b.port_start <= a.port_end:
                marks, path = where[b.name]
                problems.append(marks.problem(path + ("port_range",),
                                              f"port range {b.port_start}-{b.port_end} of '{b.name}' overlaps "
                                              f"{a.port_start}-{a.port_end} of '{a.name}' on the same address "
                                              f"{a.address}; give each entry its own range"))
    return problems


def _rel(value: str | None, base_dir: Path | None) -> str | None:
    if not value or value.startswith("~") or base_dir is None or Path(value).is_absolute():
        return value
    # joined, not resolved: an absolute path would differ per checkout and churn provider settings
    return os.path.normpath(str(base_dir / value))
