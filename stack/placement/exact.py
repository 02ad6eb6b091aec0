"""2g. A small plan that leaves replicas over: an exact, bounded search for a placement of more.

The steps before it are heuristics with budgets: on small fleets they can leave a replica over that some
placement would hold (bench/fits.py found, among 12,000 random instances of 2-5 hosts a MILP places every
replica of, two where gpufleet left one over: one needed two replicas moved off a host for a replica needing
no GPU, one three 2-GPU slices interlaced over three devices). A user with a few hosts reads "no host fits"
and believes it, so where the plan is small enough to search, this step searches.

Every replica this plan placed (new or moved; a kept one never moves) stays placed, somewhere; the search looks
for devices, hosts and ports for all of them and for more of the replicas left over than now, and takes the
arrangement that places the most (fewest moves among those). It walks the replicas most constrained first,
each on every group (host, for one needing no GPU) its static filters accept, every distinct choice of devices
there (where it is now first), then (one left over) nowhere; a branch that cannot place more than the best
found is cut, and so are branches that differ only by which of two alike replicas or two alike groups is used.
It stops after ``NODES`` steps, keeping the best found: it only ever adds replicas to the plan.

On 261 plans of bench/synthetic.py's CPU-and-memory workload on 4, 6 and 8 hosts (29 seeds, loads 0.9, 1.0
and 1.3), 15 place 51 more replicas (9 and 32 without trying each where it is first); with 20,000 steps,
17 and 54 for four times the time. It keeps no VRAM floor: a whole replica moved to a smaller device takes less
VRAM counted whole, and 34 of its 70 finds over those plans (in every run) took up to 2.2 % less. Tried
2026-12-06: the chains' cut by what the CPUs, memory and VRAM free hold (147 searches of 344 out of steps instead
of 153, 87 finds instead of 70) placed one replica more at 4 hosts for 2.5 fewer GPUs; with the chains' VRAM floor
as well, 8 fewer at 4 hosts and 2 more at 6 (its early finds are where later steps place more); neither landed.

Where replicas are still left over, a second search (``_Chains``, up to ``CHAIN_ITEMS`` replicas) may leave a
replica this plan placed new over, for a plan that places more replicas and takes no less VRAM (but for
``RUN_SLACK`` of what the heuristics' plan took, in all: ``place_more``'s ``least_vram``): the chains of
moves a MILP's better plans are made of, walked by limited discrepancy. It keeps the give-way's rules (a replica
moved or with manual selection stays placed; none gives way to replicas whose selectors reach more), and the
explanation of a replica it leaves over says so. Then, on a fleet of at most ``HOSTS`` hosts, the same search on
each pair of hosts in turn (``_by_pairs``): its first choices keep each replica where it is, and on the whole plan
a few other choices seldom empty a host for others; on two hosts they do (bench/placement.py --small-plans:
1,784 -> 1,794, 2,539 -> 2,570 and 3,071 -> 3,118 replicas placed on 4, 6 and 8 hosts).
"""
from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate, combinations
from math import inf
from typing import TYPE_CHECKING

from .filters import MANUAL, STATIC
from .giveway import Room, selector_reach
from .model import Assignment, ByKey, Demand
from .state import occupy, vacate

if TYPE_CHECKING:
    from .engine import _Run

#: at most this many replicas in the search (those placed and not kept, and those left over) ...
ITEMS = 40
#: ... on at most this many hosts they may use
HOSTS = 16
#: steps of the search at most: 0.14 s at most on those plans, at calibration 0.39 (about 0.05 s quiet)
NODES = 5_000
#: the search by chains (``_Chains``): at most this many replicas in it, steps, and choices other than the first
CHAIN_ITEMS = 80
CHAIN_NODES = 20_000
DISCREPANCIES = 4
#: the search by chains on pairs of hosts (``_by_pairs``): steps of each search, and of all of them in one plan
PAIR_NODES = 5_000
PAIRS_NODES = 70_000
#: how much less VRAM (a whole device counted whole) and GPUs than the heuristics' plan a small plan may end with, as
#: a share, where the searches by chains and the other runs (engine.OTHER_RUNS) place more replicas. With none, a
#: run placing 33 replicas lost to one placing 25 for 3 GiB of 3.8 TiB (--small-plans, 6 hosts, seed 10, load 0.9).
#: The figures are in bench/RESULTS.md (Placement's later steps, in full).
RUN_SLACK = 0.005


