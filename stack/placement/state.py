"""What is in use during one placement run: VRAM and exclusivity per device, ports, replicas per host.

Device choice lives here, in :func:`choose_devices`, the one place that decides which devices
of a group a replica gets; the fast index only decides which group to ask.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from math import inf
from typing import Callable

from inventory.fleet import DeviceGroup, Fleet, Host

from .model import Demand


class GroupState:
    """Mutable usage of one device group. Positions follow ``group.devices``."""

    __slots__ = ("gid", "host", "gidx", "group", "free", "exclusive", "claims", "pos_of", "device_ids")

    def __init__(self, gid: int, host: Host, gidx: int, group: DeviceGroup):
        self.gid, self.host, self.gidx, self.group = gid, host, gidx, group
        n = len(group.devices)
        self.free = [group.vram_mib] * n
        self.exclusive = [False] * n
        self.claims = [0] * n
        self.pos_of = {d.index: i for i, d in enumerate(group.devices)}
        #: by position, the device's (index,) and (uuid,): what an assignment of one GPU there records
        self.device_ids = [((d.index,), (d.uuid,)) for d in group.devices]

    @property
    def untouched(self) -> int:
        return self.claims.count(0)

    def shareable_free(self) -> int:
        """Free VRAM over the devices that can still be shared, together."""
        return sum(f for f, x in zip(self.free, self.exclusive) if not x)

    def kth_free(self, k: int) -> int:
        """The k-th largest free VRAM among devices that can still be shared (0 if fewer than k)."""
        shareable = sorted((f for f, x in zip(self.free, self.exclusive) if not x), reverse=True)
        return shareable[k - 1] if len(shareable) >= k else 0


def needs(cpus: float, ram_mib: int) -> tuple[float, float]:
    """``FleetState.cpu_fits`` and ``ram_fits`` as two thresholds, for loops over many hosts: a host is short of a
    replica claiming ``cpus`` and ``ram_mib`` where its free CPUs are below the first or its free MiB below the
    second. Nothing where it claims none, even on a host over them."""
    return (cpus - 1e-9 if cpus else -inf, ram_mib if ram_mib else -inf)


def choose_devices(gs: GroupState, demand: Demand, allowed: set[int] | None = None) -> list[int] | None:
    """Positions of the devices this replica gets in ``gs``, or None if it does not fit.

    whole: the lowest-indexed unclaimed devices.  Fractional: best fit, already-shared devices
    first (keeps untouched devices whole for whole claims), then the least free VRAM that fits.
    """
    g = demand.gpus
    free, claims, devices = gs.free, gs.claims, gs.group.devices
    n = len(free)
    if demand.vram_mib is None:
        if g == 1 and allowed is None:  # the usual whole claim: the first unclaimed device, found in C
            return [claims.index(0)] if 0 in claims else None
        picked = [i for i in range(n) if claims[i] == 0 and (allowed is None or devices[i].index in allowed)]
        return picked[:g] if len(picked) >= g else None
    v, exclusive = demand.vram_mib, gs.exclusive
    if g == 1:  # the usual claim: the best device in one loop, the first in device order among equals
        pick, best_untouched, best_free = -1, True, 0
        for i in range(n):
            f = free[i]
            if f >= v and not exclusive[i] and (allowed is None or devices[i].index in allowed):
                untouched = claims[i] == 0
                if pick < 0 or (untouched, f) < (best_untouched, best_free):
                    pick, best_untouched, best_free = i, untouched, f
        return None if pick < 0 else [pick]
    fits = [i for i in range(n) if not exclusive[i] and free[i] >= v
            and (allowed is None or devices[i].index in allowed)]
    if len(fits) < g:
        return None
    if len(fits) > g:
        fits.sort(key=lambda i: (claims[i] == 0, free[i], i))
    return sorted(fits[:g])


def occupy(gs: GroupState, positions: list[int], vram_mib: int | None) -> int:
    """Take ``vram_mib`` (None: the whole device, exclusively) on each of ``positions`` of ``gs`` (a group's
    state, or a copy with the same lists: giveway.Room); returns the MiB taken."""
    free, taken = gs.free, 0  # MiB are whole numbers: the sum of the differences is exact
    for i in positions:
        if vram_mib is None:
            taken += free[i]
            free[i] = 0
            gs.exclusive[i] = True
        else:  # never below 0: a hand-edited lock may hold more than a device has
            left = max(0, free[i] - vram_mib)
            taken += free[i] - left
            free[i] = left
        gs.claims[i] += 1
    return taken


def vacate(gs: GroupState, positions: list[int], vram_mib: int | None) -> int:
    """Undo ``occupy``; returns the MiB given back."""
    free, size, given = gs.free, gs.group.vram_mib, 0
    for i in positions:
        now = size if vram_mib is None else min(size, free[i] + vram_mib)
        given += now - free[i]
        free[i] = now
        if vram_mib is None:
            gs.exclusive[i] = False
        gs.claims[i] -= 1
    return given


def devices_fit(gs: GroupState, demand: Demand) -> bool:
    """``choose_devices(gs, demand) is not None`` without choosing (no manual selection): counted, not
    listed and sorted. The free-VRAM filter asks it of every host a replica's shape could use when its
    explanation is written (tests/test_placement_properties.py checks the two agree)."""
    if demand.vram_mib is None:
        return gs.claims.count(0) >= demand.gpus
    v, n = demand.vram_mib, 0
    for free, exclusive in zip(gs.free, gs.exclusive):
        if free >= v and not exclusive:
            n += 1
    return n >= demand.gpus


@dataclass
class Ports:
    """A host's port range while a plan is built: ``lowest`` hands out the lowest free port.

    Ports below ``cursor`` were handed out or found taken; those of them given back wait in ``freed`` (a heap).
    The lowest free port is the lowest of ``freed`` or the first from ``cursor`` not in ``used``: no list of the
    whole range is built (a plan touches most hosts, and real ranges run to thousands of ports)."""

    start: int
    end: int
    used: set
    cursor: int | None = None
    freed: list = field(default_factory=list)

    def free_count(self) -> int:
        return (self.end - self.start + 1) - len(self.used)

    def take(self, port: int) -> bool:
        if port < self.start or port > self.end or port in self.used:
            return False
        self.used.add(port)
        return True

    def give_back(self, port: int) -> None:
        self.used.discard(port)
        heapq.heappush(self.freed, port)

    def lowest(self) -> int | None:
        used, freed = self.used, self.freed
        while freed and freed[0] in used:  # given back, then taken again
            heapq.heappop(freed)
        c = self.start if self.cursor is None else self.cursor
        while c <= self.end and c in used:
            c += 1
        if freed and (c > self.end or freed[0] < c):
            p = heapq.heappop(freed)
            self.cursor = c
        elif c <= self.end:
            p = c
            self.cursor = c + 1
        else:
            self.cursor = c
            return None
        used.add(p)
        return p


class FleetState:
    """Usage of the whole fleet while one plan is built."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.groups: list[GroupState] = []
        self.groups_of: dict[str, list[GroupState]] = {}
        for host in fleet.hosts:
            mine = []
            for gidx, group in enumerate(host.groups):
                gs = GroupState(len(self.groups), host, gidx, group)
                self.groups.append(gs)
                mine.append(gs)
            self.groups_of[host.name] = mine
        #: (host, id of a DeviceGroup of it) -> its state: the filters ask for it on every check of free VRAM
        self._by_group: dict[tuple[str, int], GroupState] = {}
        for gs in self.groups:
            self._by_group.setdefault((gs.host.name, id(gs.group)), gs)
        self.ports: dict[str, Ports] = {}
        self.deployments_on: dict[str, dict[str, int]] = {}
        self.replicas_on: dict[str, int] = {}
        self._hosts_of: dict[str, set[str]] = {}
        #: hosts where other stacks on the same inventory hold GPUs or ports, and which stacks
        self.held_by: dict[str, set[str]] = {}
        #: (host, vendor, device index) and (host, port) -> the other stack whose lock holds it
        self.held_at: dict[tuple, str] = {}
        #: (group id, position) -> MiB that shared claims held there beyond what the device had left (two locks
        #: written apart, each filling a device; ``hold`` never takes a device below 0 free)
        self.over_held: dict[tuple[int, int], int] = {}
        #: CPUs and MiB of memory still free per host; None where the inventory does not declare them
        self.cpu_free: dict[str, float | None] = {}
        self.ram_free: dict[str, int | None] = {}
        #: called with a host's name whenever its GPUs, CPUs or memory change (the index logs it)
        self.on_change: Callable[[str], None] | None = None
        #: free VRAM per host in whole devices (a device half claimed counts 0.5)
        self.gpus_free: dict[str, float] = {}
        #: allocatable CPUs and MiB of memory per GPU of each GPU host (None where not declared): what ``strands``
        #: asks a host to keep per free GPU is never more than the host was built with
        self.built_per_gpu: dict[str, tuple[float | None, float | None]] = {}
        #: the VRAM of a device of each GPU host's first group: what a shared claim's share is counted against
        self.device_mib: dict[str, int] = {}
        # one walk over the hosts fills them all (eight, one per table, took 0.1 s at 21,000 hosts)
        for h in fleet.hosts:
            name = h.name
            self.ports[name] = Ports(h.port_start, h.port_end, set())
            self.deployments_on[name] = {}
            self.replicas_on[name] = 0
            cpus, ram = h.allocatable_cpus, h.allocatable_ram_mib
            self.cpu_free[name], self.ram_free[name] = cpus, ram
            n = sum(len(g.devices) for g in h.groups)
            self.gpus_free[name] = float(n)
            if n:
                self.built_per_gpu[name] = (None if cpus is None else cpus / n, None if ram is None else ram / n)
            if h.groups:
                self.device_mib[name] = h.groups[0].vram_mib
        #: the least memory a GPU host was built with per GPU, and per MiB of its devices (None: none declares it)
        lean = [(ram, ram / self.device_mib[name]) for name, (_, ram) in self.built_per_gpu.items()
                if ram is not None and self.device_mib[name] > 0]  # (sizes are positive but in code-built fleets)
        self.leanest_memory: tuple[float, float] | None = \
            (min(x[0] for x in lean), min(x[1] for x in lean)) if lean else None

    # -- questions the filters ask
    def has_free_port(self, host: str) -> bool:
        ports = self.ports[host]  # free_count() > 0, inlined: asked 29,000 times by a 2,000-host plan
        return len(ports.used) <= ports.end - ports.start

    # A replica that claims no CPUs (no memory) is not limited by them, even on a host over them: departing
    # replicas and other stacks' locks may hold more than a host has. The searches and host drops ask the same
    # through ``needs``; the explanations (``explain``) inline it.
    def cpu_fits(self, host: str, demand: Demand) -> bool:
        free = self.cpu_free[host]
        return free is None or not demand.cpus or free + 1e-9 >= demand.cpus

    def ram_fits(self, host: str, demand: Demand) -> bool:
        free = self.ram_free[host]
        return free is None or not demand.ram_mib or free >= demand.ram_mib

    def host_fits(self, host: str, demand: Demand) -> bool:
        """The host has the CPUs and memory the replica claims left (or does not declare them)."""
        return self.cpu_fits(host, demand) and self.ram_fits(host, demand)

    def strands(self, demand: Demand, cpus_per_gpu: float, ram_per_gpu: float,
                slack: float = 0.5) -> Callable[[str], bool]:
        """A check of whether placing ``demand`` on a host would leave fewer CPUs or less memory per free GPU than
        the plan's replicas need (``slack`` of the average, or what the host has per GPU when built, if that is
        less: a host built lean is not stranded by being filled evenly): the host's remaining GPUs could not be
        used. The check is asked of host after host as a search walks the index's lists, so what depends only on
        the replica is worked out once, here.

        Measured on bench/placement.py's CPU-and-memory workload (60 fleets, GPUs allocated in one plan at load
        1.0 and 1.3) with the preference firm (preferences.KeepCpusPerGpu): slack 0.25 gave 97.4 % and 97.8 %
        (30 fleets), 0.45 to 0.52 gave 98.7-98.8 % and 99.3 %. Without the cap at the host's own share, 0.6
        fell to 96.0 % (hosts built with 5.75 CPUs per GPU counted as stranded even when empty and were left
        to the second round), and on small CPU-bound fleets (3-6 hosts, 2 to 28 CPUs per GPU) 0.5 allocated
        53.8 % of the GPUs against 54.1 % before the change; with the cap 55.5 % (0.6: 98.7 % and 99.2 % on the
        workload). Given up at once instead of firm, 0.25 had done best among 0, 0.25, 0.5, 1 and 1.25."""
        gpus_free, cpu_free, ram_free, built = self.gpus_free, self.cpu_free, self.ram_free, self.built_per_gpu
        want_cpus, want_ram = slack * cpus_per_gpu, slack * ram_per_gpu
        asks_cpus, asks_ram = demand.cpus, demand.ram_mib
        whole, take, shared = demand.whole, demand.gpus, demand.gpus * (demand.vram_mib or 0)
        device_mib = self.device_mib

        def strands(host: str) -> bool:
            per_gpu = built.get(host)
            if per_gpu is None:
                return False  # no GPUs: nothing to strand
            left = gpus_free[host] - (take if whole else shared / device_mib[host])
            if left < 0.5:
                return False  # the host is full after this: nothing to strand
            cpu = cpu_free[host]
            if cpu is not None and cpu - asks_cpus < min(want_cpus, per_gpu[0]) * left:
                return True
            ram = ram_free[host]
            return ram is not None and ram - asks_ram < min(want_ram, per_gpu[1]) * left

        return strands

    def runs(self, host: str, deployment: str) -> bool:
        return deployment in self.deployments_on[host]

    def hosts_running(self, deployment: str) -> set[str]:
        return self._hosts_of.get(deployment, set())

    def group_state(self, host: str, group: DeviceGroup) -> GroupState:
        return self._by_group[host, id(group)]

    def fits(self, host: str, group: DeviceGroup | None, demand: Demand) -> bool:
        if group is None:
            return demand.gpus == 0
        if demand.manual is None:
            return devices_fit(self.group_state(host, group), demand)
        return choose_devices(self.group_state(host, group), demand, demand.allowed_on(host)) is not None

    # -- changes
    def hold(self, gs: GroupState, positions: list[int], vram_mib: int | None) -> None:
        """Devices a container outside this plan's replicas still uses (departing, or another stack's).
        Always called with ``hold_host`` (which announces the change), as ``claim`` does."""
        self.gpus_free[gs.host.name] -= occupy(gs, positions, vram_mib) / gs.group.vram_mib

    def unhold(self, gs: GroupState, positions: list[int], taken: list[tuple[int, bool]]) -> None:
        """Undo ``hold`` on ``positions``, given what it took of each (MiB, and whether the device was held whole
        before it); with ``hold_host`` of negative amounts."""
        given = 0
        for p, (mib, whole) in zip(positions, taken):
            gs.free[p] += mib
            gs.exclusive[p] = whole
            gs.claims[p] -= 1
            given += mib
        self.gpus_free[gs.host.name] += given / gs.group.vram_mib

    def hold_host(self, host: str, cpus: float, ram_mib: int) -> None:
        """CPUs and memory a replica takes on its host (this plan's, departing, or another stack's);
        negative amounts give them back."""
        if self.on_change is not None:
            self.on_change(host)
        if self.cpu_free.get(host) is not None:
            self.cpu_free[host] -= cpus
        if self.ram_free.get(host) is not None:
            self.ram_free[host] -= ram_mib

    def release(self, gs: GroupState | None, positions: list[int], demand: Demand, host: str, port: int) -> None:
        """Undo ``claim`` and the port: a replica of this run is taken back (the repair step moves it)."""
        if gs is not None:
            self.gpus_free[host] += vacate(gs, positions, demand.vram_mib) / gs.group.vram_mib
        self.hold_host(host, -demand.cpus, -demand.ram_mib)
        deps = self.deployments_on[host]
        deps[demand.deployment] -= 1
        if not deps[demand.deployment]:
            del deps[demand.deployment]
            self._hosts_of[demand.deployment].discard(host)
        self.replicas_on[host] -= 1
        self.ports[host].give_back(port)

    def claim(self, gs: GroupState | None, positions: list[int], demand: Demand, host: str) -> int:
        """Record a replica's devices, CPUs and memory; returns the VRAM claimed per device."""
        self.hold_host(host, demand.cpus, demand.ram_mib)
        per = 0
        if gs is not None:
            self.hold(gs, positions, demand.vram_mib)
            if positions:
                per = gs.group.vram_mib if demand.vram_mib is None else demand.vram_mib
        deps = self.deployments_on[host]
        deps[demand.deployment] = deps.get(demand.deployment, 0) + 1
        hosts = self._hosts_of.get(demand.deployment)
        if hosts is None:  # (not setdefault: a set made and dropped for every replica placed)
            hosts = self._hosts_of[demand.deployment] = set()
        hosts.add(host)
        self.replicas_on[host] += 1
        return per

