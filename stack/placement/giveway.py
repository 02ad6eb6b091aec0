"""The give-way step (engine step 2f): in a full pool, one placed replica's room for several left over.

Biggest first fills a pool with its biggest claims. When more is asked of a pool (a vendor, a device size, a
zone) than it holds, what is left over is its smallest claims: on the issue's selector fleet
(`bench/placement.py` ``selectors``, seed 1, 10,000 replicas) binpack left 633 replicas over, 147 of them
4 GiB slices of an overloaded AMD pool whose 8 and 16 GiB slices ran, where spread left 389.

So the step takes the replicas left over, smallest first, and for each looks for a replica this plan places
new, on a group that one may use and bigger than it (smallest first: the cheapest room), whose room, once
taken back, holds it and at least one more replica left over, which together take at least the VRAM it held
(a whole device counted whole). That replica is then left over itself (its explanation says it gave its
place) and the others take its room. Every give-way places one replica more at least and never allocates
less VRAM: a plan only gains, in replicas and, where the others also fill what the group had free, in GPUs.

Kept and moved replicas never give way: their containers run now. A dry run on copies of the group and the
host decides before anything changes, under the same rules as the filters (devices, CPUs, memory, ports,
``spread: hosts``). Bounded: BUDGET candidates in all, each looked at once per shape of replica left over
(``resume``), and rooms alike to one where a dry run found no way are not tried again (``futile``).
"""
from __future__ import annotations

from bisect import bisect_right
from math import inf
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING

from .model import Assignment, Demand
from .state import GroupState, choose_devices, occupy, vacate

if TYPE_CHECKING:
    from .engine import _Run


class Room:
    """Copies of a group's devices for a dry run: what ``choose_devices``, ``devices_fit`` and ``vacate`` read."""
    __slots__ = ("claims", "exclusive", "free", "group")

    def __init__(self, gs: GroupState):
        self.free, self.claims, self.exclusive, self.group = list(gs.free), list(gs.claims), list(gs.exclusive), gs.group


class Kind:
    """Left-over replicas alike in all a dry run asks of them, in the order left over, and how many of them are
    still left over (a give-way that places one counts it out for every class that may take it)."""
    __slots__ = ("cpus", "first", "gpus", "left", "ram_mib", "replicas", "vram_mib", "whole")

    def __init__(self, first: int, w: Demand):
        self.first, self.vram_mib, self.gpus, self.cpus, self.ram_mib, self.whole = \
            first, w.vram_mib, w.gpus, w.cpus, w.ram_mib, w.whole
        self.replicas: list[tuple[Demand, str | None]] = []
        self.left = 0


class Takers:
    """The kinds of left-over replicas a class of groups (devices of ``size`` MiB) may take, in the order of
    their first replica left over: (VRAM per device, VRAM in all, CPUs, memory, kind) each, so a dry run asks
    each kind once, not each replica."""

    def __init__(self, kinds: list[Kind], size: int):
        self.kinds = [(size if k.whole else k.vram_mib, k.gpus * (size if k.whole else k.vram_mib), k.cpus, k.ram_mib,
                       k) for k in sorted(kinds, key=attrgetter("first"))]
        #: the smallest slice of a device any of them asks (a whole device for a whole claim)
        self.smallest = min(t[0] for t in self.kinds)
        #: the least CPUs and memory any of them asks
        self.least = (min(t[2] for t in self.kinds), min(t[3] for t in self.kinds))
        #: the kinds by VRAM asked per CPU, and per MiB of memory, most first (``most``)
        self._by_cpu = sorted(self.kinds, key=lambda t: -t[1] / t[2] if t[2] else -inf)
        self._by_ram = sorted(self.kinds, key=lambda t: -t[1] / t[3] if t[3] else -inf)
        #: some of them may not share a host with their deployment's other replicas
        self.spread = any(w.spread_hosts for t in self.kinds for w, _ in t[4].replicas)

    def most(self, cpus: float | None, ram_mib: int | None, cap: int) -> float:
        """A bound on the VRAM those still left over could take with ``cpus`` and ``ram_mib`` (None: not
        counted), none asking more than ``cap``: the smaller of two fractional knapsacks, one per resource."""
        return min(self._greedy(self._by_cpu, 2, cpus, cap), self._greedy(self._by_ram, 3, ram_mib, cap))

    @staticmethod
    def _greedy(order: list, at: int, budget, cap: int) -> float:
        total = 0.0
        for t in order:
            n, vram, ask = t[4].left, t[1], t[at]
            if not n or vram > cap:
                continue
            if budget is None or not ask or budget >= ask * n:
                total += vram * n
                if budget is not None:
                    budget -= ask * n
            else:
                return total + vram * budget / ask
        return total