class _Item:
    """One replica in the search: where it is now (None: left over), what it asks, where it may go."""

    __slots__ = ("a", "d", "previous", "slots", "required", "asks", "home", "allowed")

    def __init__(self, a: Assignment | None, d: Demand, previous: str | None):
        self.a, self.d, self.previous = a, d, previous
        self.required = a is not None  # placed now: stays placed
        self.slots: list[tuple[str, int | None]] = []  # (host, group id; None: needs no GPU)
        self.asks = (d.static if d.gpus else ("cpu", d.labels), d.vram_mib, d.cpus, d.ram_mib, d.spread_hosts,
                     d.deployment if d.spread_hosts else None, d.manual, self.required)
        #: (host, group id, device positions) where it is now
        self.home: tuple[str, int | None, tuple] | None = None
        #: group id -> the device positions manual selection allows there (absent: any)
        self.allowed: dict[int, set[int]] = {}


def place_more(run: _Run, by_key: ByKey, least_vram: float | None = None) -> bool:
    """Search, and apply what places more (see the module); then, where replicas are still left over, the
    search by chains (``_Chains``), on the whole plan and on each pair of hosts (``_by_pairs``). Returns whether
    the plan changed. ``least_vram``: the least VRAM (MiB) the plan may take after the chains (None: what it
    takes now; ``RUN_SLACK`` less than the heuristics' plan: engine.place)."""
    scope = _scope(run, by_key)
    changed = scope is not None and _Search(run, *scope).run()
    if run._failed:
        scope = _scope(run, by_key, CHAIN_ITEMS)
        if scope is not None:
            changed = _Chains(run, *scope, least_vram).run() or changed
    if run._failed:
        changed = _by_pairs(run, by_key, least_vram) or changed
        if changed and run._failed:
            # a replica a search left over may fit a host it did not search (one on a pair of hosts gave way to
            # others there): the fresh search places what now fits, as after the give-way (seed 48 of
            # tests/test_placement_repack.py's exchange test)
            run.retry()
    return changed


def _by_pairs(run: _Run, by_key: ByKey, least_vram: float | None = None) -> bool:
    """Where replicas are still left over: the search by chains again on each pair of hosts in turn, in name
    order, with only the replicas placed there (but kept ones) and those left over, each with only its places
    there: with fewer replicas and places, its discrepancies reach what the search on the whole plan, whose
    first choices keep each replica where it is, walks past. The pairs are swept again while one finds a plan
    that places more, up to ``PAIR_NODES`` steps a search and ``PAIRS_NODES`` in all. Returns whether one did."""
    if len(run.fleet.hosts) > HOSTS or len(run._failed) > CHAIN_ITEMS:
        return False  # (before any work: a big plan with replicas left over passes here)
    hosts = sorted(h.name for h in run.fleet.hosts)
    slots: dict[str, list] = {}  # each replica's places, the same for every pair (its static filters decide)
    budget, changed, found = PAIRS_NODES, False, True
    fruitless: set[tuple] = set()  # a search that found nothing finds nothing again on the same replicas
    while found and run._failed and budget > 0:
        found = False
        for pair in combinations(hosts, 2):
            if not run._failed or budget <= 0:
                break
            items = _items(run, by_key, [a for a in run.placed.values() if a.host in pair and a.status != "kept"],
                           run._failed, set(pair), slots)
            if all(it.a is not None for it in items):
                continue  # none left over may use them
            seen = (pair, frozenset(it.d.key if it.a is None else (it.d.key, it.a.host, it.a.gpus) for it in items))
            if seen in fruitless:
                continue
            search = _Chains(run, items, list(pair), least_vram)
            search.nodes = start = min(PAIR_NODES, budget)
            if search.run():
                found = changed = True
            else:
                fruitless.add(seen)
            budget -= start - max(search.nodes, 0)
    return changed


