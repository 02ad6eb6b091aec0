"""The placement pipeline, in the order it runs:

1. **sticky**: each replica in the prior lock stays exactly where it was (host, GPUs, port)
   while that is still valid: same demand shape, host active, devices present, every filter
   passes, capacity and port still free.  Otherwise the reason it must move is recorded.
2. **fresh**: the rest, biggest first (GPUs, then whole before shared, then VRAM), each
   through the filters and rankers (``index.best``): soft anti-affinity first tries hosts
   not yet running the deployment; ``spread: hosts`` makes that a hard rule. Where replicas
   ask CPUs or memory, equally constrained replicas go in two rounds: one that would strand a
   host's GPUs next to its last CPUs waits for the second (preferences.KeepCpusPerGpu). Then bounded
   repair, re-pack, exchange and rebalance steps (``_place``), and, once the order is chosen, the
   give-way step (stack.placement.giveway): in a full pool a bigger new replica leaves its room to
   two or more smaller ones left over; last, in a small plan that still leaves replicas over, a bounded
   exact search for an arrangement that places more (stack.placement.exact).
3. **explain**: a replica nothing fits is run through every filter on every host, and the
   hosts each filter rejected are counted under its reason code.
4. **removed**: lock entries whose replica no longer exists.

Pure: the same fleet, demands, prior and strategy give the same Placement.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import fields
from itertools import groupby, islice
from math import inf
from operator import attrgetter, itemgetter
from typing import Callable, Iterable, Iterator

from inventory.fleet import Fleet
from inventory.sizes import format_mib

from ..collector import collector_paused

from .exact import place_more
from .filters import (
    DEVICE_COUNT,
    DYNAMIC,
    FRAMEWORK,
    GPU_MODEL,
    LABELS,
    MANUAL,
    PIPELINE,
    SPREAD,
    VENDOR,
    VRAM_SIZE,
    applicable,
)
from .giveway import GiveWay, Room
from .index import BINPACK, CandidateIndex, HostIndex
from .model import Assignment, Demand, LockedReplica, Placement, Removed, Unplaced
from .packing import device_bins
from .preferences import Context, gpu_share, tiers
from .rankers import RANKERS
from .state import FleetState, GroupState, choose_devices, devices_fit, needs, vacate


@collector_paused()
def place(fleet: Fleet, demands: list[Demand], prior: dict[str, LockedReplica] | None = None,
          strategy: str = BINPACK, reserved: tuple[LockedReplica, ...] = (),
          held: dict[str, tuple[LockedReplica, ...]] | None = None) -> Placement:
    """Place ``demands``; ``prior`` is the lock's placement (see ``_place``).

    A second order is tried when a plan that nearly fits leaves shared claims over while their VRAM is there
    in slivers (``_Run.wants_device_order``): shared claims placed device by device as a best-fit-decreasing
    dry run groups them (stack.placement.packing). It is kept only when it places no fewer replicas and no
    fewer GPUs, and more of one: on Alibaba's openb trace 95.6 % -> 96.0 % of GPUs (no placement can pass
    96.6 %: bench/bounds.py) and 206 -> 150 replicas left over. Where it loses either (more multi-GPU or
    CPU-heavy replicas: it places more replicas but fewer GPUs) the first order stands.

    Then, in a full pool, a bigger replica this plan places new may give its room to two or more smaller ones
    left over (stack.placement.giveway): more replicas placed, never less VRAM taken.
    """
    run = _best_order(fleet, demands, prior, strategy, reserved, held)
    run.give_way()  # 2f. a full pool: one replica's room for two or more left over
    place_more(run, run.by_key)  # 2g. a small plan: an exact search for a placement of more
    try:
        return run.finish(demands, prior)
    finally:
        run.close()


def _best_order(fleet: Fleet, demands: list[Demand], prior: dict[str, LockedReplica] | None = None,
                strategy: str = BINPACK, reserved: tuple[LockedReplica, ...] = (),
                held: dict[str, tuple[LockedReplica, ...]] | None = None) -> _Run:
    """The first order's run, or the second's where it is tried and better (see ``place``)."""
    run = _place(fleet, demands, prior, strategy, reserved, held)
    if run.wants_device_order():
        other = _place(fleet, demands, prior, strategy, reserved, held, by_device=True)
        if other.better_than(run):
            run, other = other, run
        other.close()
    return run


def _place(fleet: Fleet, demands: list[Demand], prior: dict[str, LockedReplica] | None = None,
          strategy: str = BINPACK, reserved: tuple[LockedReplica, ...] = (),
          held: dict[str, tuple[LockedReplica, ...]] | None = None,
          by_device: bool = False) -> "_Run":
    """Place ``demands`` up to the explanations (``_Run.finish``); ``prior`` is the lock's placement.

    ``reserved``: departing replicas the lock recorded (their containers still run until the up
    that applies this lock deletes them). ``held``: replicas of other stacks on the same hosts, by
    stack name.
    Both, like this plan's own departing replicas, keep their GPUs and ports. ``by_device``: shared claims
    go in the order of the devices a dry run packs them onto (see ``place``).
    """
    prior = prior or {}
    state = FleetState(fleet)
    index = CandidateIndex(state, demands)
    run = _Run(fleet, state, index, strategy)
    run.hosts = HostIndex(state, demands, run.ranker)
    gpu_demands = [d for d in demands if d.gpus]
    run.gpu_replicas = len(gpu_demands)
    run.least = needs(min((d.cpus for d in gpu_demands), default=0), min((d.ram_mib for d in gpu_demands), default=0))
    if any(d.cpus or d.ram_mib for d in gpu_demands):
        run.walks = _Walks(index)

    # other stacks' locks first: what they hold is taken for this lock's replicas too. Two locks written apart
    # (two pull requests, each before the other merged) may both claim a GPU or a port; this stack's replica
    # there moves, where keeping it would run two containers on one GPU (tests/test_shared_inventory.py)
    for other, entries in sorted((held or {}).items()):
        _hold(state, index, entries)
        for locked in entries:
            state.held_by.setdefault(locked.host, set()).add(other)
            state.held_at.setdefault((locked.host, locked.port), other)
            for i in locked.gpus:
                state.held_at.setdefault((locked.host, locked.vendor, i), other)
    ordered = sorted(demands, key=lambda d: (d.deployment, d.replica))
    fresh: list[Demand] = []
    for demand in ordered:  # 1. sticky
        locked = prior.get(demand.key) if prior else None  # no lock: no key formatted per replica
        if locked is None or not run.keep(demand, locked):
            fresh.append(demand)
    kept = {a.key for a in run.placed.values()}
    departing = tuple(lr for key, lr in sorted(prior.items()) if key not in kept)
    _hold(state, index, departing + tuple(reserved))
    run.ratios = run.hosts.per_gpu = _plan_ratios(fresh, demands)
    run.context = Context(state, run.ratios)
    for host in fleet.hosts:  # what departing and other stacks' replicas hold is taken now
        if run._exhausted(host.name):
            index.drop_host(host.name)
        run.hosts.refresh(host.name)
    constrained = run.constrained
    bins = device_bins(fresh, _DeviceSize(index)) if by_device else None
    size = _by_size(_capacity_per_gpu(fleet), bins) if run.ratios is not None else _biggest_first
    if bins is None:  # the order is the same for replicas alike but for their number: asked once per run of them
        fresh = _sorted_by_runs(fresh, lambda d: (constrained(d), size(d)[:-1]))
    else:  # bins are per replica
        fresh.sort(key=lambda d: (constrained(d), size(d)))
    if run.ratios is None:
        for demand in fresh:  # 2. fresh
            run.place_fresh(demand, prior.get(demand.key) if prior else None)
    else:  # 2. fresh, equally constrained replicas at a time, each run in two rounds
        for _, alike in groupby(fresh, key=constrained):
            run.place_in_two_rounds(alike, prior)
    by_key = run.by_key = {d.key: d for d in demands}
    run.repair(by_key, constrained)  # 2b. make room for what nothing fit
    run.repack(by_key)  # 2c. few whole-GPU replicas left over: an exact, bounded search
    run.retry()  # the re-pack may have freed room: what fits now goes first
    run.trade()  # 2d, 2e. GPUs idle next to exhausted CPUs or memory: trade heavy for light replicas
    run.departing = departing
    return run


def _hold(state: FleetState, index: CandidateIndex, entries: tuple[LockedReplica, ...]) -> None:
    """GPUs and ports of containers that still exist during the apply stay taken in this plan.

    Pulumi creates new containers before it deletes removed ones, and a replica moving to
    another host is created there before the old one goes: a new replica on a GPU or port an
    old container still holds would fail its free-memory check or its bind. Entries naming a
    host or device that no longer exists hold nothing.
    """
    for locked in entries:
        gs = None
        if locked.host in state.cpu_free:
            state.hold_host(locked.host, locked.claim.cpus, locked.claim.ram_mib)
        if locked.gpus:
            gs = next((g for g in state.groups_of.get(locked.host, ()) if g.group.vendor == locked.vendor
                       and all(i in g.pos_of for i in locked.gpus)), None)
            if gs is not None:
                state.hold(gs, [gs.pos_of[i] for i in locked.gpus], locked.claim.vram_mib)
                index.refresh(gs)
        ports = state.ports.get(locked.host)
        if ports is not None and ports.take(locked.port) and not state.has_free_port(locked.host):
            index.drop_host(locked.host)


class _IdleMembers:
    """A class's groups on hosts that had a free GPU, or part of one, when the exchange step began, in class order:
    what its search for a host with idle GPUs walks. A trade swaps two replicas of the same GPUs and VRAM and then
    places one more, so no host gains free GPUs during the step, and no other host can offer any. Made once per
    class asked: the step had walked every group of every class it may use for each replica (54,000 groups, 95 %
    of them full, on the 2,000-host bench)."""

    def __init__(self, state: FleetState):
        self.state = state
        self.of: dict[int, list[int]] = {}

    def __call__(self, lists) -> list[int]:
        got = self.of.get(id(lists))
        if got is None:
            free, groups = self.state.gpus_free, self.state.groups
            got = self.of[id(lists)] = [gid for gid in lists.members if free[groups[gid].host.name] > 0]
        return got


def _trade_shape(d: Demand) -> tuple:
    """Replicas that can trade places where the devices allow (a trade checks the static filters both ways):
    the same GPUs and VRAM, any smallest device size."""
    return (d.framework, d.gpus, d.vram_mib)


_WEIGHT, _WEIGHT_KEY = itemgetter(0, 1), itemgetter(0, 1, 2)  # a partner entry's (CPUs, memory), and its key


class _Partners:
    """The replicas of one trade shape a trade may move, CPU-light first: runs of equal CPUs and memory, each in
    key order (sorted as (CPUs, memory, key) would be). A walk for a partner asks about CPUs and memory once
    per run, not once per replica: runs are hundreds of replicas long (a dozen sizes per shape on the bench
    fleets), and three in four of the candidates the trade steps of a 2,000-host plan looked at belonged to a
    run whose memory was already known not to do. Entries are (CPUs, memory, key, assignment, demand)."""

    __slots__ = ("_runs",)

    def __init__(self, entries: Iterable[tuple]):
        self._runs: dict[tuple, list[tuple]] = {
            weight: list(run) for weight, run in groupby(sorted(entries, key=_WEIGHT_KEY), key=_WEIGHT)}

    def runs(self) -> Iterator[tuple[float, int, list[tuple]]]:
        """(CPUs, memory, the run's entries), lightest first; no run is empty."""
        for (cpus, ram), run in self._runs.items():
            yield cpus, ram, run

    def without(self, drop: Callable[[tuple], bool]) -> _Partners:
        out = _Partners(())
        for weight, run in self._runs.items():
            kept = [e for e in run if not drop(e)]
            if kept:
                out._runs[weight] = kept
        return out

    def put(self, entry: tuple, old: Assignment) -> None:
        """``entry`` takes ``old``'s place (a replica that moved), or joins its run if ``old`` is not here."""
        weight = entry[:2]
        run = self._runs.get(weight)
        if run is None:  # a run the caller left out (rebalance drops replicas on short hosts): in weight order
            self._runs[weight] = [entry]
            self._runs = dict(sorted(self._runs.items()))
            return
        i = bisect_left(run, entry[:3])
        if i < len(run) and run[i][3] is old:
            run[i] = entry
        else:
            run.insert(i, entry)


#: every field of a demand but its replica number
_BUT_REPLICA = attrgetter(*(f.name for f in fields(Demand) if f.name != "replica" and f.init))


def _sorted_by_runs(demands: list[Demand], key: Callable[[Demand], tuple]) -> list[Demand]:
    """``demands``, given in (deployment, replica) order, sorted by ``key`` and then the replica number: the
    key is asked once per run of consecutive demands alike but for their number (the replicas of a
    deployment), and the runs are sorted stably. The same order as sorting every demand by ``key`` plus its
    number, as the fresh pass did: runs with equal keys are of one deployment (the keys hold its name) and
    follow each other in replica order. On the 2,000-host bench, 9,145 replicas make 3,604 runs: the sort
    had been half of what a plan does before its first search."""
    runs: list[tuple[tuple, list[Demand]]] = []
    last = None
    for d in demands:
        alike = _BUT_REPLICA(d)
        if alike != last:
            runs.append((key(d), [d]))
            last = alike
        else:
            runs[-1][1].append(d)
    runs.sort(key=lambda run: run[0])
    return [d for _, run in runs for d in run]


def _biggest_first(d: Demand) -> tuple:
    return (-d.gpus, 0 if d.whole else 1, -(d.vram_mib or 0), -d.min_vram_mib, -d.cpus, -d.ram_mib,
            d.deployment, d.replica)


def _capacity_per_gpu(fleet: Fleet) -> tuple[float | None, float | None]:
    """Allocatable CPUs and MiB of memory per GPU over the active GPU hosts that declare them (None: none do)."""
    out = []
    for have in (lambda h: h.allocatable_cpus, lambda h: h.allocatable_ram_mib):
        total = gpus = 0
        for h in fleet.hosts:
            n = sum(len(g.devices) for g in h.groups)
            if h.active and n and have(h) is not None:
                total += have(h)
                gpus += n
        out.append(total / gpus if gpus and total > 0 else None)
    return out[0], out[1]


def _by_size(per_gpu: tuple[float | None, float | None], bins: dict[str, list[Demand]] | None = None):
    """The fresh pass's order when replicas ask CPUs or memory: multi-GPU replicas first (most GPUs first),
    then every one-GPU replica, whole or shared, by the sum of what it asks in GPUs' worth (its GPU share,
    its CPUs and memory over the fleet's per GPU), then CPU-only ones. GPU-first (all whole replicas
    before any shared one) filled the 8-GPU hosts with whole replicas and left the shared ones, which
    ask more CPUs per GPU, GPUs without CPUs beside them. Vector bin packing's first-fit-decreasing by
    the sum of normalised sizes (Panigrahy et al., "Heuristics for Vector Bin Packing", 2011); on
    Alibaba's openb trace 93.9 % -> 95.6 % of GPUs allocated in one plan (bench/placement.py --openb),
    the synthetic CPU-and-memory workload within 0.1 point.

    With ``bins`` (stack.placement.packing), a shared claim goes with the claims a dry run put on its device,
    ranked by what they ask together, largest first among them: best fit then pairs them as the dry run did."""
    cpus, ram = per_gpu

    def asks(d: Demand) -> float:
        return gpu_share(d) + (d.cpus / cpus if cpus else 0) + (d.ram_mib / ram if ram else 0)

    together: dict[int, float] = {}

    def key(d: Demand) -> tuple:
        b = bins.get(d.key) if bins else None
        if b is None:
            return (-d.gpus if d.gpus > 1 else 0, 0 if d.gpus else 1, -asks(d), "") + _biggest_first(d)
        got = together.get(id(b))
        if got is None:
            got = together[id(b)] = sum(asks(x) for x in b)
        return (0, 0, -got, b[0].key) + _biggest_first(d)

    return key


class _DeviceSize:
    """The device size a demand most likely lands on: the one with the most devices among the groups it may
    use (ties: the smaller); None when no group may hold it."""

    def __init__(self, index: CandidateIndex):
        self.index = index
        self.cache: dict[tuple, int | None] = {}

    def __call__(self, d: Demand) -> int | None:
        key = d.static
        if key not in self.cache:
            count: dict[int, int] = {}
            for lists in self.index.eligible(d):
                group = lists.rep.group
                count[group.vram_mib] = count.get(group.vram_mib, 0) + len(group.devices) * len(lists.members)
            self.cache[key] = min(count, key=lambda s: (-count[s], s)) if count else None
        return self.cache[key]


class _Constrainedness:
    """How many device groups (hosts, for CPU-only replicas) a demand could ever use: replicas with
    few places go first, so replicas that can run anywhere never take the few devices a
    constrained deployment needs (most-constrained-first)."""

    def __init__(self, fleet: Fleet, index: CandidateIndex):
        self.fleet, self.index = fleet, index
        self.cache: dict[tuple, int] = {}
        #: active hosts by their labels: [how many, one of them] (the label filter reads nothing else)
        self._by_labels: dict[tuple, list] | None = None

    def __call__(self, d: Demand) -> int:
        if d.manual is not None:
            return len({name for name, _ in d.manual})
        key = d.static if d.gpus else ("no GPU", d.labels)  # needing no GPU: only its labels filter hosts
        got = self.cache.get(key)
        if got is None:
            if d.gpus:
                got = sum(len(lists.members) for lists in self.index.eligible(d))
            else:
                if self._by_labels is None:
                    self._by_labels = {}
                    for h in self.fleet.hosts:
                        if h.active:
                            self._by_labels.setdefault(h.labels, [0, h])[0] += 1
                got = sum(n for n, h in self._by_labels.values() if LABELS(h, None, d))
            self.cache[key] = got
        return got


#: GPU replicas to place below which a run's figures per GPU are taken over every replica of the plan
RATIO_SAMPLE = 32


def _plan_ratios(fresh: list[Demand], demands: list[Demand]) -> tuple[float, float] | None:
    """The CPUs and memory per GPU a run's preferences weigh hosts by (``_ratios``): over the replicas to place,
    not the kept ones too, unless they are fewer than RATIO_SAMPLE GPU replicas, then over every replica of the plan.

    Over every replica always, replicas arriving in 20 batches with the lock (bench/placement.py) gained 0.14-0.24
    points of GPUs on 40 synthetic fleets and lost 0.2-0.6 on Alibaba's openb trace (default 95.6 -> 95.4 %,
    cpu250 93.4 -> 92.8 %). Over the replicas to place always, a deployment arriving alone (a plan per
    deployment, with the lock: `bench/placement.py --online`) set the figures by itself: its own CPUs per GPU were
    the average, no host was ever short for it, and nothing kept CPU-rich hosts for heavier ones: on the
    CPU-and-memory workload's ten fleets 93.5 % and 95.1 % of the GPUs were allocated in the end at load 1.0 and
    1.3 (lowest 88.6 %), where 20 batches allocate 97.3 % and 97.7 %; with the plan's figures 97.5 % and 97.7 %
    (lowest 95.6 %), batches unchanged. Alibaba's trace in 400 arrivals of about 20 tasks: 95.34 -> 95.45 %."""
    if sum(1 for d in fresh if d.gpus) >= RATIO_SAMPLE:
        return _ratios(fresh)
    return _ratios(demands)


def _ratios(demands: list[Demand]) -> tuple[float, float] | None:
    """CPUs and MiB of memory per GPU over the GPU replicas to place (a shared claim counts its share of an
    80 GiB device); None when none asks for CPUs or memory."""
    gpus = cpus = ram = 0.0
    for d in demands:
        if d.gpus:
            gpus += gpu_share(d)
            cpus += d.cpus
            ram += d.ram_mib
    if not gpus or not (cpus or ram):
        return None
    return cpus / gpus, ram / gpus


def _split_vram(state: FleetState, demand: Demand, hosts) -> frozenset[str]:
    """Of ``hosts`` (those a shape's walk turned away for want of free VRAM), the names of those with the VRAM
    a shared claim asks free on devices of a kind it may use, only not on one device (or on few enough):
    packing, not capacity, is what it lacks."""
    if demand.whole or not demand.gpus:
        return frozenset()
    need = demand.vram_mib * demand.gpus
    usable: dict[tuple, bool] = {}  # the filters read only the group's kind: asked once per kind
    out = set()
    for host in hosts:
        for gs in state.groups_of[host.name]:
            g = gs.group
            kind = (g.framework, g.vendor, g.model, g.vram_mib)
            ok = usable.get(kind)
            if ok is None:
                ok = usable[kind] = all(f(host, g, demand) for f in (FRAMEWORK, VENDOR, GPU_MODEL, VRAM_SIZE))
            if ok and gs.shareable_free() >= need:
                out.add(host.name)
                break
    return frozenset(out)


class _GiveUp(Exception):
    """A tier with per-host preference checks ran out of budget: the next tier searches without them."""


class _HostsLacking:
    """Hosts a replica may not take in one search tier, quacking like the set the index skips hosts
    by: the avoided ones, those short of its CPUs or memory (a hard rule), and those the honoured
    preferences' per-host checks reject (stack.placement.preferences). Per-host checks are a
    preference, so they give up after a budget of candidates and the next tier searches without them."""

    __slots__ = ("avoid", "cpu", "ram", "need_cpu", "need_ram", "checks", "budget", "walks", "key", "seen")

    #: candidates a tier with per-host checks looks at before it gives up (the last tier is exhaustive)
    CHECK_BUDGET = 256

    def __init__(self, avoid, state: FleetState, demand: Demand, checks: tuple = (), walks=None, key: tuple = ()):
        """``key``: what the checks' answers depend on besides the host (for ``walks``, what searches learnt)."""
        self.avoid, self.checks, self.walks, self.key = avoid, checks, walks, key
        self.budget = self.CHECK_BUDGET
        # read on every candidate the index walks past: kept local
        self.cpu, self.ram = state.cpu_free, state.ram_free
        self.need_cpu, self.need_ram = needs(demand.cpus, demand.ram_mib)
        #: what walks learnt for this ask, by list (looked up once here, not on every pick)
        self.seen = None if walks is None else walks.for_ask((self.need_cpu, self.need_ram, key))

    def __contains__(self, host: str) -> bool:
        return host in self.avoid or not self.passes(host)

    def __bool__(self) -> bool:
        return True

    def first(self, lst: list, i: int, lists=None) -> tuple | None:
        """The rankers' ``_first`` for this set: the same checks as ``in``, inlined in one loop. With
        ``lists`` (the class ``lst`` belongs to), what earlier walks of the same list learnt is reused
        (see ``_Walks``): on a 4,000-host plan the walks past hosts short of CPUs or turned away by a
        preference had grown to most of its time."""
        avoid, cpu, ram, checks = self.avoid, self.cpu, self.ram, self.checks
        need_cpu, need_ram = self.need_cpu, self.need_ram
        if self.walks is None or lists is None:
            for e in islice(lst, i, None):
                host = e[1]
                if host in avoid:
                    continue
                c = cpu[host]
                if c is not None and c < need_cpu:
                    continue
                r = ram[host]
                if r is not None and r < need_ram:
                    continue
                if not checks:
                    return e
                self.budget -= 1
                if self.budget < 0:
                    raise _GiveUp
                for check in checks:  # a loop, not any(): no generator per entry (a tenth of the plan's time)
                    if check(host):
                        break
                else:
                    return e
            return None
        low = lst[i]  # i < len(lst): rankers._first returns at once past the end
        seen = self.walks.of(self, self.seen, lst, lists, low)
        # 1. entries an earlier walk found fit for such a replica (brought up to date by ``of``)
        fits = seen.fits
        for k in range(bisect_left(fits, low), len(fits)):
            e = fits[k]
            if e[1] not in avoid:
                return e
        # 2. the rest of the list, remembering which entries fit
        if seen.end is None:
            return None  # every entry from here on was looked at
        pos = bisect_left(lst, seen.end)
        try:
            for e in islice(lst, pos, None):
                host = e[1]
                c = cpu[host]
                r = ram[host]
                if (c is not None and c < need_cpu) or (r is not None and r < need_ram):
                    pos += 1
                    continue
                if checks:
                    self.budget -= 1
                    if self.budget < 0:
                        raise _GiveUp
                    turned_away = False
                    for check in checks:
                        if check(host):
                            turned_away = True
                            break
                    if turned_away:
                        pos += 1
                        continue
                fits.append(e)
                pos += 1
                if host not in avoid:
                    return e
            return None
        finally:
            seen.end = lst[pos] if pos < len(lst) else None

    def exhausted(self, lst: list, lists, i: int) -> bool:
        """No entry of ``lst`` from ``i`` on passes for this replica's ask (avoided hosts aside), by what the
        walks learnt, with no host of the class changed since: a pick there would find nothing."""
        seen = self.seen.get(id(lst)) if self.seen is not None else None
        if seen is None or seen.end is not None or seen.synced != len(lists.log):
            return False
        low = lst[i]
        return seen.start <= low and (not seen.fits or seen.fits[-1] < low)

    def passes(self, host: str) -> bool:
        """The host has the CPUs and memory and no check turns it away (``first``'s test but for ``avoid``)."""
        c, r = self.cpu[host], self.ram[host]
        if (c is not None and c < self.need_cpu) or (r is not None and r < self.need_ram):
            return False
        if self.checks:
            self.budget -= 1
            if self.budget < 0:
                raise _GiveUp
            for check in self.checks:
                if check(host):
                    return False
        return True


class _Seen:
    """What walks of one list with one ask found: every entry from ``start`` up to (not including) ``end``
    (None: to the end of the list) was looked at, and ``fits`` are those that passed, in list order."""

    __slots__ = ("synced", "start", "end", "fits")

    def __init__(self, synced: int, start: tuple):
        self.synced, self.start, self.end, self.fits = synced, start, start, []


class _Walks:
    """What the walks of the index's sorted lists learnt, for the next walk of the same list.

    Searches spent most of their time walking past hosts whose GPUs are free but whose CPUs or memory
    are short, or that a preference turns away: the same hosts, walked past again by every replica
    asking the same, and more of them the bigger the fleet (time grew faster than its size). For each
    list and ask (CPUs, memory, the preferences' checks) this keeps which stretch of the list was looked
    at and which of its entries passed; the next walk from inside that stretch looks only at those (for
    the hosts it avoids) and walks on from where the last one stopped. Whether an entry passes depends on
    its own host only, so when hosts of the class change (its ``log``: their entries moved, or their
    GPUs, CPUs or memory changed) only their entries are looked at again; more than PATCH_MAX of them,
    and the stretch is forgotten.
    """

    PATCH_MAX = 16

    def __init__(self, index: CandidateIndex):
        self.index = index
        #: ask (CPUs, memory, the checks' key) -> id of a list -> what is known about it
        self.seen: dict[tuple, dict[int, _Seen]] = {}
        index.state.on_change = index.touch  # hosts whose GPUs, CPUs or memory change are logged

    def for_ask(self, ask: tuple) -> dict[int, _Seen]:
        """What is known for one ask, by list: ``of``'s ``table``."""
        table = self.seen.get(ask)
        if table is None:
            table = self.seen[ask] = {}
        return table

    def of(self, hosts: _HostsLacking, table: dict[int, _Seen], lst: list, lists, low: tuple) -> _Seen:
        """What is known about ``lst`` from entry ``low`` on, for the ask of ``table``, brought up to date."""
        key = id(lst)
        got = table.get(key)
        if got is not None and (low < got.start or (got.end is not None and got.end < low)):
            got = None  # the walk starts outside the stretch looked at
        log = lists.log
        if got is not None and got.synced != len(log):
            changed = set(log[got.synced:])
            if len(changed) > self.PATCH_MAX:
                got = None
            else:
                try:
                    self._patch(hosts, got, lst, lists, changed)
                except _GiveUp:
                    del table[key]  # half brought up to date: forgotten
                    raise
                got.synced = len(log)
        if got is None:
            got = table[key] = _Seen(len(log), low)
        return got

    def _patch(self, hosts: _HostsLacking, seen: _Seen, lst: list, lists, changed: set[str]) -> None:
        """The changed hosts' entries inside the stretch are looked at again; nothing else can have changed."""
        start, end = seen.start, seen.end
        seen.fits = [e for e in seen.fits if e[1] not in changed]
        for host in changed:
            for e in self.index.entries(lst, lists, host):
                if start <= e and (end is None or e < end) and hosts.passes(host):
                    insort(seen.fits, e)


class _Run:
    """One placement run: the state, the index, and what has been decided so far."""

    def __init__(self, fleet: Fleet, state: FleetState, index: CandidateIndex, strategy: str):
        self.fleet, self.state, self.index, self.strategy = fleet, state, index, strategy
        self.ranker = RANKERS[strategy]
        #: what this run placed, by (deployment, replica), in the order placed (a dict: trades and swaps take
        #: replicas back by key; a list searched by identity had grown to a tenth of a 2,000-host plan)
        self.placed: dict[tuple[str, int], Assignment] = {}
        self.unplaced: list[Unplaced] = []
        self.move_reasons: dict[str, str] = {}
        self._failed: list[tuple[Demand, str | None]] = []
        #: CPUs and MiB per whole GPU the GPU replicas ask on average (set by place)
        self.ratios: tuple[float, float] | None = None
        #: the least CPUs and memory any GPU replica of this plan asks, as ``needs`` thresholds (set by place)
        self.least = needs(0, 0)
        #: (static shape, VRAM) -> the (CPUs, memory) asks no host could take (placing only ever shrinks
        #: capacity, so an ask at least as big in both fails too)
        self._hopeless: dict[tuple, list[tuple[float, int]]] = {}
        #: hosts for replicas that need no GPU (set by place)
        self.hosts: HostIndex | None = None
        #: what searches learnt about the index's lists (see _Walks; set by place when replicas ask for
        #: CPUs or memory: only then do searches walk past hosts that lack them)
        self.walks: _Walks | None = None
        #: the lock's replicas not kept, whose containers still run during the apply (set by _place)
        self.departing: tuple[LockedReplica, ...] = ()
        #: how many replicas of the plan need GPUs (set by _place)
        self.gpu_replicas = 0
        #: what the preferences read (stack.placement.preferences; set by _place with the ratios)
        self.context: Context | None = None
        #: the fresh pass's first round: firm preferences are not given up (set by place_in_two_rounds)
        self.firm = False
        #: replicas that gave their room to smaller ones left over (give_way): key -> (host, how many took it)
        self.gave_way: dict[str, tuple[str, int]] = {}
        #: the plan's replicas by key (set by _place)
        self.by_key: dict[str, Demand] = {}
        #: how many device groups (hosts, for CPU-only replicas) a replica could ever use: the fresh pass's order,
        #: the repair's and the give-way's rule that the more constrained keep their place
        self.constrained = _Constrainedness(fleet, index)

    # ------------------------------------------------------------------ 3. and 4.: the Placement
    def finish(self, demands: list[Demand], prior: dict[str, LockedReplica] | None) -> Placement:
        self.explain_unplaced()  # 3. explain, against the final state the user will see
        wanted = {d.key for d in demands} if prior else set()  # 4. removed
        removed = tuple(Removed(key, lr.host, lr.gpus, lr.port) for key, lr in sorted((prior or {}).items())
                        if key not in wanted)
        return Placement(self.strategy, tuple(sorted(self.placed.values(), key=lambda a: (a.deployment, a.replica))),
                         tuple(sorted(self.unplaced, key=lambda u: (u.deployment, u.replica))), removed,
                         dict(sorted(self.move_reasons.items())), self.departing)

    def close(self) -> None:
        """The run is over: the state forgets the index it told of changes (see _Walks), the one cycle a run
        makes. Then reference counting frees the run's state and index as soon as the run is dropped; through
        that cycle, they waited for the next cyclic collection, which walked 30,000 objects for 17-22 ms after
        each 2,000-host plan."""
        self.state.on_change = None

    # ------------------------------------------------------------------ the second order
    #: left-over shapes the fragmentation check looks at (each a walk over the groups it may use)
    FRAGMENTATION_SHAPES = 32
    #: the share of GPU replicas a plan may leave over and still count as nearly fitting
    NEARLY_FITS = 0.10

    def wants_device_order(self) -> bool:
        """The plan nearly fits (at most NEARLY_FITS of its GPU replicas left over), its replicas ask CPUs or
        memory (else the first order already places shared claims biggest first), and a shared claim was
        left over although some host has the CPUs, memory, a port and, over its shareable devices together,
        the VRAM it asks: only how claims were paired on devices stopped it. Then ``place`` tries its second
        order. A plan that leaves many replicas over is short of capacity, not of packing: there the orders
        only trade replicas for GPUs, and a second run would double its time for nothing."""
        if self.ratios is None:
            return False
        gpu_left = sum(1 for d, _ in self._failed if d.gpus)
        if not gpu_left or gpu_left > self.NEARLY_FITS * self.gpu_replicas:
            return False
        seen: set[tuple] = set()
        for d, _ in self._failed:
            if d.gpus != 1 or d.whole or d.manual is not None:
                continue
            shape = (d.static, d.vram_mib, d.cpus, d.ram_mib)
            if shape in seen:
                continue
            if len(seen) >= self.FRAGMENTATION_SHAPES:
                return False
            seen.add(shape)
            for lists in self.index.eligible(d):
                for gid in lists.members:
                    gs = self.state.groups[gid]
                    host = gs.host.name
                    if self.state.host_fits(host, d) and self.state.has_free_port(host) and \
                            gs.shareable_free() >= d.vram_mib:
                        return True
        return False

    def better_than(self, other: "_Run") -> bool:
        """This run places at least as many replicas and GPUs as ``other``, and more of one."""
        na, nb = len(self.placed), len(other.placed)
        ga, gb = self.gpus_allocated(), other.gpus_allocated()
        return na >= nb and ga >= gb - 1e-9 and (na > nb or ga > gb + 1e-9)

    def gpus_allocated(self) -> float:
        """Whole GPUs' worth allocated: a whole claim counts 1 per device, a shared one its share of the device."""
        total = 0.0
        for a in self.placed.values():
            if a.gpus:
                total += len(a.gpus) if a.whole else len(a.gpus) * a.vram_mib / self._group_of(a).group.vram_mib
        return total

    # ------------------------------------------------------------------ 1. sticky
    def keep(self, demand: Demand, locked: LockedReplica) -> bool:
        reason, gs, positions = self._keep_reason(demand, locked)
        if reason:
            self.move_reasons[demand.key] = reason
            return False
        self._commit(demand, locked.host, gs, positions, locked.port, "kept", "", locked.host)
        return True

    def _keep_reason(self, demand: Demand, locked: LockedReplica):
        # a changed size that still fits where the replica is keeps it there (checked below)
        if not locked.claim.same_devices(demand.claim):
            return "demand_changed", None, None
        host = self.fleet.host(locked.host)
        if host is None:
            return "host_removed", None, None
        if not host.active:
            return "host_cordoned", None, None
        gs, positions = None, []
        if demand.gpus:
            gs = next((g for g in self.state.groups_of[host.name] if g.group.vendor == locked.vendor
                       and all(i in g.pos_of for i in locked.gpus)), None)
            if gs is None or len(locked.gpus) != demand.gpus:
                return "devices_gone", None, None
            positions = [gs.pos_of[i] for i in locked.gpus]
            for pos, uuid in zip(positions, locked.uuids):
                now = gs.group.devices[pos].uuid
                if uuid and now and uuid != now:
                    return "devices_replaced", None, None
        for f in applicable(demand, PIPELINE):
            if f.code in ("free_vram", "free_port"):
                continue
            if not f(host, gs.group if gs else None, demand, self.state):
                if f.code in ("free_cpu", "free_ram", "vram_size") and locked.claim != demand.claim:
                    return "demand_changed", None, None
                return f"no_longer_matches:{f.code}", None, None
        if gs is not None and not _positions_free(gs, positions, demand):
            if locked.claim != demand.claim:
                return "demand_changed", None, None
            return self._taken("devices_taken", [(host.name, locked.vendor, i) for i in locked.gpus]), None, None
        ports = self.state.ports[host.name]
        if not ports.start <= locked.port <= ports.end:
            return "port_out_of_range", None, None
        if locked.port in ports.used:
            return self._taken("port_taken", [(host.name, locked.port)]), None, None
        return "", gs, positions

    def _taken(self, code: str, places: list[tuple]) -> str:
        """``code``, and ``:STACK`` where other stacks' locks hold some of ``places`` (two locks written apart)."""
        stacks = sorted({self.state.held_at[p] for p in places if p in self.state.held_at})
        return f"{code}:{','.join(stacks)}" if stacks else code

    # ------------------------------------------------------------------ 2. fresh
    def place_fresh(self, demand: Demand, locked: LockedReplica | None) -> None:
        self._place_one(demand, locked.host if locked else None)

    def place_in_two_rounds(self, demands: Iterable[Demand], prior: dict[str, LockedReplica]) -> None:
        """The fresh pass over equally constrained replicas, where replicas ask CPUs or memory. In the first round
        firm preferences are never given up (preferences.KeepCpusPerGpu: no replica strands a host's GPUs while
        a lighter one behind it could use them); the second places what waited, in order. A run of equally
        constrained replicas at a time, so one that waits still goes before every less constrained replica:
        over the whole pass at once, openb's gpuspec33 list (a third of the tasks name GPU models) lost 1.2
        points of GPUs allocated."""
        start = len(self._failed)
        # what earlier second rounds found no place for still has none (capacity only shrinks); what the first
        # round finds is only so while firm preferences hold, and is dropped after it
        settled = dict(self._hopeless)
        self.firm = True
        for demand in demands:
            self.place_fresh(demand, prior.get(demand.key) if prior else None)
        self.firm = False
        waited = self._failed[start:]
        del self._failed[start:]
        self._hopeless = settled
        for demand, previous in waited:
            self._place_one(demand, previous)

    def _place_one(self, demand: Demand, previous: str | None) -> None:
        """Where the search chooses, or into the failed list; ``previous``: the host the lock had it on."""
        choice = self._choose(demand)
        if choice is None:
            self._failed.append((demand, previous))
            return
        host_name, gs = choice
        positions = choose_devices(gs, demand, demand.allowed_on(host_name)) if gs is not None else []
        port = self.state.ports[host_name].lowest()
        assert port is not None and positions is not None  # the filters checked both
        self._commit_placed(demand, host_name, gs, positions, port, previous)

    def _choose(self, demand: Demand) -> tuple[str, GroupState | None] | None:
        if demand.gpus == 0 and demand.manual is None:
            avoid = self.state.hosts_running(demand.deployment)
            host = self.hosts.best(demand, avoid) if avoid else None
            if host is None and not (avoid and demand.spread_hosts):
                host = self.hosts.best(demand, frozenset())
            return None if host is None else (host, None)
        if demand.manual is not None:
            return self._choose_by_scan(demand, self.state.hosts_running(demand.deployment))

        # capacity only shrinks during a run: a shape nothing fit will never fit later in it (asked first:
        # most of the calls of a plan that leaves many replicas over end here)
        shape = (demand.static, demand.vram_mib)
        failed = self._hopeless.get(shape)
        if failed and self._hopeless_shape(demand, failed):
            return None
        avoid = self.state.hosts_running(demand.deployment)
        ctx = self.context
        hard = frozenset(avoid) if demand.spread_hosts else frozenset()  # spread: hosts is a rule
        sized = bool(demand.cpus or demand.ram_mib)
        for honoured in tiers(ctx, demand, self.firm):
            skip = set(hard)
            checks, key = [], []
            for pref in honoured:
                skip |= pref.avoided(ctx, demand) or frozenset()
                check = pref.skips(ctx, demand)
                if check is not None:
                    checks.append(check)
                    key.append(pref.skips_key(demand))
            hosts = _HostsLacking(skip, self.state, demand, tuple(checks), self.walks, tuple(key)) \
                if sized or checks else skip
            try:
                gs = self.index.best(demand, self.ranker, hosts)
            except _GiveUp:
                continue
            if gs is not None:
                return gs.host.name, gs
        if not hard:
            c, r = demand.cpus, demand.ram_mib  # kept minimal: asks this one covers go
            self._hopeless[shape] = [(c, r)] + [(x, y) for x, y in failed or () if x < c or y < r]
        return None

    def _hopeless_shape(self, demand: Demand, failed: list | None = None) -> bool:
        """A replica of this shape asking no more CPUs and memory found no place since capacity last grew."""
        if failed is None:
            failed = self._hopeless.get((demand.static, demand.vram_mib))
        if failed:
            cpus, ram = demand.cpus, demand.ram_mib
            for c, r in failed:  # a loop, not any(): asked for every replica of every pass
                if c <= cpus and r <= ram:
                    return True
        return False

    def _choose_by_scan(self, demand: Demand, avoid: set[str]):
        """CPU-only replicas and manual GPU selection: few candidates, checked one by one."""
        filters = applicable(demand)
        hosts = self.fleet.hosts if demand.manual is None else \
            [h for h in self.fleet.hosts if h.name in {n for n, _ in demand.manual}]
        best = None
        for host in hosts:
            groups = [None] if demand.gpus == 0 else [gs.group for gs in self.state.groups_of[host.name]]
            for group in groups:
                if not all(f(host, group, demand, self.state) for f in filters):
                    continue
                gs = self.state.group_state(host.name, group) if group is not None else None
                key = self._scan_rank(host, gs, demand, avoid)
                if best is None or key < best[0]:
                    best = (key, host.name, gs)
        return None if best is None else (best[1], best[2])

    def _scan_rank(self, host, gs: GroupState | None, demand: Demand, avoid: set[str]) -> tuple:
        shared = host.name in avoid  # soft anti-affinity: hosts already running it go last
        load = self.state.replicas_on[host.name]
        if gs is None:  # no GPU needed: keep GPU hosts for GPU work
            return (shared, bool(host.groups), self.ranker.host_rank(load), host.name)
        return (shared, *self.ranker.scan_rank(gs, host.name))

    # ------------------------------------------------------------------ 2b. repair
    #: candidate (group, replica) pairs the repair step looks at, over the whole run
    REPAIR_BUDGET = 20_000
    #: replicas with nowhere to go looked at, swaps of them, and the candidates their own repairs look at, in all
    REPAIR_CHAIN_BUDGET = 2_000
    #: candidates more constrained than the replica left over, tried once the others gave no room, in all
    REPAIR_LATER_BUDGET = 2_000
    #: pairs of replicas of one host that might make room together, in all
    REPAIR_PAIR_BUDGET = 2_000

    def repair(self, by_key: dict[str, Demand], constrained) -> None:
        """A replica nothing fit takes the place of a replica at least as flexible that this plan placed
        (new or moved, never a kept one), if that one fits somewhere else, or takes the place of a third the
        same way (a chain of two moves): one more replica placed, none lost, so constrained replicas are never
        starved by flexible ones and soft anti-affinity never costs a placement. A replica needing no GPU on the
        group's host may make the room too, and a more constrained replica once nothing else does; a replica
        needing no GPU takes the place of another needing none (``_repair_no_gpu``). Bounded: at most
        REPAIR_BUDGET candidates in all, REPAIR_CHAIN_BUDGET for the chains, REPAIR_LATER_BUDGET for the more
        constrained (on the main budget they crowded out the moves that pay: 9 more replicas left over per
        CPU-and-memory fleet of the bench). Two replicas of one host may make the room together
        (``_repair_two``). Chains, the more constrained and pairs only where few are left over. Instances that
        all fit, against a MILP of the most replicas placeable (``bench/placement.py --fits``: CPUs, memory,
        selectors, spread: hosts): 2 of 1,185 small ones leave one over (6 before the chains and these moves),
        8 of 1,346 larger ones (11 before the pairs)."""
        failed, self._failed = self._failed, []
        if not any(d.manual is None for d, _ in failed):
            self._failed = failed
            return
        # chains, the more constrained and pairs only where few are left over (as for the re-pack), a plan that
        # nearly fits: where hundreds are, the give-way step trades for them. There the pairs moved replicas it
        # would rather trade (CPU-and-memory fleets of the bench: 67 -> 75 left over per fleet; 0.07 s more on
        # the process bench), and the chains and the more constrained cost 0.01 s for no replica more
        few = len(failed) <= self.REPACK_ITEMS
        budget = [self.REPAIR_BUDGET, *((self.REPAIR_CHAIN_BUDGET, self.REPAIR_LATER_BUDGET, self.REPAIR_PAIR_BUDGET)
                                        if few else (0, 0, 0))]
        on_group: dict[int, list[tuple]] = {}  # group id -> _repair_entry of the replicas a repair may move
        on_host: dict[str, list[tuple]] = {}  # host -> the same, of replicas needing no GPU
        for a in self.placed.values():
            if a.status != "kept":
                if a.vendor is not None:
                    on_group.setdefault(self._group_of(a).gid, []).append(self._repair_entry(a, by_key, constrained))
                elif by_key[a.key].manual is None:
                    on_host.setdefault(a.host, []).append(self._repair_entry(a, by_key, constrained))
        hopeless: set[tuple] = set()  # shapes no swap helped since the last success
        for demand, previous in failed:
            shape = (demand.static, demand.vram_mib, demand.cpus, demand.ram_mib,
                     demand.spread_hosts and demand.deployment)
            if demand.manual is None and budget[0] > 0 and shape not in hopeless and (
                    self._repair_one(demand, previous, by_key, constrained, budget, on_group, on_host=on_host)
                    is not None if demand.gpus
                    else self._repair_no_gpu(demand, previous, constrained, budget, on_host)):
                hopeless.clear()
                continue
            hopeless.add(shape)
            self._failed.append((demand, previous))

    #: a re-pack is tried only on pools this small: an exact search stays cheap (see repack)
    REPACK_ITEMS, REPACK_GROUPS, REPACK_NODES = 40, 48, 50_000

    def repack(self, by_key: dict[str, Demand]) -> None:
        """Whole-GPU replicas nothing fit, when few: search exactly (bounded) for an arrangement of this
        plan's flexible whole-GPU replicas (new or moved, never kept) and the unplaced ones over the
        groups they may use that allocates more GPUs without placing fewer replicas (then more replicas,
        then fewer moves), and apply it. A moved replica stays placed; a new one may give way to a bigger.
        Biggest-first best fit misses such arrangements on tight fleets (hosts of 5, 8, 7, 5, 6 GPUs and
        replicas of 6, 6, 5, 4, 3, 2, 2, 2, 1 fit exactly, but not in that order)."""
        failed = [(d, prev) for d, prev in self._failed if d.gpus and d.whole and d.manual is None
                  and not d.spread_hosts]
        if not failed or len(failed) > self.REPACK_ITEMS:
            return
        frameworks = {d.framework for d, _ in failed}
        placed = [(a, d) for a, d in ((a, by_key[a.key]) for a in self.placed.values()
                                      if a.status != "kept" and a.whole and a.vendor is not None)
                  if d.framework in frameworks and d.manual is None and not d.spread_hosts]
        items = placed + [(None, d) for d, _ in failed]
        if len(items) > self.REPACK_ITEMS:
            return
        static: dict[tuple, list[int]] = {}  # the groups each shape may use, from the index's classes
        for _, d in items:
            key = d.static
            if key not in static:
                static[key] = [gid for lists in self.index.eligible(d) for gid in lists.members]
                if len(static[key]) > self.REPACK_GROUPS:
                    return
        gids = sorted({g for v in static.values() for g in v})
        if len(gids) > self.REPACK_GROUPS:
            return
        # capacity once the placed items are taken back: free whole devices per group; CPUs, memory, ports per host
        free = {g: self.state.groups[g].claims.count(0) for g in gids}
        hosts = {self.state.groups[g].host.name for g in gids}
        cpu = {h: self.state.cpu_free[h] for h in hosts}
        ram = {h: self.state.ram_free[h] for h in hosts}
        ports = {h: self.state.ports[h].free_count() for h in hosts}
        where: list[int | None] = []
        for a, d in items:
            if a is None:
                where.append(None)
                continue
            gs = self._group_of(a)
            where.append(gs.gid)
            if gs.gid in free:
                free[gs.gid] += len(a.gpus)
            if a.host in hosts:
                cpu[a.host] = None if cpu[a.host] is None else cpu[a.host] + d.cpus
                ram[a.host] = None if ram[a.host] is None else ram[a.host] + d.ram_mib
                ports[a.host] += 1
        order = sorted(range(len(items)), key=lambda i: _biggest_first(items[i][1]))
        # a replica this plan places new may give its place to a bigger one; a moved one (it runs now) may not
        optional = [a is None or a.status == "new" for a, _ in items]
        after = [0] * (len(order) + 1)
        for k in range(len(order) - 1, -1, -1):
            after[k] = after[k + 1] + items[order[k]][1].gpus
        current = (sum(d.gpus for _, d in placed), len(placed), 0)
        best = [current, None]
        nodes = [self.REPACK_NODES]
        choice: list[int | None] = [None] * len(items)
        idle = [sum(free.values())]  # devices still free over the groups searched
        # Symmetry, cut (which replica moves where is the only difference between the branches cut; it breaks
        # ties alone). Groups alike for what is left to place (alone on their host among those searched, of one
        # class, with as many devices, ports, CPUs and memory free) are tried once per node, the first in gid
        # order, and the replica's own group always; and of replicas alike in all they ask, next to each other in
        # the order, each goes on a group no earlier in that order than the one before it, or is left out only if
        # the one before it is.
        host_of = {g: self.state.groups[g].host.name for g in gids}
        per_host: dict[str, int] = {}
        for g in gids:
            per_host[host_of[g]] = per_host.get(host_of[g], 0) + 1
        kind = {g: self.index.class_of[g] if per_host[host_of[g]] == 1 else ("group", g) for g in gids}
        rank = {g: r for r, g in enumerate(gids)}
        for key in static:
            static[key].sort()

        def asks(i: int) -> tuple:
            d = items[i][1]
            return d.static, d.cpus, d.ram_mib, optional[i]  # (static holds the GPU count)

        same = [k > 0 and asks(order[k]) == asks(order[k - 1]) for k in range(len(order))]

        def search(k: int, gpus: int, count: int, moves: int) -> None:
            nodes[0] -= 1
            # at most what is left to place, in GPUs no more than the free devices hold: a branch that cannot
            # pass the best found in GPUs, then replicas, is cut (bench/placement.py --exact, hosts of 6, 6, 8, 5
            # and 5 GPUs, all taken: the arrangement that places one replica more took 5 million nodes to find,
            # past the budget; with this cut and the symmetry cuts below the whole search takes 14,300)
            if nodes[0] < 0 or (gpus + min(after[k], idle[0]), count + len(order) - k) < best[0][:2]:
                return
            if k == len(order):
                score = (gpus, count, -moves)
                if count >= current[1] and score > best[0]:
                    best[0], best[1] = score, list(choice)
                return
            i = order[k]
            d = items[i][1]
            home = where[i]
            alike: set[tuple] = set()
            lowest = -1
            if same[k]:
                before = choice[order[k - 1]]
                lowest = len(gids) if before is None else rank[before]
            for g in static[d.static]:
                h = host_of[g]
                if rank[g] < lowest or free[g] < d.gpus or ports[h] < 1 or \
                        (cpu[h] is not None and cpu[h] + 1e-9 < d.cpus) or (ram[h] is not None and ram[h] < d.ram_mib):
                    continue
                state = (kind[g], free[g], ports[h], cpu[h], ram[h], g == home)  # (its home is always tried)
                if state in alike:
                    continue
                alike.add(state)
                free[g] -= d.gpus
                idle[0] -= d.gpus
                ports[h] -= 1
                if cpu[h] is not None:
                    cpu[h] -= d.cpus
                if ram[h] is not None:
                    ram[h] -= d.ram_mib
                choice[i] = g
                search(k + 1, gpus + d.gpus, count + 1, moves + (g != home))
                choice[i] = None
                free[g] += d.gpus
                idle[0] += d.gpus
                ports[h] += 1
                if cpu[h] is not None:
                    cpu[h] += d.cpus
                if ram[h] is not None:
                    ram[h] += d.ram_mib
                if nodes[0] < 0:
                    return
            if optional[i]:
                search(k + 1, gpus, count, moves + (home is not None))

        search(0, 0, 0, 0)
        if best[1] is None or best[0][:2] <= current[:2]:
            return
        plan = best[1]
        moving = [i for i in range(len(items)) if plan[i] != where[i]]
        for i in moving:  # take back the ones that move or give way, then place every changed one
            a, d = items[i]
            if a is not None:
                self._take_back(a, d)
                if plan[i] is None:
                    self._failed.append((d, None))
        for i in sorted((i for i in moving if plan[i] is not None), key=lambda i: _biggest_first(items[i][1])):
            a, d = items[i]
            gs = self.state.groups[plan[i]]
            host = gs.host.name
            positions = choose_devices(gs, d, d.allowed_on(host))
            assert positions is not None  # the search counted the devices
            if a is not None:
                self._commit(d, host, gs, positions, self.state.ports[host].lowest(), a.status, a.reason,
                             a.previous_host)
            else:
                self._commit_placed(d, host, gs, positions, self.state.ports[host].lowest(), dict(failed).get(d))
        now_placed = {items[i][1].key for i in moving if items[i][0] is None and plan[i] is not None}
        self._failed = [(d, prev) for d, prev in self._failed if d.key not in now_placed]

    def retry(self) -> None:
        """Replicas nothing fit, tried again in order: the repair and the re-pack move capacity around."""
        failed, self._failed = self._failed, []
        self._hopeless.clear()
        for demand, previous in failed:
            self._place_one(demand, previous)

    def trade(self, last: bool = False) -> None:
        """2d. GPUs idle next to exhausted CPUs or memory: a CPU-heavy replica trades places with a CPU-light one
        so one left over fits (``exchange``); 2e. hosts still short of CPUs or memory for their idle GPUs trade
        until they are not (``rebalance``). Each followed by a retry: trades move CPUs and memory around.
        A trade swaps replicas of the same GPUs and VRAM, so no host's free devices or ports change: where the
        exchange found no host with the devices and a port for any replica left over, the rebalance could place
        none either, and does not run (the process bench's second run after the give-way: 126 left over, none
        with such a host; the rebalance's walk took a twentieth of the plan for nothing). ``last``: only the
        explanations follow (the run after a give-way), so the rebalance serves its retry alone and trades only
        for such hosts (at 4,000 hosts: 0.24 s of walks for nothing placed; the first run trades for every host
        short, which the give-way after it gains from: ten CPU-and-memory fleets at load 1.3 left 12 more over
        with the first run so restricted too)."""
        roomy = self.exchange(self.by_key)
        self.retry()
        if roomy is None or roomy:
            self.rebalance(self.by_key, roomy if last else None)
            self.retry()

    #: candidate exchanges the CPU step looks at, each time it runs
    EXCHANGE_BUDGET = 200_000

    def exchange(self, by_key: dict[str, Demand]) -> set[str] | None:
        """GPUs left idle on hosts whose CPUs or memory ran out: a replica nothing fit gets such a host's
        GPUs once a CPU-heavy replica there trades places with a CPU-light replica of the same GPUs and VRAM
        on a host with CPUs to spare (both new or moved, never kept; the devices must suit both: a smallest
        device size differs). Each trade must place the replica that was left over, or it is undone.
        Bounded: at most EXCHANGE_BUDGET candidates each time it runs (twice where a give-way applied).
        Returns the hosts where some replica left over that asks CPUs or memory had the devices and a port free,
        the only hosts where moving CPUs and memory can place one; None where the budget ran out before all were
        asked (any host may be one)."""
        failed = [(d, p) for d, p in self._failed if d.gpus and d.manual is None and (d.cpus or d.ram_mib)]
        if not failed:
            return set()
        made: list[tuple] = []

        def tradeable() -> tuple[dict[tuple, _Partners], dict[str, list[tuple]]]:
            if not made:  # made on the first host short of CPUs or memory only: a walk over all placed
                made.append(self._tradeable(by_key))
            return made[0]

        budget = [self.EXCHANGE_BUDGET]
        idle = _IdleMembers(self.state)
        placed: set[str] = set()
        hopeless: dict[tuple, list[tuple[float, int]]] = {}  # asks no trade helped, as in _choose
        roomy: set[str] = set()
        for u, previous in failed:
            if budget[0] <= 0:
                break
            shape = (u.static, u.vram_mib)
            if any(c <= u.cpus and r <= u.ram_mib for c, r in hopeless.get(shape, ())):
                continue  # (a replica alike found the same hosts: they are in ``roomy`` already)
            if self._exchange_for(u, previous, tradeable, budget, idle, roomy):
                placed.add(u.key)
                hopeless.clear()
            else:
                hopeless.setdefault(shape, []).append((u.cpus, u.ram_mib))
        self._failed = [(d, p) for d, p in self._failed if d.key not in placed]
        return None if budget[0] <= 0 else roomy

    def _exchange_for(self, u: Demand, previous, tradeable, budget: list[int], idle: "_IdleMembers",
                      roomy: set[str]) -> bool:
        """Whether a trade placed ``u``; the hosts that had the devices and a port for it join ``roomy``."""
        cpu, ram, gpus_free = self.state.cpu_free, self.state.ram_free, self.state.gpus_free
        for lists in self.index.eligible(u):
            for gid in idle(lists):
                gs = self.state.groups[gid]
                h1 = gs.host.name
                # the host's free GPUs, counted in whole devices, bound what any of its groups can give: most
                # hosts are turned away here without asking for devices (by 1e-6: a float sum of fractions)
                if gpus_free[h1] + 1e-6 < (u.gpus if u.vram_mib is None else u.gpus * u.vram_mib / lists.capacity):
                    continue
                if choose_devices(gs, u, u.allowed_on(h1)) is None or not self.state.has_free_port(h1):
                    continue  # no devices for it here: CPUs are not what is missing
                roomy.add(h1)
                short_cpu = 0.0 if cpu[h1] is None else u.cpus - cpu[h1]
                short_ram = 0 if ram[h1] is None else u.ram_mib - ram[h1]
                if short_cpu <= 1e-9 and short_ram <= 0:
                    continue  # it fits here already (a preference turned it away): not this step's case
                by_shape, on_host = tradeable()
                for x, dx in list(on_host.get(h1, ())):
                    partners = by_shape[_trade_shape(dx)]
                    for y_cpus, y_ram, run in partners.runs():
                        if dx.cpus - y_cpus + 1e-9 < short_cpu:
                            budget[0] -= 1
                            if budget[0] < 0:
                                return False
                            break  # the rest are heavier still
                        if dx.ram_mib - y_ram < short_ram:  # none of the run: each counts against the budget
                            if budget[0] < len(run):
                                budget[0] = -1
                                return False
                            budget[0] -= len(run)
                            continue
                        left, x_cpus, x_ram = budget[0], dx.cpus, dx.ram_mib  # as in rebalance: locals only
                        try:
                            for _, _, _, y, dy in run:
                                left -= 1
                                if left < 0:
                                    return False
                                h2 = y.host
                                if h2 == h1:
                                    continue
                                c2, r2 = cpu[h2], ram[h2]
                                if (c2 is not None and c2 + y_cpus - x_cpus < -1e-9) or \
                                        (r2 is not None and r2 + y_ram - x_ram < 0):
                                    continue
                                if self._trade(x, dx, y, dy, u, previous, gs):
                                    self._traded(x, dx, y, dy, partners, on_host)
                                    return True
                        finally:
                            budget[0] = left
        return False

    def _tradeable(self, by_key: dict[str, Demand]) -> tuple[dict[tuple, _Partners], dict[str, list[tuple]]]:
        """The GPU replicas a trade may move (new or moved, not pinned; a kept one stays): as partners by GPUs and
        VRAM (``_Partners``), and as (assignment, demand) by host."""
        by_shape: dict[tuple, list[tuple]] = {}
        on_host: dict[str, list[tuple]] = {}
        for a in self.placed.values():
            if a.status == "kept" or a.vendor is None:
                continue
            key = a.key
            d = by_key[key]
            if d.manual is None:
                by_shape.setdefault(_trade_shape(d), []).append((d.cpus, d.ram_mib, key, a, d))
                on_host.setdefault(a.host, []).append((a, d))
        return {shape: _Partners(entries) for shape, entries in by_shape.items()}, on_host

    def _traded(self, x: Assignment, dx: Demand, y: Assignment, dy: Demand, partners: _Partners,
                on_host: dict) -> None:
        """x and y traded places: the lists of ``_tradeable`` follow them."""
        for old, d in ((x, dx), (y, dy)):
            moved = self.placed[old.deployment, old.replica]  # its new assignment
            partners.put((d.cpus, d.ram_mib, moved.key, moved, d), old)
            on_host[old.host] = [e for e in on_host[old.host] if e[0] is not old]
            on_host.setdefault(moved.host, []).append((moved, d))

    #: candidate trades the rebalance step looks at, each time it runs
    REBALANCE_BUDGET = 200_000

    def rebalance(self, by_key: dict[str, Demand], only: set[str] | None = None) -> None:
        """GPUs idle beside CPUs or memory too short for them, while other hosts have CPUs and memory to spare:
        the heaviest replica on the first trades places with a lighter one (in CPUs and memory both) of the same
        GPUs and VRAM on the second (both new or moved, never kept; the devices must suit both), as long as the
        first host is short and the second is not left short itself. Nothing is placed or lost by a trade, and
        the step runs after the exchange, followed by a retry that places what now fits: it never costs a replica
        or a GPU.
        On ten fleets of bench/placement.py --resources (load 1.0), GPUs allocated on average: 96.6 %, 97.0 %
        with the exchange's wider pairs, 97.1 % with this step too (load 1.3: 97.1 % -> 97.3 %); Alibaba's openb
        trace unchanged. Bounded: at most REBALANCE_BUDGET candidates each time it runs
        (twice where a give-way applied). ``only``: the first hosts are among these (``trade``)."""
        if self.ratios is None or not any(d.gpus and d.manual is None for d, _ in self._failed):
            return
        state = self.state
        cpus_pg, ram_pg = self.ratios
        cpu, ram, free = state.cpu_free, state.ram_free, state.gpus_free

        def short(h: str) -> bool:
            g = free[h]
            return g >= 0.5 and ((cpu[h] is not None and cpu[h] < cpus_pg * g) or
                                 (ram[h] is not None and ram[h] < ram_pg * g))

        by_shape, on_host = self._tradeable(by_key)
        # a partner on a host short itself would leave it shorter still: never walked past
        by_shape = {k: p.without(lambda e: short(e[3].host)) for k, p in by_shape.items()}
        budget = [self.REBALANCE_BUDGET]
        weight = lambda d: (d.cpus / cpus_pg if cpus_pg else 0) + (d.ram_mib / ram_pg if ram_pg else 0)  # noqa: E731

        def partner(h1: str, x: Assignment, dx: Demand, partners: _Partners) -> tuple | None:
            """The first lighter replica (in CPUs and memory both) on a host that can take the difference and
            is not left short itself; each replica walked past counts against the budget."""
            for y_cpus, y_ram, run in partners.runs():
                if y_cpus > dx.cpus:
                    budget[0] -= 1
                    return None  # the rest are heavier still
                if y_ram > dx.ram_mib or (y_cpus == dx.cpus and y_ram == dx.ram_mib):  # none of the run
                    if budget[0] <= len(run):
                        budget[0] = 0
                        return None
                    budget[0] -= len(run)
                    continue
                # walked past by the tens of thousands (the whole budget on the bench fleets): locals only
                left, x_cpus, x_ram = budget[0], dx.cpus, dx.ram_mib
                try:
                    for _, _, _, y, dy in run:
                        left -= 1
                        if left <= 0:
                            return None
                        h2 = y.host
                        if h2 == h1:
                            continue
                        # the other host takes the difference and is not left short itself
                        g2 = free[h2]
                        if g2 < 0.5:
                            g2 = 0.0
                        c2, r2 = cpu[h2], ram[h2]
                        if (c2 is not None and c2 + y_cpus - x_cpus < cpus_pg * g2 - 1e-9) or \
                                (r2 is not None and r2 + y_ram - x_ram < ram_pg * g2):
                            continue
                        if self._trade(x, dx, y, dy, None, None, None):
                            return y, dy
                finally:
                    budget[0] = left
            return None

        firsts = [h for h in on_host if short(h) and (only is None or h in only)]
        for h1 in sorted(firsts, key=lambda h: (-free[h], h)):
            traded = True
            stuck: set[str] = set()  # replicas here no partner took: not looked at again for this host
            while traded and short(h1) and budget[0] > 0:
                traded = False
                for x, dx in sorted(on_host[h1], key=lambda e: (-weight(e[1]), e[0].key)):
                    if x.key in stuck:
                        continue
                    partners = by_shape.get(_trade_shape(dx))
                    found = partner(h1, x, dx, partners) if partners is not None else None
                    if found is not None:
                        self._traded(x, dx, found[0], found[1], partners, on_host)
                        traded = True
                        break
                    if budget[0] <= 0:
                        break
                    stuck.add(x.key)

    def _trade(self, x: Assignment, dx: Demand, y: Assignment, dy: Demand, u: Demand | None, previous,
               gs1) -> bool:
        """x (on gs1's host) and y trade hosts, then u takes gs1's host; undone unless all three fit (without
        u: undone unless both fit)."""
        gx, gy = self._group_of(x), self._group_of(y)
        h1, h2 = x.host, y.host
        if not self._static_ok(gy, dx) or not self._static_ok(gx, dy):
            return False
        if (dx.spread_hosts and self.state.runs(h2, dx.deployment)) or \
                (dy.spread_hosts and self.state.runs(h1, dy.deployment)):
            return False
        px, py = [gx.pos_of[i] for i in x.gpus], [gy.pos_of[i] for i in y.gpus]
        for a, d, g, pos in ((x, dx, gx, px), (y, dy, gy, py)):
            self._drop(a)
            self.state.release(g, pos, d, a.host, a.port)
            self._room_again(a.host, g)  # a host the index dropped for want of CPUs may have them now
        done: list[tuple[Assignment, Demand]] = []
        ok = True
        for a, d, g, host in ((x, dx, gy, h2), (y, dy, gx, h1)):
            at = choose_devices(g, d, d.allowed_on(host))
            if at is None or not self.state.host_fits(host, d) or not self.state.has_free_port(host):
                ok = False
                break
            done.append((self._commit(d, host, g, at, self.state.ports[host].lowest(), a.status, a.reason,
                                      a.previous_host), d))
        if ok and u is None:
            return True
        if ok:
            at = choose_devices(gs1, u, u.allowed_on(h1))
            if at is not None and self.state.host_fits(h1, u) and self.state.has_free_port(h1) and \
                    not (u.spread_hosts and self.state.runs(h1, u.deployment)):
                self._commit_placed(u, h1, gs1, at, self.state.ports[h1].lowest(), previous)
                return True
        for placed, d in reversed(done):  # undo: the trade, then the two back where they were
            g = self._group_of(placed)
            self._drop(placed)
            self.state.release(g, [g.pos_of[i] for i in placed.gpus], d, placed.host, placed.port)
        for a, d, g, pos in ((x, dx, gx, px), (y, dy, gy, py)):
            self.state.ports[a.host].take(a.port)
            self.state.claim(g, pos, d, a.host)
            self.placed[a.deployment, a.replica] = a
        for g, host in ((gx, h1), (gy, h2)):
            self.index.refresh(g)
            if not self.state.has_free_port(host) or self._exhausted(host):
                self.index.drop_host(host)
            else:
                self.index.restore_host(host)
            self.hosts.refresh(host)
        return False

    # ------------------------------------------------------------------ 2f. give way
    def give_way(self) -> None:
        """A full pool: one replica this plan places new gives its room to two or more smaller ones left over
        (stack.placement.giveway)."""
        failed = [(d, p) for d, p in self._failed if d.gpus and d.manual is None]
        if len(failed) >= 2:
            step = GiveWay(self, failed)
            step.run()
            if step.applied:
                # the replicas that took a room need not take all of it, nor the same devices: what is still left
                # over may fit now, and the search places it (before, the explanations' walk did: seed 20728 of
                # tests/test_placement_repack.py's exchange test)
                self.retry()
                # and the rooms given moved CPUs and memory: the trade steps run once more over what is still left
                # over (on ten fleets of bench/placement.py --resources, load 1.0: 27.6 -> 24.8 replicas left over
                # per fleet, never more on any; each step keeps its own budget, so the bound per step is twice it)
                self.trade(last=True)

    def _group_of(self, a: Assignment) -> GroupState:
        """The group a GPU replica's assignment took its devices from."""
        groups = self.state.groups_of[a.host]
        if len(groups) == 1:  # most hosts: the one group is the one a commit gave it
            return groups[0]
        return next(g for g in groups if g.group.vendor == a.vendor and all(i in g.pos_of for i in a.gpus))

    def _static_ok(self, gs: GroupState, d: Demand) -> bool:
        """Every static filter accepts ``d`` on ``gs``: its class is among the index's eligible ones (cached
        per shape; the trade steps ask it of two replicas per candidate trade, and most candidates fail it)."""
        return self.index.classes[self.index.class_of[gs.gid]] in self.index.eligible(d)

    @staticmethod
    def _repair_entry(a: Assignment, by_key: dict[str, Demand], constrained) -> tuple:
        """What the repair asks of a replica it may move, worked out once: (assignment, demand, its shape as
        ``_hopeless`` files it, how constrained it is). The repair looks at up to REPAIR_BUDGET of these, and
        on the bench fleets spends the whole budget turning them away by these two answers."""
        d = by_key[a.key]
        return a, d, (d.static, d.vram_mib), constrained(d)

    def _repair_one(self, demand, previous, by_key, constrained, budget: list[int], on_group,
                    link: bool = False, on_host: dict | None = None) -> list[Assignment] | None:
        """Room for ``demand`` where a replica moves elsewhere: the assignments made (``demand``'s first), or
        None. A replica at least as flexible first, or one needing no GPU on the group's host (``on_host``: its
        CPUs, memory or port); then one more constrained (its move is still one replica more: small instances
        against the MILP left one over in each of three ways). A replica moved that fits nowhere may make room
        for itself the same way (one link more, on the chain's budget): ``link`` says ``demand`` is such a
        one."""
        mine = constrained(demand)
        state, placed = self.state, self.placed
        away = state.hosts_running(demand.deployment) if demand.spread_hosts else ()
        if away:  # spread: hosts running its deployment are no places for it, and its reach is what is left
            mine -= sum(1 for h in away for gs in state.groups_of[h] if self._static_ok(gs, demand))
        slot = 1 if link else 0
        later: list[tuple[int, tuple]] = []  # (group id, entry) of replicas more constrained than ``demand``
        for lists in self.index.eligible(demand):
            for gid in lists.members:
                host = state.groups[gid].host.name
                if away and host in away:
                    continue
                entries = on_group.get(gid, ())
                if on_host and host in on_host:
                    entries = [*entries, *on_host[host]]
                for entry in list(entries):
                    budget[slot] -= 1
                    if budget[slot] < 0:
                        return None
                    a = entry[0]
                    if placed.get((a.deployment, a.replica)) is not a:
                        continue  # the one the link before moves
                    if entry[3] < mine and a.vendor is not None:
                        if budget[2] > 0:
                            later.append((gid, entry))
                        continue
                    made = self._repair_with(demand, previous, gid, entry, by_key, constrained, budget, on_group,
                                             on_host, link)
                    if made is not None:
                        return made
        for gid, entry in later:
            budget[2] -= 1
            if budget[2] < 0:
                break  # (pairs have their own budget)
            a = entry[0]
            if placed.get((a.deployment, a.replica)) is a:
                made = self._repair_with(demand, previous, gid, entry, by_key, constrained, budget, on_group,
                                         on_host, link)
                if made is not None:
                    return made
        if link or budget[3] <= 0:
            return None
        return self._repair_two(demand, previous, by_key, constrained, budget, on_group, on_host, away)

    def _repair_two(self, demand, previous, by_key, constrained, budget: list[int], on_group, on_host,
                    away) -> list[Assignment] | None:
        """Room for ``demand`` where two replicas of one host move elsewhere (no single one held enough: two
        slices sharing the devices a whole GPU needs, or each half the memory), on its own budget
        (REPAIR_PAIR_BUDGET pairs in all). The assignments made, or None."""
        state, placed = self.state, self.placed
        for lists in self.index.eligible(demand):
            for gid in lists.members:
                host = state.groups[gid].host.name
                if away and host in away:
                    continue
                entries = [e for e in (*on_group.get(gid, ()), *((on_host or {}).get(host, ())))
                           if placed.get((e[0].deployment, e[0].replica)) is e[0]
                           and not ((failed := self._hopeless.get(e[2])) and self._hopeless_shape(e[1], failed))]
                gs = state.groups[gid]
                for i, first in enumerate(entries):
                    for second in entries[i + 1:]:
                        budget[3] -= 1
                        if budget[3] < 0:
                            return None
                        out = [first[:2], second[:2]]
                        if not self._would_fit(demand, out, gs):
                            continue
                        made = self._swap(demand, previous, gs, out)
                        if made is not None:
                            self._refile(gid, (first, second), made[1:], by_key, constrained, on_group, on_host)
                            return made
        return None

    def _repair_with(self, demand, previous, gid: int, entry: tuple, by_key, constrained, budget: list[int],
                     on_group, on_host, link: bool) -> list[Assignment] | None:
        """``demand`` on group ``gid`` in the place of ``entry``'s replica, which moves elsewhere (or, fitting
        nowhere and not ``link``, makes room for itself): the assignments made, filed for later repairs."""
        a, other, shape, _ = entry
        failed = self._hopeless.get(shape)
        nowhere = bool(failed) and self._hopeless_shape(other, failed)
        chains = not link and budget[1] > 0 and a.vendor is not None  # (links are GPU replicas' repairs)
        if nowhere:
            if not chains:
                return None  # nowhere to go, and no link more
            budget[1] -= 1  # (each look at such a one counts: on full fleets most have nowhere to go)
        out = [(a, other)]
        gs = self.state.groups[gid]
        if not self._would_fit(demand, out, gs):
            return None  # cheap checks first: the swap itself re-checks everything
        if not nowhere and self._choose(other) is None:
            if not chains:
                return None
            nowhere = True
        if nowhere:
            budget[1] -= 1
        made = self._swap(demand, previous, gs, out, (by_key, constrained, budget, on_group) if nowhere else None)
        if made is not None:
            self._refile(gid, (entry,), made[1:], by_key, constrained, on_group, on_host)
        return made

    def _refile(self, gid: int, taken: tuple, moved: list[Assignment], by_key, constrained, on_group,
                on_host) -> None:
        """After a swap on group ``gid``: the entries of the replicas ``taken`` back leave the repair's lists, and
        the replicas ``moved`` (placed again) join them where they now are."""
        for entry in taken:
            a = entry[0]
            (on_group[gid] if a.vendor is not None else on_host[a.host]).remove(entry)
        for m in moved:
            if m.vendor is not None:
                on_group.setdefault(self._group_of(m).gid, []).append(self._repair_entry(m, by_key, constrained))
            elif on_host is not None:
                on_host.setdefault(m.host, []).append(self._repair_entry(m, by_key, constrained))

    def _repair_no_gpu(self, demand: Demand, previous, constrained, budget: list[int], on_host) -> bool:
        """A replica needing no GPU takes the place of one at least as flexible that needs none either and fits
        on another host: the CPUs, memory and port of a host its labels (and spread: hosts) allow."""
        state = self.state
        mine = constrained(demand)
        away = state.hosts_running(demand.deployment) if demand.spread_hosts else ()
        mine -= len(away)  # (a host running it passed its labels)
        for name, entries in on_host.items():
            host = self.fleet.host(name)
            if name in away or not LABELS(host, None, demand):
                continue
            for entry in list(entries):
                budget[0] -= 1
                if budget[0] < 0:
                    return False
                a, other, _, theirs = entry
                if theirs < mine or self.placed.get((a.deployment, a.replica)) is not a:
                    continue
                cpu, ram = state.cpu_free[name], state.ram_free[name]
                if (cpu is not None and cpu + other.cpus + 1e-9 < demand.cpus) or \
                        (ram is not None and ram + other.ram_mib < demand.ram_mib):
                    continue
                moved = self._swap_no_gpu(demand, previous, a, other)
                if moved is not None:
                    entries.remove(entry)
                    on_host.setdefault(moved.host, []).append((moved, other, entry[2], theirs))
                    return True
        return False

    def _swap_no_gpu(self, demand: Demand, previous, a: Assignment, other: Demand) -> Assignment | None:
        """``_swap`` for replicas needing no GPU: ``a`` taken back, ``demand`` on its host, ``a`` placed again
        elsewhere; undone if either fails. Returns ``a``'s new assignment."""
        host, state = a.host, self.state
        self._drop(a)
        state.release(None, [], other, host, a.port)
        self._host_again(host)
        hopeless = dict(self._hopeless)  # (as in _swap: capacity given, then given back by an undo)
        self._hopeless.clear()
        mine = None
        if state.host_fits(host, demand) and not (demand.spread_hosts and state.runs(host, demand.deployment)) \
                and state.has_free_port(host):
            mine = self._commit_placed(demand, host, None, [], state.ports[host].lowest(), previous)
            choice = self._choose(other)
            if choice is not None:
                self._hopeless.clear()
                return self._commit(other, choice[0], None, [], state.ports[choice[0]].lowest(), a.status,
                                    a.reason, a.previous_host)
            self._drop(mine)
            state.release(None, [], demand, host, mine.port)
        state.ports[host].take(a.port)
        state.claim(None, [], other, host)
        self.placed[a.deployment, a.replica] = a
        self._hopeless.clear()
        self._hopeless.update(hopeless)
        if not state.has_free_port(host) or self._exhausted(host):
            self.index.drop_host(host)
        else:
            self._host_again(host)
        self.hosts.refresh(host)
        return None

    def _host_again(self, host: str) -> None:
        """The host's CPUs, memory or a port were given back: its groups are candidates again, if it has room."""
        for gs in self.state.groups_of[host]:
            self._room_again(host, gs)
        self.hosts.refresh(host)

    def _would_fit(self, demand: Demand, out: list, gs: GroupState) -> bool:
        """Would ``demand`` fit on ``gs`` once the replicas ``out`` ((assignment, demand) pairs) are taken
        back? Arithmetic only."""
        host = out[0][0].host
        cpu, ram = self.state.cpu_free[host], self.state.ram_free[host]
        if (cpu is not None and cpu + sum(o.cpus for _, o in out) + 1e-9 < demand.cpus) or \
                (ram is not None and ram + sum(o.ram_mib for _, o in out) < demand.ram_mib):
            return False
        if gs.group.vram_mib < demand.min_vram_mib or len(gs.group.devices) < demand.gpus:
            return False
        room = Room(gs)  # the devices as the state's own release would leave them
        for a, other in out:
            vacate(room, [gs.pos_of[i] for i in a.gpus], other.vram_mib)
        return devices_fit(room, demand)

    def _swap(self, demand: Demand, previous, gs: GroupState, out: list, chain: tuple | None = None) \
            -> list[Assignment] | None:
        """Take the replicas ``out`` back, put ``demand`` on their group, place them again elsewhere (biggest
        first); undo all if any fails. ``chain``: the repair's (by_key, constrained, budget, on_group), for a
        moved one the search finds no place for to make room for itself (``_repair_one``; its own swap undoes
        itself when it fails). Returns the assignments made, ``demand``'s first."""
        host = out[0][0].host
        held = [(a, other, [gs.pos_of[i] for i in a.gpus]) for a, other in out]
        for a, other, positions in held:
            self._drop(a)
            self.state.release(gs, positions, other, host, a.port)
        self._room_again(host, gs)
        done: list[tuple[Assignment, Demand]] = []
        # taking ``out`` back gave capacity: what found no place may find one now, so the memos of shapes with
        # nowhere to go start over; and what the searches below find no place for, they find with ``demand`` in
        # the room, capacity an undo gives back, so the memos before return with it (kept, the repair skipped
        # every replica of their shapes as having nowhere to go: tests/test_placement_resources.py)
        hopeless = dict(self._hopeless)
        self._hopeless.clear()  # (in place: the repair holds it)
        mine = None
        if self.state.host_fits(host, demand) and not (demand.spread_hosts and self.state.runs(host, demand.deployment)) \
                and self.state.has_free_port(host):
            mine = choose_devices(gs, demand, demand.allowed_on(host))
        if mine is not None:
            done.append((self._commit_placed(demand, host, gs, mine, self.state.ports[host].lowest(), previous),
                         demand))
            linked: list[Assignment] = []
            for a, other, _ in sorted(held, key=lambda x: _biggest_first(x[1])):
                choice = self._choose(other)
                if choice is None:
                    if chain is None or len(held) > 1:
                        break
                    linked = self._repair_one(other, a.previous_host, *chain, link=True) or []
                    if not linked:
                        break
                    continue
                where, ogs = choice
                at = choose_devices(ogs, other, other.allowed_on(where)) if ogs is not None else []
                done.append((self._commit(other, where, ogs, at, self.state.ports[where].lowest(), a.status,
                                          a.reason, a.previous_host), other))
            else:
                self._hopeless.clear()  # capacity moved around: shapes that failed may fit now
                return [m for m, _ in done] + linked[:1]  # (the link's own are filed by its repair)
        for placed, d in reversed(done):  # undo: what this attempt placed, newest first (one needing no GPU too)
            self._take_back(placed, d)
        for a, other, positions in held:  # and the flexible ones back exactly where they were
            self.state.ports[host].take(a.port)
            self.state.claim(gs, positions, other, host)
            self.placed[a.deployment, a.replica] = a
        self._hopeless.clear()
        self._hopeless.update(hopeless)
        self.index.refresh(gs)
        if not self.state.has_free_port(host) or self._exhausted(host):
            self.index.drop_host(host)
        self.hosts.refresh(host)
        return None

    def _drop(self, a: Assignment) -> None:
        """Take ``a`` back out of what is placed."""
        got = self.placed.pop((a.deployment, a.replica))
        assert got is a, a.key

    def _take_back(self, a: Assignment, d: Demand) -> None:
        """``a`` (of ``d``) leaves the plan: its devices, CPUs, memory and port are free again, and the index and
        host index file its host again."""
        self._drop(a)
        if a.vendor is None:
            self.state.release(None, [], d, a.host, a.port)
            self._host_again(a.host)
        else:
            gs = self._group_of(a)
            self.state.release(gs, [gs.pos_of[i] for i in a.gpus], d, a.host, a.port)
            self._room_again(a.host, gs)

    def _room_again(self, host: str, gs: GroupState) -> None:
        if self.state.has_free_port(host) and not self._exhausted(host):
            self.index.restore_host(host)
        else:
            self.index.refresh(gs)
        self.hosts.refresh(host)

    # ------------------------------------------------------------------ commit
    def _commit_placed(self, demand, host_name, gs, positions, port, previous) -> Assignment:
        """Commit a replica this run places: new, or moved off ``previous`` (the lock's host) with its reason."""
        reason = self.move_reasons.get(demand.key, "") if previous else ""
        return self._commit(demand, host_name, gs, positions, port, "moved" if previous else "new", reason, previous)

    def _commit(self, demand, host_name, gs, positions, port, status, reason, previous) -> Assignment:
        taken = self.state.ports[host_name].take(port) if status == "kept" else True
        assert taken
        per = self.state.claim(gs, positions, demand, host_name)
        devices = [gs.group.devices[p] for p in positions] if gs is not None else []
        a = Assignment(
            deployment=demand.deployment, replica=demand.replica, host=host_name,
            vendor=gs.group.vendor if gs is not None else None,
            gpus=tuple([d.index for d in devices]), uuids=tuple([d.uuid for d in devices]),
            vram_mib=per, whole=demand.whole, port=port, status=status, reason=reason,
            previous_host=previous, claim=demand.claim)
        key = (demand.deployment, demand.replica)  # a tuple: no string formatted per commit
        assert key not in self.placed, key
        self.placed[key] = a
        if gs is not None:
            self.index.refresh(gs)
        if not self.state.has_free_port(host_name) or self._exhausted(host_name):
            self.index.drop_host(host_name)
        if self.hosts is not None:
            self.hosts.refresh(host_name)
        return a

    def _exhausted(self, host: str) -> bool:
        """No GPU replica of this plan fits the CPUs or memory the host has left: the index forgets it
        (capacity only shrinks during a run), so lookups never walk past it again."""
        cpu, ram = self.state.cpu_free[host], self.state.ram_free[host]
        need_cpu, need_ram = self.least
        return (cpu is not None and cpu < need_cpu) or (ram is not None and ram < need_ram)

    # ------------------------------------------------------------------ 3. explain
    def explain_unplaced(self) -> None:
        """Explain each replica nothing fit, by the filters themselves against the final state: they
        decide. Should they find a host the index-driven search missed, the replica is placed there
        instead of reported (the index, the memos and the preferences only speed the search up), so an
        explanation can never disagree with the decision. Capacity only shrinks during a run, so the
        final state explains every failure, and replicas of one shape share one explanation."""
        cache: dict[tuple, list] = {}  # shape -> [(CPUs, memory, explanation)]
        walks: dict[tuple, list] = {}  # shape -> each host's reach with CPUs and memory left out
        static: dict[tuple, dict] = {}
        too_big: dict[tuple, bool] = {}  # static shape -> no host could ever hold it (the fleet does not change)
        descriptions: dict[tuple, str] = {}
        kinds = [(c.rep.host, c.rep.group) for c in self.index.classes.values()]
        for demand, previous in self._failed:
            key = (demand.static, demand.vram_mib, demand.manual, demand.spread_hosts and demand.deployment)
            got = self._explained(cache.get(key, ()), demand)
            if got is None:
                if key not in walks:
                    walks[key] = walk(self.fleet, self.state, demand, self.index, static)
                shape = demand.static
                if shape not in too_big:
                    too_big[shape] = bool(demand.gpus) and _too_big_for_any_host(kinds, demand)
                got = explain(self.fleet, self.state, demand, walks[key], never=too_big[shape])
                cache.setdefault(key, []).append((demand.cpus, demand.ram_mib, got))
            rejected, never, text, fits = got
            if fits is not None and self._place_at(demand, previous, *fits):
                cache.clear()  # the state changed: every shape is walked again
                walks.clear()
                continue
            described = descriptions.get(key)  # the shape says it all: written once per shape
            if described is None:
                described = descriptions[key] = demand.describe()
            gave = self.gave_way.get(demand.key)
            if gave is not None:  # it had a place, and gave it up for smaller ones
                text += (f"; it had a place on {gave[0]} and gave it to {gave[1]} smaller replicas that were left "
                         f"over (more replicas placed; more capacity of this kind places it again)")
            self.unplaced.append(Unplaced(demand.deployment, demand.replica, described, rejected,
                                          f"{demand.key}: {text}", never, previous))

    @staticmethod
    def _explained(known: list, demand: Demand):
        """An explanation already made for this shape that is exactly this demand's: the same CPUs and
        memory asked, or more of both where no host was short of either (then nothing depends on them)."""
        for cpus, ram, got in known:
            if (cpus, ram) == (demand.cpus, demand.ram_mib) or \
                    (demand.cpus <= cpus and demand.ram_mib <= ram and "free_cpu" not in got[0]
                     and "free_ram" not in got[0]):
                return got
        return None

    def _place_at(self, demand: Demand, previous, host, group) -> bool:
        gs = self.state.group_state(host.name, group) if group is not None else None
        positions = choose_devices(gs, demand, demand.allowed_on(host.name)) if gs is not None else []
        port = self.state.ports[host.name].lowest()
        if positions is None or port is None:
            return False
        self._commit_placed(demand, host.name, gs, positions, port, previous)
        return True


_HOST_LEVEL = ("free_cpu", "free_ram")  # filters that read only the host and the replica's CPUs or memory


def walk(fleet: Fleet, state: FleetState, demand: Demand, index: CandidateIndex | None = None,
         static_cache: dict | None = None) -> "Walk":
    """Each host's reach through the filters (the position of the first that rejects its best group,
    or their count), with the CPU and memory filters left out, and that group: what ``explain`` needs,
    shared by replicas of one shape that ask different CPUs or memory.

    Static filters are answered once per class of identical groups when an index is given (once per
    run when the caller passes ``static_cache``: they depend only on the demand's static shape), and the
    one-group hosts of a class they turn away are settled together, not visited one by one (two thirds of the
    fleet for a shape on the 2,000-host bench, where the walks had been an eighth of the plan's time)."""
    filters = applicable(demand)
    first_dynamic = next(i for i, f in enumerate(filters) if f in DYNAMIC)
    static_reach: dict[tuple, int] = {} if static_cache is None else \
        static_cache.setdefault(demand.static, {})
    n = len(filters)
    host_level = {i for i, f in enumerate(filters) if f.code in _HOST_LEVEL}
    # and the filters that pass on every host for this demand (no gpu_selection, no spread: hosts)
    trivial = {i for i, f in enumerate(filters) if (f is MANUAL and demand.manual is None)
               or (f is SPREAD and not demand.spread_hosts)}
    skip = host_level | trivial
    # the filters each host is asked, by position: all of them, or the dynamic ones once its class passed
    every = [(i, f) for i, f in enumerate(filters) if i not in skip]
    dynamic = [(i, f) for i, f in every if i >= first_dynamic]

    def reached(host, group, asked) -> int:
        for i, f in asked:
            if (group is None and f.gpu_only) or not f.check(host, group, demand, state):
                return i
        return n

    settled: dict[int, list] = {}
    sized_from = min(host_level, default=n)
    if index is None or not demand.gpus:
        open_: list[tuple] = []
        for host in fleet.hosts:
            groups = [None] if demand.gpus == 0 else (list(host.groups) or [None])
            reach = [reached(host, group, every) for group in groups]
            furthest = max(reach)
            best = groups[reach.index(furthest)]
            if furthest < sized_from:
                settled.setdefault(furthest, []).append(host)
            else:
                open_.append((host, furthest, best))
        return Walk(settled, open_)

    # with an index, a group's static reach is its class's, asked of the class's first group met
    class_reach: dict[tuple, int] = {}
    for key, lists in index.classes.items():
        got = static_reach.get(key)
        if got is None:
            host, group = lists.rep.host, lists.rep.group
            got = static_reach[key] = next((i for i, f in enumerate(filters[:first_dynamic])
                                            if not f.check(host, group, demand, state)), first_dynamic)
        class_reach[key] = got
    # class by class: a class a static filter turns away settles its one-group hosts at once; the others' hosts
    # are asked the dynamic filters one by one. Settled hosts are only counted and described (in any order);
    # the open ones are put back in fleet order, the order the search meets them in.
    single, several, bare = index.hosts_by_class()
    found: list[tuple] = []  # (position in the fleet, host, reach, group) of the open hosts
    for key, (hosts, entries) in single.items():
        got = class_reach[key]
        if got < first_dynamic:
            if got < sized_from:
                if hosts:
                    settled.setdefault(got, []).extend(hosts)
            else:
                found.extend((pos, host, got, group) for pos, host, group in entries)
            continue
        for pos, host, group in entries:
            furthest = reached(host, group, dynamic)
            if furthest < sized_from:
                settled.setdefault(furthest, []).append(host)
            else:
                found.append((pos, host, furthest, group))
    groups_of, class_of = state.groups_of, index.class_of
    for pos, host in several:
        furthest, best = -1, None
        for gs in groups_of[host.name]:
            got = class_reach[class_of[gs.gid]]
            if got >= first_dynamic:
                got = reached(host, gs.group, dynamic)
            if got > furthest:
                furthest, best = got, gs.group
        if furthest < sized_from:
            settled.setdefault(furthest, []).append(host)
        else:
            found.append((pos, host, furthest, best))
    for pos, host in bare:
        furthest = reached(host, None, every)
        if furthest < sized_from:
            settled.setdefault(furthest, []).append(host)
        else:
            found.append((pos, host, furthest, None))
    found.sort(key=itemgetter(0))
    return Walk(settled, [(host, furthest, group) for _, host, furthest, group in found])


class Walk:
    """Each host's reach through the filters for one shape (see ``walk``), split where the CPU and memory
    filters sit: ``settled`` hosts (by the position of the filter that rejects them) were turned away before
    those filters, whatever CPUs or memory a replica asks; only the ``open`` ones, (host, reach, group) in
    fleet order, are looked at again for each replica's asks."""

    __slots__ = ("settled", "open", "split", "texts", "_rows")

    def __init__(self, settled: dict[int, list], open_: list[tuple]):
        self.settled, self.open = settled, open_
        self._rows: list[tuple] | None = None
        #: what the filters before the CPU and memory ones say of the settled hosts, by position (``explain``)
        self.texts: dict[int, str] = {}
        #: names of the open hosts the free-VRAM filter turns away that have the VRAM, split over devices
        #: (``_split_vram``; set by the first ``explain``)
        self.split: frozenset[str] | None = None

    def rows(self, state: FleetState) -> list[tuple]:
        """The open hosts as (free CPUs, free MiB, reach, host, group), infinite where the host declares no
        capacity: what ``explain`` reads for each ask of the shape, looked up once. A walk lives only while
        the state does not change (the explanations drop their walks when they place a replica)."""
        if self._rows is None:
            cpu, ram = state.cpu_free, state.ram_free
            self._rows = [(inf if cpu[h.name] is None else cpu[h.name], inf if ram[h.name] is None else ram[h.name],
                           furthest, h, group) for h, furthest, group in self.open]
        return self._rows


def explain(fleet: Fleet, state: FleetState, demand: Demand, walked: "Walk | None" = None,
            index: CandidateIndex | None = None,
            never: bool | None = None) -> tuple[dict[str, int], bool, str, tuple | None]:
    """Count, per filter, the hosts it rejected (each host counted at the filter its best group reached).

    ``walked``: the shape's ``walk`` (made here when not given); the CPU and memory filters are applied
    to it for this replica's own asks. Returns (counts by reason code, whether no host could ever hold
    it, the sentence for people, and a (host, group) every filter accepts, if there is one: then the
    replica is not unplaced at all).
    """
    filters = applicable(demand)
    if walked is None:
        walked = walk(fleet, state, demand, index)
    cpu_i = next((i for i, f in enumerate(filters) if f.code == "free_cpu"), None)
    ram_i = next((i for i, f in enumerate(filters) if f.code == "free_ram"), None)
    rejected_hosts: dict[str, list] = {f.code: [] for f in filters}
    for furthest, hosts in walked.settled.items():
        rejected_hosts[filters[furthest].code] = list(hosts)
    fits = None
    # state.cpu_fits and ram_fits, inlined: this loop runs over most of the fleet once per ask
    need_cpu = demand.cpus - 1e-9 if demand.cpus and cpu_i is not None else None
    need_ram = demand.ram_mib if ram_i is not None else 0
    lists = [rejected_hosts[f.code] for f in filters]
    n = len(filters)
    for cpu_free, ram_free, furthest, host, group in walked.rows(state):
        # a host-level rejection counts where its filter sits: before what the host's best group reached
        if need_cpu is not None and cpu_i < furthest and cpu_free < need_cpu:
            furthest = cpu_i
        if need_ram and ram_i < furthest and ram_free < need_ram:
            furthest = ram_i
        if furthest < n:
            lists[furthest].append(host)
        elif fits is None:
            fits = (host, group)
    rejected = {code: len(hosts) for code, hosts in rejected_hosts.items() if hosts}
    # before the CPU and memory filters only settled hosts are counted: the same words for every ask of the
    # shape (some read every host they count: the frameworks of a thousand hosts without the replica's)
    settled_below = min((i for i in (cpu_i, ram_i) if i is not None), default=n)
    parts = []
    for i, f in enumerate(filters):
        hosts = lists[i]
        if not hosts:
            continue
        text = walked.texts.get(i) if i < settled_below else None
        if text is None:
            text = f.explain(len(hosts), demand, hosts)
            if i < settled_below:
                walked.texts[i] = text
        parts.append(text)
    busy = [h.name for code in ("free_vram", "free_port") for h in rejected_hosts.get(code, ())
            if h.name in state.held_by] if state.held_by else []
    if busy:
        stacks = sorted({s for name in busy for s in state.held_by[name]})
        parts.append(f"taken by stack {', '.join(stacks)} on {len(busy)} of those host{'s' if len(busy) != 1 else ''}")
    if walked.split is None:  # the same for every replica of the shape: asked once
        vram_i = next((i for i, f in enumerate(filters) if f.code == "free_vram"), None)
        walked.split = _split_vram(state, demand, [h for h, furthest, _ in walked.open if furthest == vram_i])
    split = sum(1 for h in rejected_hosts.get("free_vram", ()) if h.name in walked.split) if walked.split else 0
    if split:
        parts.append(f"{split} of those hosts {'have' if split != 1 else 'has'} that much VRAM free, split over "
                     "devices")
    if not fleet.hosts:
        parts = ["the inventory has no hosts"]
    if never is None:
        never = bool(demand.gpus) and _too_big_for_any_host(((h, g) for h in fleet.hosts for g in h.groups), demand)
    if never:
        kind = [g for h in fleet.hosts for g in h.groups
                if FRAMEWORK(h, g, demand) and VENDOR(h, g, demand) and GPU_MODEL(h, g, demand)]
        largest = max(g.vram_mib for g in kind)
        if largest < demand.min_vram_mib:
            why = (f"every {demand.framework} device is smaller than {format_mib(demand.min_vram_mib)} (the largest "
                   f"has {format_mib(largest)}); claim less VRAM per GPU, with more GPUs")
        else:
            most = max(len(g.devices) for g in kind if g.vram_mib >= demand.min_vram_mib)
            size = f" of {format_mib(demand.min_vram_mib)} or more" if demand.min_vram_mib else ""
            why = (f"the most {demand.framework} devices{size} on one host is {most}; a replica's GPUs must all "
                   "be on one host, multi-host replicas are not supported")
        text = f"no single host can ever hold {demand.describe()}: {why} — " + "; ".join(parts)
    else:
        text = f"no host fits {demand.describe()} — " + "; ".join(parts)
    return rejected, never, text, fits


def _too_big_for_any_host(groups: Iterable[tuple], demand: Demand) -> bool:
    """Hosts of the right kind exist, but none has enough (or big enough) devices, even empty and uncordoned.
    ``groups``: (host, group) pairs, every group of the fleet or one of each kind (the index's classes: these
    filters read only the group's vendor, model, size and device count)."""
    kind = [(h, g) for h, g in groups if FRAMEWORK(h, g, demand) and VENDOR(h, g, demand) and GPU_MODEL(h, g, demand)]
    return bool(kind) and not any(DEVICE_COUNT(h, g, demand) and VRAM_SIZE(h, g, demand) for h, g in kind)


def _positions_free(gs: GroupState, positions: list[int], demand: Demand) -> bool:
    if demand.vram_mib is None:
        return all(gs.claims[p] == 0 for p in positions)
    return all(not gs.exclusive[p] and gs.free[p] >= demand.vram_mib for p in positions)