class GiveWay:
    #: candidate replicas to give way the step looks at, over the whole run
    BUDGET = 5_000

    def __init__(self, run: _Run, failed: list[tuple[Demand, str | None]]):
        """``failed``: the GPU replicas left over (manual selection aside) and the hosts the lock had them on."""
        self.owner, self.failed = run, failed
        by_key = run.by_key
        held_by: dict[tuple, list[tuple]] = {}  # class key -> (VRAM held, key, assignment, demand)
        for a in run.placed.values():
            if a.status == "new" and a.vendor is not None:
                gs = run._group_of(a)
                held = len(a.gpus) * (gs.group.vram_mib if a.whole else a.vram_mib)
                held_by.setdefault(run.index.class_of[gs.gid], []).append((held, a.key, a, by_key[a.key]))
        #: class key -> (VRAM held, [(held, assignment, demand)]): the replicas that may give way, smallest first
        self.donors: dict[tuple, tuple[list, list]] = {}
        for key, lst in held_by.items():
            lst.sort(key=itemgetter(0, 1))
            self.donors[key] = ([x[0] for x in lst], [(x[0], x[2], x[3]) for x in lst])
        #: static shape -> the kinds of left-over replicas of that shape; replica -> its kind
        self.kinds: dict[tuple, list[Kind]] = {}
        self.kind_of: dict[tuple, Kind] = {}
        alike: dict[tuple, Kind] = {}
        for i, (w, prev) in enumerate(self.failed):
            shape = (w.static, w.vram_mib, w.gpus, w.cpus, w.ram_mib, w.spread_hosts)
            kind = alike.get(shape)
            if kind is None:
                kind = alike[shape] = Kind(i, w)
                self.kinds.setdefault(shape[0], []).append(kind)
            kind.replicas.append((w, prev))
            kind.left += 1
            self.kind_of[w.deployment, w.replica] = kind
        self.budget = self.BUDGET
        self.done: set[tuple] = set()  # left-over replicas a give-way placed
        self.takers: dict[tuple, Takers] = {}  # class key -> the left-over replicas its groups may take
        self.resume: dict[tuple, int] = {}  # (shape, class key) -> where the search for that shape goes on
        self.futile: set[tuple] = set()  # rooms a dry run found no way in, per shape

    def run(self) -> None:
        tried: set[tuple] = set()  # shapes no give-way helped
        # smallest first (the fresh pass's order reversed). On 30 fleets of bench/placement.py --resources, GPUs
        # allocated at load 1.0 and 1.3: 98.90 % and 99.55 %, against 98.75 % and 99.45 % biggest first (which
        # leaves fewer replicas over on the selector fleets: 149-189 against 197-264 on the four worst seeds)
        for u, previous in reversed(self.failed):
            if self.budget <= 0:
                break
            if (u.deployment, u.replica) in self.done:
                continue
            shape = (u.static, u.vram_mib, u.cpus, u.ram_mib)
            if shape not in tried and not self.make_room(u, previous, shape):
                tried.add(shape)
        done = self.done
        self.owner._failed = [(d, p) for d, p in self.owner._failed if (d.deployment, d.replica) not in done]

    def make_room(self, u: Demand, previous: str | None, shape: tuple) -> bool:
        """The smallest replica ``u``'s pool holds that makes room for ``u`` and at least one more left over.
        Each donor is looked at once per shape: the ones before ``resume`` gave no way (a give-way since may
        have changed a host of theirs: the search is a bounded heuristic)."""
        run = self.owner
        state, index = run.state, run.index
        for lists in index.eligible(u):
            key = index.class_of[lists.members[0]]
            there = self.donors.get(key)
            if there is None:
                continue
            size = lists.rep.group.vram_mib
            own = u.gpus * (size if u.whole else u.vram_mib)
            helds, entries = there
            mine = self.takers.get(key)
            if mine is None:
                mine = self.takers[key] = Takers([k for shape, kinds in self.kinds.items()
                                                  if run._static_ok(lists.rep, kinds[0].replicas[0][0]) for k in kinds],
                                                 size)
            smallest = mine.smallest  # (u is among them)
            least_cpu, least_ram = mine.least
            at = (shape, key)
            i = self.resume.get(at)
            if i is None:
                i = bisect_right(helds, own)  # bigger than u only
            while i < len(entries):
                held, a, d = entries[i]
                i += 1
                if run.placed.get((a.deployment, a.replica)) is not a:
                    continue  # gave way already
                self.budget -= 1
                if self.budget < 0:
                    self.resume[at] = i - 1
                    return False
                host = a.host
                cpu, ram = state.cpu_free[host], state.ram_free[host]  # once a is out and u in
                if cpu is not None:
                    cpu += d.cpus - u.cpus
                if ram is not None:
                    ram += d.ram_mib - u.ram_mib
                if (cpu is not None and cpu + 1e-9 < least_cpu) or (ram is not None and ram < least_ram):
                    continue  # no CPUs or memory for a second
                if mine.most(cpu, ram, held) < max(1, held - own):
                    continue  # not for enough of them to take all the room a held
                gs = run._group_of(a)
                # a room like one a dry run found no way in (more left-over replicas placed never opens one)
                room = (at, held, d.cpus, d.ram_mib, d.whole, tuple(sorted(gs.free)), tuple(sorted(gs.claims)),
                        cpu, ram, state.ports[host].free_count())
                if room in self.futile or not run._would_fit(u, [(a, d)], gs):
                    continue
                chosen = self.refill(gs, a, d, held, smallest, u, previous, mine)
                if chosen is not None:
                    self.apply(gs, a, d, chosen)
                    self.resume[at] = i
                    return True
                if not mine.spread:  # (hard anti-affinity makes the answer the host's own)
                    self.futile.add(room)
            self.resume[at] = i
        return False

    def refill(self, gs: GroupState, a: Assignment, d: Demand, held: int, smallest: int, u: Demand, previous,
               takers: Takers) -> list | None:
        """A dry run: once ``a`` (``d``) is taken back off ``gs``, does ``u`` fit there, and which of ``takers``
        after it, kind by kind, on copies of the group's devices and the host's CPUs, memory and ports? Returns
        them if two or more fit and together take at least the VRAM ``a`` held (a whole device counted whole),
        else None. ``smallest``: the smallest slice of a device any of them asks (below it, nothing more fits)."""
        state, host = self.owner.state, a.host
        room = Room(gs)
        free = room.free
        vacate(room, [gs.pos_of[i] for i in a.gpus], d.vram_mib)
        cpu, ram = state.cpu_free[host], state.ram_free[host]
        left = [None if cpu is None else cpu + d.cpus, None if ram is None else ram + d.ram_mib,
                state.ports[host].free_count() + 1, 0]  # CPUs, memory, ports; VRAM taken
        running = dict(state.deployments_on[host])
        running[d.deployment] -= 1
        if not _dry_place(room, left, running, u, host):
            return None
        chosen = [(u, previous)]
        done = self.done
        least_cpu, least_ram = takers.least
        biggest, c, r = max(free), left[0], left[1]
        for per, _, cpus, ram_mib, kind in takers.kinds:
            if not kind.left or per > biggest or (c is not None and c + 1e-9 < cpus) or \
                    (r is not None and r < ram_mib):
                continue
            before = len(chosen)
            for w, prev in kind.replicas:
                if w is u or (w.deployment, w.replica) in done or (w.spread_hosts and running.get(w.deployment)):
                    continue
                if not _dry_place(room, left, running, w, host):
                    break  # the kind's others ask the same
                chosen.append((w, prev))
            if len(chosen) == before:
                continue
            biggest, c, r = max(free), left[0], left[1]
            if left[2] < 1 or biggest < smallest or (c is not None and c + 1e-9 < least_cpu) or \
                    (r is not None and r < least_ram):
                break  # nothing more fits
        if len(chosen) >= 2 and left[3] >= held:  # more replicas, and no VRAM given up
            return chosen
        return None

    def apply(self, gs: GroupState, a: Assignment, d: Demand, chosen: list) -> None:
        """What ``refill`` found: ``a`` is left over, ``chosen`` take its room (on the same devices)."""
        run, host = self.owner, a.host
        run._drop(a)
        run.state.release(gs, [gs.pos_of[i] for i in a.gpus], d, host, a.port)
        run._room_again(host, gs)
        for w, prev in chosen:
            at = choose_devices(gs, w, w.allowed_on(host))
            assert at is not None  # the dry run placed it on these devices
            run._commit_placed(w, host, gs, at, run.state.ports[host].lowest(), prev)
            key = (w.deployment, w.replica)
            self.done.add(key)
            self.kind_of[key].left -= 1
        run._failed.append((d, None))
        run.gave_way[a.key] = (host, len(chosen))


def _dry_place(room: Room, left: list, running: dict, w: Demand, host: str) -> bool:
    """Put ``w`` on a dry run's copies (``GiveWay.refill``) if it fits them."""
    cpu, ram = left[0], left[1]
    if left[2] < 1 or (cpu is not None and cpu + 1e-9 < w.cpus) or (ram is not None and ram < w.ram_mib) or \
            (w.spread_hosts and running.get(w.deployment)):
        return False
    at = choose_devices(room, w, w.allowed_on(host))
    if at is None:
        return False
    occupy(room, at, w.vram_mib)
    left[0] = None if cpu is None else cpu - w.cpus
    left[1] = None if ram is None else ram - w.ram_mib
    left[2] -= 1
    left[3] += w.gpus * (room.group.vram_mib if w.whole else w.vram_mib)
    running[w.deployment] = running.get(w.deployment, 0) + 1
    return True