def _scope(run: _Run, by_key: ByKey, most: int | None = None) -> tuple[list[_Item], list[str]] | None:
    """The items and hosts of a search, or None: nothing left over, or more than ``most`` (``ITEMS``) to search."""
    most = ITEMS if most is None else most
    left = run._failed
    if not left or len(left) > most:
        return None
    flexible = []
    for a in run.placed.values():  # (stops at once on a big plan)
        if a.status != "kept":
            flexible.append(a)
            if len(flexible) + len(left) > most:
                return None
    items = _items(run, by_key, flexible, left)
    hosts = sorted({h for it in items for h, _ in it.slots})
    if len(hosts) > HOSTS:
        return None
    return items, hosts


def _items(run: _Run, by_key: ByKey, placed: list[Assignment], left: list[tuple[Demand, str | None]],
           hosts: set[str] | None = None, known: dict[str, list] | None = None) -> list[_Item]:
    """The items of a search: ``placed`` (assignments) and ``left`` (left over, with the host the lock had them on),
    each with the groups it may use (only on ``hosts``, if given); one with none on them is left out. ``known``:
    the groups of each replica found before, by key (the caller's)."""
    items = [_Item(a, by_key[a.deployment, a.replica], a.previous_host) for a in placed] + \
        [_Item(None, d, prev) for d, prev in left]
    out = []
    for it in items:
        every = known.get(it.d.key) if known is not None else None
        if every is None:
            every = _slots(run, it.d)
            if known is not None:
                known[it.d.key] = every
        it.slots = [s for s in every if hosts is None or s[0] in hosts]
        if not it.slots:
            continue
        if it.d.manual is not None:
            for h, gid in it.slots:
                chosen, devices = it.d.allowed_on(h), run.state.groups[gid].group.devices
                it.allowed[gid] = {i for i, dev in enumerate(devices) if dev.index in chosen}
        out.append(it)
    return out


def _slots(run: _Run, d: Demand) -> list[tuple[str, int | None]]:
    """The groups (hosts, for a replica needing no GPU) whose static filters and manual selection accept ``d``, by
    host name and group: the search, and so the plan, never depends on the order of the files."""
    state = run.state
    if not d.gpus:
        return sorted((h.name, None) for h in run.fleet.hosts if all(f(h, None, d) for f in STATIC if not f.gpu_only))
    out = []
    for lists in run.index.eligible(d):
        for gid in lists.members:
            gs = state.groups[gid]
            if MANUAL(gs.host, gs.group, d):  # (its selection, if any, names enough of the group's devices)
                out.append((gs.host.name, gs.gidx, gid))
    return [(h, gid) for h, _, gid in sorted(out)]


class _Search:
    """The search over copies of the groups and hosts in scope, with every item taken back (see the module)."""

    def __init__(self, run: _Run, items: list[_Item], hosts: list[str]):
        self.owner, self.items = run, items
        state = run.state
        # what the hosts in scope offer once every item is taken back
        self.rooms: dict[int, Room] = {}
        self.cpu = {h: state.cpu_free[h] for h in hosts}
        self.ram = {h: state.ram_free[h] for h in hosts}
        self.ports = {h: state.ports[h].free_count() for h in hosts}
        self.running = {h: dict(state.deployments_on[h]) for h in hosts}
        for it in items:
            for _, gid in it.slots:
                if gid is not None and gid not in self.rooms:
                    self.rooms[gid] = Room(state.groups[gid])
        for it in items:
            a, d = it.a, it.d
            if a is None:
                continue
            h = a.host
            positions, gid = (), None
            if a.vendor is not None:
                gs = run._group_of(a)
                positions, gid = tuple(sorted(gs.pos_of[i] for i in a.gpus)), gs.gid
                vacate(self.rooms[gid], list(positions), d.vram_mib)
            it.home = (h, gid, positions)
            if self.cpu.get(h) is not None:
                self.cpu[h] += d.cpus
            if self.ram.get(h) is not None:
                self.ram[h] += d.ram_mib
            self.ports[h] += 1
            self.running[h][d.deployment] -= 1
        # a replica left over that fits nowhere with every item taken back never will: the search leaves it out
        self.alike: dict[int, tuple] = {}
        self.same: list[bool] = []
        self.choice: list[tuple | None] = []
        items[:] = [it for it in items if it.required or self._options(it, None)]
        # most constrained first (fewest places), the biggest first among equals; alike replicas side by side
        items.sort(key=lambda it: (len(it.slots), -it.d.gpus, -(it.d.vram_mib or 1 << 30), -it.d.cpus,
                                   -it.d.ram_mib, not it.required, repr(it.asks), it.d.deployment, it.d.replica))
        # replicas left over alike in all they ask take slots in order (those placed now start from their own)
        self.same = [k > 0 and not items[k].required and items[k].asks == items[k - 1].asks
                     for k in range(len(items))]
        # groups alike for the search: alone on their host among those searched, the same replicas may use them
        # (and, needing no GPU, their hosts), no manual selection names their host
        groups_on: dict[str, int] = {}
        for gid in self.rooms:
            h = state.groups[gid].host.name
            groups_on[h] = groups_on.get(h, 0) + 1
        named = {h for it in items if it.d.manual is not None for h, _ in it.d.manual}
        users: dict[tuple, list[int]] = {}
        for k, it in enumerate(items):
            for slot in it.slots:
                users.setdefault(slot, []).append(k)
        alike = {gid: (tuple(users.get((state.groups[gid].host.name, gid), ())),
                       tuple(users.get((state.groups[gid].host.name, None), ())), state.groups[gid].group.vram_mib)
                 for gid in self.rooms
                 if groups_on[state.groups[gid].host.name] == 1 and state.groups[gid].host.name not in named}
        twins: dict[tuple, int] = {}
        for key in alike.values():
            twins[key] = twins.get(key, 0) + 1
        self.alike = {gid: key for gid, key in alike.items() if twins[key] > 1}  # (one alone has nothing to cut)
        self.slot_rank = {}
        for it in items:
            for s in it.slots:
                self.slot_rank.setdefault(s, len(self.slot_rank))
        self.optional_after = [0] * (len(items) + 1)
        for k in range(len(items) - 1, -1, -1):
            self.optional_after[k] = self.optional_after[k + 1] + (not items[k].required)
        self.choice = [None] * len(items)
        self.best: tuple[int, int] = (0, 0)  # (left over placed, -moves): only more left over placed counts
        self.best_choice: list | None = None
        self.nodes = NODES
        # what the hosts in scope have free in all (inf where a host declares no CPUs or memory)
        self.free_cpu = inf if any(c is None for c in self.cpu.values()) else sum(self.cpu.values())
        self.free_ram = inf if any(r is None for r in self.ram.values()) else sum(self.ram.values())
        self.free_vram = sum(f for room in self.rooms.values() for f in room.free)

    def run(self) -> bool:
        if all(it.required for it in self.items):
            return False
        self._search(0, 0, 0)
        if self.best_choice is None:
            return False
        self._apply(self.best_choice)
        return True

    def _options(self, it: _Item, k: int | None, first: bool = False) -> list[tuple]:
        """(slot, positions) for ``it`` now: each group or host where it fits, each distinct choice of devices
        (the ``k``-th item of the search; None: any, without the cuts of alike replicas), where it is now first.
        ``first``: only the first (a walk with no choice but the first left to make asks no more: most of the
        steps of the search by chains)."""
        if first and it.home is not None and self._fits_home(it):
            h, gid, positions = it.home
            return [((h, gid), positions)]
        d = it.d
        v, g = d.vram_mib, d.gpus
        lowest = -1
        if k is not None and self.same[k]:  # alike replicas take slots in order: no two branches swap them
            before = self.choice[k - 1]
            lowest = 1 << 30 if before is None else self.slot_rank[before[0]]
        ports, cpu_free, ram_free, running, rooms, alikes = \
            self.ports, self.cpu, self.ram, self.running, self.rooms, self.alike
        out: list[tuple] = []
        seen: set = set()
        home_gid = it.home[1] if it.home is not None else -1
        for slot in it.slots:
            if lowest >= 0 and self.slot_rank[slot] < lowest:
                continue
            h, gid = slot
            if not self._host_takes(d, h):
                continue
            if gid is None:
                out.append((slot, ()))
                if first:
                    return out
                continue
            room = rooms[gid]
            allowed = it.allowed.get(gid)
            if v is None:
                if room.claims.count(0) < g:  # (asked first: most groups fail it)
                    continue
                fits = [i for i, c in enumerate(room.claims) if c == 0 and (allowed is None or i in allowed)]
            else:
                if max(room.free) < v:  # (a device taken whole has none free)
                    continue
                fits = [i for i, (f, x) in enumerate(zip(room.free, room.exclusive))
                        if f >= v and not x and (allowed is None or i in allowed)]
            if len(fits) < g:
                continue
            # groups alike (``alike``) with the same devices and room on their hosts are tried once; its own always
            home = gid == home_gid
            alike = alikes.get(gid)
            if alike is not None and not home:
                look = (alike, tuple(room.free), tuple(room.claims), tuple(room.exclusive), cpu_free[h], ram_free[h],
                        ports[h], tuple(sorted(running[h].items())))
                if look in seen:
                    continue
                seen.add(look)
            mine = it.home[2] if home and all(i in fits for i in it.home[2]) else None
            if v is None:
                out.append((slot, mine or tuple(fits[:g])))  # untouched devices are alike: its own, else the lowest
                if first:
                    return out
                continue
            kinds: set = set()
            free, claims = room.free, room.claims
            for pick in ([mine] if mine else []) + (list(combinations(fits, g)) if g > 1 else [(i,) for i in fits]):
                kind = tuple(sorted([(free[i], claims[i] == 0) for i in pick])) if g > 1 else \
                    (free[pick[0]], claims[pick[0]] == 0)
                if kind not in kinds:
                    kinds.add(kind)
                    out.append((slot, pick))
                    if first:
                        return out
        if it.home is not None:  # where it is first: the plan the steps before found is the first leaf
            h, gid, positions = it.home
            out.sort(key=lambda o: o != ((h, gid), positions))
        return out

    def _fits_home(self, it: _Item) -> bool:
        """Whether ``it`` fits where it is now (``_options`` would give that first)."""
        d = it.d
        h, gid, positions = it.home
        if not self._host_takes(d, h):
            return False
        if gid is None:
            return True
        room = self.rooms[gid]
        if d.vram_mib is None:
            return all(room.claims[i] == 0 for i in positions)
        return all(room.free[i] >= d.vram_mib and not room.exclusive[i] for i in positions)

    def _host_takes(self, d: Demand, h: str) -> bool:
        """Host ``h`` has a port, the CPUs and the memory ``d`` asks free now, and ``spread: hosts`` lets it go
        there (its devices aside)."""
        if self.ports[h] < 1:
            return False
        cpu, ram = self.cpu[h], self.ram[h]
        return not ((cpu is not None and cpu + 1e-9 < d.cpus) or (ram is not None and ram < d.ram_mib) or
                    (d.spread_hosts and self.running[h].get(d.deployment)))

    def _take(self, d: Demand, slot: tuple[str, int | None], pick: tuple) -> None:
        """``d`` takes ``pick`` (device positions) of ``slot``'s group, CPUs, memory and a port of its host."""
        h, gid = slot
        if gid is not None:
            self.free_vram -= occupy(self.rooms[gid], pick, d.vram_mib)
        self.free_cpu -= d.cpus
        self.free_ram -= d.ram_mib
        if self.cpu[h] is not None:
            self.cpu[h] -= d.cpus
        if self.ram[h] is not None:
            self.ram[h] -= d.ram_mib
        self.ports[h] -= 1
        running = self.running[h]
        running[d.deployment] = running.get(d.deployment, 0) + 1

    def _give_back(self, d: Demand, slot: tuple[str, int | None], pick: tuple) -> None:
        """What ``_take`` took, exactly (the devices had room for all it took)."""
        h, gid = slot
        self.running[h][d.deployment] -= 1
        self.ports[h] += 1
        if self.ram[h] is not None:
            self.ram[h] += d.ram_mib
        if self.cpu[h] is not None:
            self.cpu[h] += d.cpus
        self.free_cpu += d.cpus
        self.free_ram += d.ram_mib
        if gid is not None:
            self.free_vram += vacate(self.rooms[gid], pick, d.vram_mib)

    def _search(self, k: int, placed: int, moves: int) -> None:
        self.nodes -= 1
        if self.nodes < 0 or (placed + self.optional_after[k], -moves) <= self.best:
            return
        if k == len(self.items):
            self.best, self.best_choice = (placed, -moves), list(self.choice)
            return
        it = self.items[k]
        d = it.d
        for slot, pick in self._options(it, k):
            h, gid = slot
            self._take(d, slot, pick)
            self.choice[k] = (slot, pick)
            self._search(k + 1, placed + (not it.required), moves + (it.home is not None and it.home != (h, gid, pick)))
            self.choice[k] = None
            self._give_back(d, slot, pick)
            if self.nodes < 0:
                return
        if not it.required:
            self._search(k + 1, placed, moves)

    def _apply(self, choice: list) -> None:
        """Take back every item that moves, then commit each where the search put it."""
        run, state = self.owner, self.owner.state
        moving = []
        for it, got in zip(self.items, choice):
            if got is None:
                continue
            (h, gid), pick = got
            if it.home == (h, gid, tuple(pick)):
                continue  # stays where it is
            moving.append((it, h, gid, pick))
        for it, *_ in moving:
            if it.a is not None:
                run._take_back(it.a, it.d)
        for it, h, gid, pick in moving:
            gs = state.groups[gid] if gid is not None else None
            port = state.ports[h].lowest()
            if it.a is not None:
                run._commit(it.d, h, gs, list(pick), port, it.a.status, it.a.reason, it.a.previous_host)
            else:
                run._commit_placed(it.d, h, gs, list(pick), port, it.previous)
                run.gave_way.pop(it.d.key, None)
        now = {it.d.key for it, *_ in moving if it.a is None}
        run._failed = [(d, prev) for d, prev in run._failed if d.key not in now]


class _Chains(_Search):
    """Where the search above leaves replicas over: chains of moves that may leave a placed replica over, for a plan
    that places more replicas and takes no less VRAM (a device taken whole counted whole: the plan takes VRAM
    first), or no less than ``least_vram`` where given (``place_more``). A whole replica moves to bigger devices,
    one it displaces takes another's place, a 2-GPU replica gives way, and four slices take its room: one choice
    high in the tree, which a depth-first search with a budget of steps never revisits. So the tree is walked by
    limited discrepancy (Harvey and Ginsberg, IJCAI 1995): every replica takes its first option (where it is now,
    else the first place it fits) but for at most ``DISCREPANCIES`` choices anywhere in the order: with one, then
    exactly two, three and four while steps remain (each pass walks only the leaves with its own number: Korf's
    improved LDS, AAAI 1996). A branch is cut where the replicas still to come cannot place more than the best plan
    found: counted whole, and counted by how many of their smallest asks the CPUs, the memory and the VRAM free in
    scope could hold at most (``sums``). A cut step is still a step, but none below it is walked: with the same
    steps a search reaches further (--small-plans' 261 plans: 1,844 -> 1,849, 2,765 -> 2,767 and 3,664 -> 3,683
    replicas placed at 4, 6 and 8 hosts, more VRAM taken at each size)."""

    def __init__(self, run: _Run, items: list[_Item], hosts: list[str], least_vram: float | None = None):
        super().__init__(run, items, hosts)
        items = self.items
        self.size = {gid: run.state.groups[gid].group.vram_mib for gid in self.rooms}
        #: the VRAM the plan's placed items take now: a plan found must take no less, but what the whole plan
        #: takes above ``least_vram``
        self.need = sum(self._vram(it, it.home[1]) for it in items if it.required)
        if least_vram is not None:
            self.need -= max(0.0, run.vram_taken() - least_vram)
        #: the most VRAM the items from k on could add
        self.vram_after = [0] * (len(items) + 1)
        for k in range(len(items) - 1, -1, -1):
            it = items[k]
            self.vram_after[k] = self.vram_after[k + 1] + max((self._vram(it, gid) for _, gid in it.slots), default=0)
        #: per k, the asks of the items from k on, smallest first, summed (CPUs, memory, VRAM at least): as many
        #: of them fit at most as the smallest sums within what the hosts in scope have free (``_fitting``)
        asks = [(it.d.cpus, it.d.ram_mib, min((self._vram(it, gid) for _, gid in it.slots), default=0))
                for it in items]
        self.sums = [tuple(list(accumulate(sorted(a[r] for a in asks[k:]))) for r in range(3))
                     for k in range(len(items) + 1)]
        #: (replicas placed, -moves): a plan found must place more than now
        self.best = (sum(it.required for it in items), 0)
        self.nodes = CHAIN_NODES
        #: per item: the device groups its selectors reach (None: it needs no GPU), and whether it may be left over:
        #: as in the give-way, only replicas new in this plan (a moved one runs now, on the host the lock had it on)
        #: without manual GPU selection
        cache: dict[tuple, int] = {}
        self.reach = [selector_reach(run, it.d, cache) if it.d.gpus else None for it in items]
        self.may_leave = [it.a is None or (it.a.status == "new" and it.d.manual is None) for it in items]

    def _vram(self, it: _Item, gid: int | None) -> int:
        d = it.d
        if gid is None or not d.gpus:
            return 0
        return d.gpus * (self.size[gid] if d.vram_mib is None else d.vram_mib)

    def _most(self) -> int:
        """At most how many items fit at once: as many of the smallest asks as the CPUs, the memory, the ports and
        the free VRAM in scope hold, each counted alone (a replica asking whole devices counts them whole, the
        smallest it may use)."""
        return min(sum(self.ports.values()), self._fitting(0))

    def _fitting(self, k: int) -> int:
        """At most how many of the items from ``k`` on fit what is free in scope now: as many of their smallest
        asks as the VRAM, the CPUs and the memory hold, each counted alone (``sums``)."""
        cpus, ram, vrams = self.sums[k]
        return min(bisect_right(vrams, self.free_vram), bisect_right(cpus, self.free_cpu + 1e-9),
                   bisect_right(ram, self.free_ram))

    def run(self) -> bool:
        if self._most() <= self.best[0]:
            return False  # no more fit than are placed now
        for budget in range(1, DISCREPANCIES + 1):
            self._walk(0, 0, 0, 0, budget, 0, 1 << 62)
            if self.nodes < 0:
                break
        if self.best_choice is None:
            return False
        self._apply(self.best_choice)
        return True

    def _walk(self, k: int, placed: int, moves: int, vram: int, budget: int, widest: int, narrowest: int) -> None:
        """Item ``k`` on, with ``budget`` choices other than the first still to make. ``widest``: the most device
        groups the selectors reach of a replica this walk places that was left over; ``narrowest``: the fewest
        of one it leaves over that was placed. As in the give-way, a replica never gives way to replicas whose
        selectors reach more (most constrained first placed it before them)."""
        items = self.items
        self.nodes -= 1
        if self.nodes < 0 or (placed + len(items) - k, -moves) <= self.best or \
                vram + self.vram_after[k] < self.need or widest > narrowest:
            return
        if (placed + self._fitting(k), -moves) <= self.best:
            return  # no more can be placed than the VRAM, CPUs and memory free hold of the smallest asks left
        if budget > len(items) - k:
            return  # (each pass walks only the leaves with exactly its number of discrepancies: the others were)
        if k == len(items):
            self.best, self.best_choice = (placed, -moves), list(self.choice)
            return
        it = items[k]
        d = it.d
        reach = self.reach[k]
        options = self._options(it, k, first=not budget)
        for i, (slot, pick) in enumerate(options):
            h, gid = slot
            self._take(d, slot, pick)
            self.choice[k] = (slot, pick)
            self._walk(k + 1, placed + 1, moves + (it.home is not None and it.home != (h, gid, pick)),
                       vram + self._vram(it, gid), budget - (i > 0),
                       widest if it.required or reach is None else max(widest, reach), narrowest)
            self.choice[k] = None
            self._give_back(d, slot, pick)
            if self.nodes < 0:
                return
        if (not options or budget) and (not it.required or self.may_leave[k]):  # left over (a placed one gives way)
            self._walk(k + 1, placed, moves + it.required, vram, budget - bool(options), widest,
                       narrowest if not it.required or reach is None else min(narrowest, reach))

    def _apply(self, choice: list) -> None:
        """Take back what gives way, apply the moves, and file what gave way as left over, saying why."""
        run = self.owner
        dropped = [it for it, got in zip(self.items, choice) if got is None and it.a is not None]
        for it in dropped:
            run._take_back(it.a, it.d)
        super()._apply(choice)
        gained = sum(1 for it, got in zip(self.items, choice) if got is not None and it.a is None)
        for it in dropped:
            run._failed.append((it.d, it.previous))
            run.left_for_more[it.d.key] = (it.a.host, gained - len(dropped))
