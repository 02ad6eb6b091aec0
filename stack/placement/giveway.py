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

Kept and moved replicas never give way: their containers run now. Nor do replicas with manual GPU selection (the
dry runs leave selection out). Nor does a replica whose selectors (framework, vendor, labels, GPU model) reach
fewer device groups give way to replicas whose selectors reach more (``reach``): most-constrained-first placed it
before them, and a give-way must not undo that. (Without this rule, 89 of the 506 give-ways on the process bench
and 588 of 787 on the selector fleet at 124 % of its GPUs asked left such a replica over for more flexible ones;
there binpack then left 1,133 replicas over, with the rule alone 454, spread 402.) A dry run on copies of the
group and the host decides before anything changes, under the same rules as the filters (devices, CPUs, memory,
ports, ``spread: hosts``); it fills the room with the replicas that take the most VRAM per CPU first (those asking
no CPUs first, the most VRAM first among them), then per MiB of memory, then in the order left over (``refill``).
Before it, bounds that cannot turn a give-way away: CPUs and memory for a second replica, and what the room's
devices, CPUs and memory could hold of those left over at best (``Takers.short_of``, a fractional knapsack per
resource with the devices' VRAM as caps).

A second pass does the same for the replicas that gave way, smallest first, and they join those a room may
take: a 1-GPU replica that gave its device to two slices takes, with another 1-GPU replica, the devices of a
2-GPU one (which then gives way in turn). A third, while the budget lasts, takes the donors again, so replicas
a give-way placed may give way too (a 32 GiB slice it put on a device gives its place to 12 + 12 + 8 GiB ones),
and a room there also tries the replicas alike to the one it is made for first (three 16 GiB slices fill a
48 GiB device where the most VRAM first, a 24 after a 16, leaves 8 GiB over). Late, so those give-ways, which
gain no VRAM, never take a room from one that does: asked from the first pass on, on twenty of the
CPU-and-memory fleets, they left 46 replicas over per fleet instead of 77 but allocated 98.84 % of the GPUs
instead of 98.89 %.

Bounded: BUDGET candidates, plus PER_LEFT_OVER per replica left over, in all; PATIENCE per replica left over
before its shape is given up, until the others have had their turn: then it goes on where it stopped, with the
budget left; ROUNDS rounds of the third pass, while a round finds enough (LAST_ROUND_SHARE); each candidate
looked at once per shape and pass (``resume``), and rooms alike to one found with no way in are not tried again
in a pass (``futile``; the third pass's rounds keep them from one to the next). A candidate turned
away by such a memo, or by its host's CPUs and memory, costs a tenth of one looked at (``CHEAP``). On the
2,000-host process bench (9,145 replicas, 121 % of the GPUs asked) the step leaves 126 replicas over where the
fresh pass left 1,972 (with a fixed budget of 5,000, the order left over alone and no second pass: 1,735; every
candidate counted whole: 147).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from itertools import chain
from math import gcd, inf
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
        self.free, self.claims, self.exclusive = list(gs.free), list(gs.claims), list(gs.exclusive)
        self.group = gs.group


def selector_reach(run: _Run, d: Demand, cache: dict[tuple, int]) -> int:
    """How many device groups ``d``'s selectors let it use, whatever their size (``GiveWay.reach``); ``cache``:
    the caller's, by selectors."""
    key = (d.framework, d.labels, d.vendor, d.gpu_model, d.manual)
    got = cache.get(key)
    if got is None:
        got = cache[key] = run.constrained(
            Demand("", 0, d.framework, 1, None, 0, d.labels, d.vendor, d.gpu_model, d.manual))
    return got


class Kind:
    """Left-over replicas alike in all a dry run asks of them: those still left over, in the order they were left
    over (a give-way that places one takes it out for every class that may take it)."""
    __slots__ = ("cpus", "first", "gpus", "ram_mib", "reach", "rep", "replicas", "spread", "vram_mib", "whole")

    def __init__(self, first: int, w: Demand, reach: int):
        self.first, self.vram_mib, self.gpus, self.cpus, self.ram_mib, self.whole, self.spread, self.rep = \
            first, w.vram_mib, w.gpus, w.cpus, w.ram_mib, w.whole, w.spread_hosts, w
        #: how many device groups their selectors let them use (``GiveWay.reach``)
        self.reach = reach
        #: those still left over, and the hosts the lock had them on
        self.replicas: list[tuple[Demand, str | None]] = []


class Takers:
    """The kinds of left-over replicas a class of groups (devices of ``size`` MiB) may take, in the order of
    their first replica left over: (VRAM per device, VRAM in all, CPUs, memory, kind) each, so a dry run asks
    each kind once, not each replica."""

    def __init__(self, kinds: list[Kind], group: GroupState, clock: list[int] | None = None):
        """``kinds``: those whose static filters ``group``'s class passes, some maybe with none left over (they
        count for ``smallest``, ``least``, ``spread`` and the slices, never in the orders). ``clock``: a count
        shared by every class's takers, moved on when some kind's replicas left over change (``answers``)."""
        #: a group of the class (what ``add`` checks a kind against) and its devices' size
        self.group, self.size = group, group.group.vram_mib
        self.kinds = [self._entry(k) for k in sorted(kinds, key=attrgetter("first"))]
        #: the smallest slice of a device any of them asks (a whole device for a whole claim)
        self.smallest = min(t[0] for t in self.kinds)
        #: the least CPUs and memory any of them asks
        self.least = (min(t[2] for t in self.kinds), min(t[3] for t in self.kinds))
        #: the kinds by VRAM asked per CPU, and per MiB of memory, most first (``short_of``); those asking none first,
        #: the most VRAM first among them (with no CPUs asked anywhere, the first order then fills a room with whole
        #: devices before slices break them: on the selector fleet at 124 %, 440 -> 251 left over); ties in the
        #: order left over
        self._by_cpu = sorted(self.kinds, key=_per_cpu)
        self._by_ram = sorted(self.kinds, key=_per_ram)
        #: the orders a dry run fills a room in (``GiveWay.refill``): the most VRAM per CPU first, then per MiB of
        #: memory, then the order left over, where those differ
        self.orders: list[list] = []
        self._distinct_orders()
        #: some of them may not share a host with their deployment's other replicas
        self.spread = any(t[4].spread for t in self.kinds)
        #: shared slices they ask of one device, and whether any takes a device whole (``room_for``)
        self._slices = {t[0] for t in self.kinds if not t[4].whole and t[0] > 0}  # (a 0 MiB slice fills nothing)
        self._any_whole = any(t[4].whole for t in self.kinds)
        self._unit, self._fills = _fill_table(sorted(self._slices), self.size)
        #: the knapsacks' answers while no kind's replicas change, that is while the clock shared by every class's
        #: takers stands (the give-way moves it on once, where each give-way and rejoin told every class's takers to
        #: forget: 36,000 calls on the process bench): rooms repeat, each host's CPUs and memory too, and a third of
        #: the bounds the process bench asks were asked before
        self._most: dict[tuple, float] = {}
        self._clock = [0] if clock is None else clock
        self._at = self._clock[0]
        #: kind -> its entry, the one tuple each order holds for it (``drop``)
        self._entry_of = {t[4]: t for t in self.kinds}
        self.prune()

    def _entry(self, k: Kind) -> tuple:
        per = self.size if k.whole else k.vram_mib
        return per, k.gpus * per, k.cpus, k.ram_mib, k

    def _distinct_orders(self) -> None:
        self.orders[:] = []
        for order in (self._by_cpu, self._by_ram, self.kinds):
            if all(order != other for other in self.orders):
                self.orders.append(order)

    def add(self, kind: Kind) -> None:
        """``kind``, with none left over until now (new, or pruned), has one: it takes the place in each order
        that making the takers again would give it (orders sort by ``first`` where their keys tie; a kind's
        ``first`` is its own). A replica that gave way rejoins this way: made again each time, the takers of
        every class took 2.5 % of the process bench's placement."""
        t = self._entry_of[kind] = self._entry(kind)
        insort(self.kinds, t, key=_first)
        insort(self._by_cpu, t, key=_per_cpu)
        insort(self._by_ram, t, key=_per_ram)
        self._distinct_orders()  # (pruned lists, equal where the lists made again are: a duplicate tries nothing new)
        self.smallest = min(self.smallest, t[0])
        self.least = (min(self.least[0], t[2]), min(self.least[1], t[3]))
        self.spread = self.spread or kind.spread
        if kind.whole:
            self._any_whole = True
        elif t[0] > 0 and t[0] not in self._slices:
            self._slices.add(t[0])
            self._unit, self._fills = _fill_table(sorted(self._slices), self.size)
        self._most.clear()

    def answers(self) -> dict[tuple, float]:
        """The knapsacks' answers that still hold (``_knapsack``)."""
        if self._at != self._clock[0]:
            self._most.clear()
            self._at = self._clock[0]
        return self._most

    def prune(self) -> None:
        """Drop the kinds none of which is left over any more from every order (in place: ``orders`` holds
        the same lists)."""
        self.drop([t[4] for t in self.kinds if not t[4].replicas])

    def drop(self, kinds: list[Kind]) -> None:
        """Drop ``kinds``, none of which is left over any more, from every order where they are (in place). Each
        takers made every order again for each kind a give-way emptied: 3 % of the process bench's placement."""
        for kind in kinds:
            t = self._entry_of.pop(kind, None)
            if t is not None:
                for order in (self.kinds, self._by_cpu, self._by_ram):
                    order.remove(t)  # (the entry itself: another kind's never compares equal)

    def room_for(self, room: Room) -> tuple[float, float, int, int]:
        """What ``room``'s devices offer them: VRAM on devices a whole claim could take, whole; VRAM their slices
        could fill (per device, the most its free VRAM holds of the slices they ask, any number of each); and
        how many devices each is on. A device may count in both: the two cap ``short_of``'s kinds taken whole and
        shared, and a kind asking more devices than there are is not counted."""
        fills, size = self._fills, self.size
        untouched = room.claims.count(0)
        wholes = untouched * size if self._any_whole else 0
        slices = shared = 0
        unit = self._unit
        for f, x in zip(room.free, room.exclusive):
            if not x and f:
                shared += 1
                slices += f if fills is None else fills[f // unit]  # (too fine-grained to tabulate: f itself)
        return wholes, slices, untouched, shared

    def short_of(self, need: float, cpus: float | None, ram_mib: int | None,
                 room: tuple = (inf, inf, inf, inf)) -> bool:
        """Whether a bound on the VRAM those still left over could take is below ``need``, with ``cpus`` and
        ``ram_mib`` (None: not counted) and (``room``, from ``room_for``) no more VRAM taken whole, or in slices,
        than the devices offer. The bound is the smaller of two fractional knapsacks, one per resource. Each is
        the linear relaxation's optimum: with the two caps, the best per unit of the resource first, each kind as
        far as its cap allows. (Until 2026-12-03 kinds asking more than the VRAM the donor held were left out,
        which turned away rooms whose devices had more free: tests/test_placement_giveway.py. No plan of the
        benches' fleets changed.) The knapsack per MiB of memory is solved only where the one per CPU reaches
        ``need``, and each is remembered apart: on the process bench 10,400 knapsacks solved, where taking the
        smaller of both for each bound solved 17,100."""
        return self._knapsack(0, cpus, room) < need or self._knapsack(1, ram_mib, room) < need

    def _knapsack(self, per: int, budget, room: tuple) -> float:
        """One of ``short_of``'s two knapsacks (``per``: 0 by CPUs, 1 by memory), remembered while the clock stands:
        the one by CPUs depends not on the memory, nor the one by memory on the CPUs."""
        key = (per, budget, room)
        known = self._most if self._at == self._clock[0] else self.answers()
        got = known.get(key)
        if got is None:
            got = known[key] = self._greedy(self._by_ram, 3, budget, room) if per else \
                self._greedy(self._by_cpu, 2, budget, room)
        return got

    @staticmethod
    def _greedy(order: list, at: int, budget, room: tuple) -> float:
        total = 0.0
        offer = [room[1], room[0]]  # by kind.whole: VRAM in slices, VRAM whole
        devices = (room[3], room[2])  # and the devices with some free, and untouched
        for t in order:
            kind = t[4]
            n, vram, ask = len(kind.replicas), t[1], t[at]
            if not n or vram <= 0:
                continue
            whole = kind.whole
            if kind.gpus > devices[whole]:
                continue
            take = vram * n
            if take > offer[whole]:
                take = offer[whole]
                if take <= 0:
                    if offer[not whole] <= 0:
                        return total  # the devices hold no more
                    continue
            if budget is not None and ask:
                afford = budget * vram / ask
                if afford <= take:
                    return total + afford
                budget -= take * ask / vram
            total += take
            offer[whole] -= take
        return total


class GiveWay:
    #: candidate replicas to give way the step looks at, over the whole run: BUDGET, and PER_LEFT_OVER more for
    #: each replica left over (the work grows with the plan, not past it). On the 2,000-host process bench
    #: (1,972 GPU replicas left over) the step spent all 24,720 until cheap turns cost a tenth of a look (CHEAP);
    #: now it spends 8,248 of them (4,000 hosts: 23,458 of 46,870); with half the budget it leaves the same 126 over.
    BUDGET = 5_000
    PER_LEFT_OVER = 10
    #: candidates one replica left over looks at before its shape is given up: a shape no room takes looked at
    #: every placed replica of its pool (5,000-15,000 each on that bench), where the give-ways found take a
    #: median of 2 and rarely more than a few hundred
    PATIENCE = 1_000
    #: what a candidate costs of the budget and of PATIENCE, in tenths of a look: a whole look (LOOK) once it
    #: reaches the bounds and dry runs, a tenth (CHEAP) where a check of a few lookups turns it away before them
    #: (its host lacks the CPUs or memory for a second replica; its room is alike to one found with no way in).
    #: Counted whole until 2026-12-04, those cheap turns spent 23,000 of the 26,000 candidates of the budget on
    #: the process bench's workload built in Python (bench_workload(2000, 20261121)) and the step left 1,230
    #: replicas over where, so counted, it leaves 129 (the process bench, from its files: 147 -> 126; ten
    #: CPU-and-memory fleets of 300 hosts at load 1.0: 67 -> 28 per fleet, 98.76 % of GPUs), for about a
    #: third more time in the step. A tenth, not nothing: the walk past them stays bounded.
    LOOK, CHEAP = 10, 1
    #: rounds of the third pass at most (before CHEAP, one or two used up the budget)
    ROUNDS = 4
    #: a round of the third pass that gives way for fewer than this share of the replicas still left over is its
    #: last. Rounds find fewer and fewer: the process bench's project at 2,000 hosts found 6 then none (126 left
    #: over), at 4,000 hosts 46, 13, 5 and 1 (about 0.6 s each, where the second pass takes 0.5 s in all). With
    #: the rule and the memos kept from round to round (``_once_more``): 5.65 -> 5.30 billion instructions to
    #: place at 2,000 hosts, 16.0 -> 13.8 billion at 4,000 (252 -> 254 left over); on ten CPU-and-memory fleets
    #: (300 hosts, loads 1.0 and 1.3) 259 -> 262 and 1,052 -> 1,056 left over in all, on four selector fleets at
    #: 11,000 replicas 682 -> 686, at 10,000 298 either way (rule alone: 2,000 hosts as both, 4,000 hosts 13.5
    #: billion but 258 left over)
    LAST_ROUND_SHARE = 0.05

    def __init__(self, run: _Run, failed: list[tuple[Demand, str | None]]):
        """``failed``: the GPU replicas left over (manual selection aside) and the hosts the lock had them on."""
        self.owner, self.failed = run, failed
        self._reach: dict[tuple, int] = {}
        #: class key -> (VRAM held, [entry]): the replicas that may give way, smallest first, each entry a list
        #: (``_entry``)
        self.donors: dict[tuple, tuple[list, list]] = {}
        #: host -> [its version]: moved on with each give-way there, the only change to hosts while the step runs;
        #: each donor's entry holds its host's cell, so a search reads it without a lookup
        self.cells: dict[str, list[int]] = {}
        self._take_donors()
        #: static shape -> the kinds of left-over replicas of that shape; replica -> its kind
        self.kinds: dict[tuple, list[Kind]] = {}
        self.kind_of: dict[tuple, Kind] = {}
        self.alike: dict[tuple, Kind] = {}  # all a dry run asks of a replica -> its kind
        for i, (w, prev) in enumerate(self.failed):
            self._join(w, prev, i)
        #: replicas that gave way in the first pass (``run``); None in the second, where they rejoin at once
        self.gave: list[Demand] | None = []
        #: the second pass's replicas to make room for: those that gave way, and rejoined the kinds left over
        self.rejoined: list[tuple[Demand, str | None]] = []
        #: shapes a search gave up on for PATIENCE (not for the budget) since the last round
        self.impatient: set[tuple] = set()
        self.budget = (self.BUDGET + self.PER_LEFT_OVER * len(failed)) * self.LOOK  # (in tenths of a look)
        self.done: set[tuple] = set()  # left-over replicas a give-way placed
        self.applied = 0  # give-ways made
        self.late = False  # the third pass: rooms also try the replicas alike to the one they are made for first
        self.takers: dict[tuple, Takers] = {}  # class key -> the left-over replicas its groups may take
        self.clock = [0]  # moved on when some kind's replicas left over change: the takers' answers no longer hold
        self.resume: dict[tuple, int] = {}  # (shape, class key) -> where the search for that shape goes on
        #: rooms a dry run found no way in, per shape: the (shape, class) search's number << 32 | the room's number
        self.futile: set[int] = set()
        #: group -> its devices' free VRAM and claims, sorted (what ``futile`` compares), until a give-way there:
        #: as a number, one per distinct look (``futile``'s keys are hashed for every candidate, and a tuple
        #: hashes all it holds each time)
        self.looks: dict[int, int] = {}
        self.look_ids: dict[tuple, int] = {}
        self.at_ids: dict[tuple, int] = {}  # (shape, class key) as a number, likewise
        #: every distinct room (``_room_id``) -> its number
        self.room_numbers: dict[tuple, int] = {}
        #: hosts a give-way changed since the round began, the (shape, class) searches that walked all their donors
        #: in it, and those that did in the round before; for those, ``changed`` holds the donors on hosts the
        #: round before changed (``_once_more``)
        self.touched: set[str] = set()
        self.walked: set[tuple] = set()
        self.walked_before: set[tuple] = set()
        self.changed: dict[tuple, tuple[list, list]] = {}
        #: what give-ways placed since the donors were last taken, and the classes donors left by giving way
        #: (``_add_donors``)
        self.placed_since: list[tuple[Assignment, Demand, GroupState]] = []
        self.left: set[tuple] = set()

    def _take_donors(self) -> None:
        """The replicas this plan places new, as ``donors``. Never one with manual GPU selection: given way, it
        would be offered rooms its selection does not allow (the dry runs leave selection out, since no such
        replica is left over to the step)."""
        run = self.owner
        held_by: dict[tuple, list[list]] = {}  # class key -> its donors' entries
        for a in run.placed.values():
            got = self._donor(a)
            if got is not None:
                key, held, name, a, d, gs = got
                entries = held_by.get(key)
                if entries is None:
                    entries = held_by[key] = []
                entries.append(self._entry(held, a, d, gs, name))
        self.donors.clear()
        for key, entries in held_by.items():
            entries.sort(key=_held_and_key)
            self.donors[key] = ([e[0] for e in entries], entries)

    def _entry(self, held: int, a: Assignment, d: Demand, gs: GroupState, key: str) -> list:
        """A donor's entry in its class's list: [VRAM held, assignment, demand, group, reach, key, host, CPUs and
        memory asked, its host's cell (``cells``), the host's version its room number was taken at and that number
        (``_room_id``; -1: none yet), gave way]. What a search reads of each candidate, in one list: the walk past
        candidates turned away cheaply (most of them: 700,000 on the 21,000-host process bench) read the
        assignment, the demand and three tables keyed by host or id before, objects spread over a heap of 100,000
        replicas."""
        host = a.host
        cell = self.cells.get(host)
        if cell is None:
            cell = self.cells[host] = [0]
        return [held, a, d, gs, self.reach(d), key, host, d.cpus, d.ram_mib, cell, -1, 0, False]

    def _donor(self, a: Assignment, d: Demand | None = None, gs: GroupState | None = None) -> tuple | None:
        """(class key, VRAM held, key, assignment, demand, group) of a replica that may give way, or None. ``d`` and
        ``gs``: its demand and group, where the caller knows them (``apply`` does)."""
        if a.status != "new" or a.vendor is None:
            return None
        run = self.owner
        key = a.key  # (formatted once: every placed replica passes here, twice a step)
        if d is None:
            d = run.by_key[a.deployment, a.replica]
        if d.manual is not None:
            return None
        if gs is None:
            gs = run._group_of(a)
        return run.index.class_of[gs.gid], len(a.gpus) * (gs.group.vram_mib if a.whole else a.vram_mib), key, a, d, gs

    def _add_donors(self) -> None:
        """The replicas give-ways placed since the donors were taken join them (the third pass: they may give way
        in turn), each where its VRAM held and key sort it, and those that gave way leave the lists: the lists are
        then those ``_take_donors`` would make again. Made again, they took 4 % of the process bench's placement:
        a donor's class and VRAM held are looked up for every replica placed, where those kept are still in order
        and only those placed since need it. Only the classes a donor left since (``left``) are walked for those
        that gave way, and a class that gains many is sorted once, not inserted into replica by replica: at
        20,000 hosts the first round adds 27,000 donors to lists of up to 16,000, and the inserts took 0.16 s."""
        for key in self.left:
            helds, entries = self.donors[key]
            live = [e for e in entries if not e[GONE]]
            if len(live) != len(entries):
                entries[:] = live
                helds[:] = [e[0] for e in live]
        self.left.clear()
        added: dict[tuple, list[tuple]] = {}
        # (none of them gave way: a replica gives way only from a donor list, which they join only here)
        for a, d, gs in self.placed_since:
            entry = self._donor(a, d, gs)
            if entry is not None:
                key, held, name, a, d, gs = entry
                added.setdefault(key, []).append(self._entry(held, a, d, gs, name))
        self.placed_since.clear()
        for key, new in added.items():
            helds, entries = self.donors.setdefault(key, ([], []))
            if len(new) * self.SORT_PAST < len(entries):  # a few: each where it goes
                for e in new:
                    held = e[0]
                    i = bisect_left(entries, e[5], bisect_left(helds, held), bisect_right(helds, held),
                                    key=_donor_key)
                    helds.insert(i, held)
                    entries.insert(i, e)
            else:  # many: sorted once (the list is a sorted run, the rest short ones: timsort merges them)
                entries.extend(new)
                entries.sort(key=_held_and_key)
                helds[:] = [e[0] for e in entries]

    #: ``_add_donors`` inserts the donors a class gains one by one while they are fewer than a SORT_PAST-th of
    #: its list (an insert moves the list's tail; a sort asks each entry its key), and sorts the list once past
    SORT_PAST = 32

    def _join(self, w: Demand, previous: str | None, first: int) -> Kind:
        """``w`` joins the replicas left over of its kind (a new kind is ``first`` in the order left over)."""
        shape = (w.static, w.vram_mib, w.cpus, w.ram_mib, w.spread_hosts)
        kind = self.alike.get(shape)
        if kind is None:
            kind = self.alike[shape] = Kind(first, w, self.reach(w))
            self.kinds.setdefault(w.static, []).append(kind)
        kind.replicas.append((w, previous))
        self.kind_of[w.deployment, w.replica] = kind
        return kind

    def _rejoin(self, w: Demand) -> None:
        """``w`` gave way: it is left over like the others, a replica to make room for and one a room may take."""
        kind = self._join(w, None, len(self.failed) + len(self.rejoined))
        back = len(kind.replicas) == 1  # a kind new, or pruned from every order: it joins the takers that may take it
        self.clock[0] += 1  # (every class's takers forget)
        if back:
            for takers in self.takers.values():
                if self.owner._static_ok(takers.group, kind.rep):
                    takers.add(kind)
        self.rejoined.append((w, None))

    def reach(self, d: Demand) -> int:
        """How many device groups ``d``'s selectors (framework, vendor, labels, GPU model; manual selection: its
        hosts) let it use, whatever their size: a replica never gives way to replicas that reach more. (Counted
        with sizes, a big replica, which fits fewer devices, could never give way to small ones: on
        bench/placement.py's CPU-and-memory workload, six fleets at load 1.3, 1,634 -> 2,891 left over.)"""
        return selector_reach(self.owner, d, self._reach)

    def run(self) -> None:
        # smallest first (the fresh pass's order reversed). On 30 fleets of bench/placement.py --resources, GPUs
        # allocated at load 1.0 and 1.3: 98.90 % and 99.55 %, against 98.75 % and 99.45 % biggest first (which
        # leaves fewer replicas over on the selector fleets: 149-189 against 197-264 on the four worst seeds)
        self._pass(list(reversed(self.failed)))
        # Second pass: the replicas that gave way, smallest first, look for a room in turn (a 1-GPU replica that
        # gave its device to two slices takes a 2-GPU replica's devices with another), and rooms may take them;
        # one that gives way now rejoins at once. Rooms turned away before may take them: the memos start over.
        # Process bench: 549 -> 205 left over; selector fleet at 124 %: 454 -> 440; six CPU-and-memory fleets:
        # 731 -> 355 at load 1.0 (1,634 -> 971 at 1.3).
        gave, self.gave = sorted(self.gave, key=lambda w: (w.gpus, w.whole, w.vram_mib or 0)), None
        for w in gave:
            self._rejoin(w)
        self.futile.clear()
        patient = {at: i for at, i in self.resume.items() if at[0] in self.impatient}
        self.resume.clear()
        pos = self._pass(self.rejoined)
        # Then the shapes given up for patience go on where they stopped, with the budget left, and replicas that
        # gave way meanwhile have their turn, until a round places none (selector fleet at 124 %, seed 4: a 12 GiB
        # slice's shape was given up with 20,000 candidates of budget left; 517 -> 176 left over, spread 414).
        self.resume.update(patient)
        while self.impatient and self.budget > 0:
            shapes, self.impatient = self.impatient, set()
            before = len(self.done)
            self._pass([x for x in chain(reversed(self.failed), self.rejoined[:pos]) if _shape(x[0]) in shapes])
            pos = self._pass(self.rejoined, pos)
            if len(self.done) == before:
                break
        # Third: replicas a give-way placed may give way in turn (a 32 GiB slice it put on a device makes room for
        # 12, 12 and 8 GiB ones left over, the device as full), and rooms also try the replicas alike to the one they
        # are made for first (``_orders``): rounds while one finds enough (LAST_ROUND_SHARE), up to ROUNDS, and the
        # budget lasts. Twenty CPU-and-memory fleets of the bench's generator, load 1.0 and 1.3: 81 -> 77 and
        # 149 -> 117 replicas left over per fleet, GPUs unchanged; `bench/placement.py --exact`: 18 -> 20 of 20
        # mixed instances place the most replicas a placement of the optimum's VRAM can.
        self.late = True
        for k in range(self.ROUNDS):
            if self.budget <= 0:
                break
            found = self._once_more(first=k == 0)
            if not found or found < self.LAST_ROUND_SHARE * sum(len(kind.replicas) for kind in self.alike.values()):
                break  # none or few found: the next round would find fewer still (LAST_ROUND_SHARE)
        done = self.done
        self.owner._failed = [(d, p) for d, p in self.owner._failed if (d.deployment, d.replica) not in done]

    def _once_more(self, first: bool) -> int:
        """A round of the third pass: those a give-way placed join the donors (``_add_donors``), and all still
        left over, smallest first, look for a room. How many gave way. Rooms found with no way in (``futile``,
        by what a dry run reads of them) stay so for the whole pass, as in the others: a round after the first
        looks again only at rooms that changed or that no search reached (the first round forgets the second
        pass's memos, made with fewer orders: ``_orders``). A search that walked all its donors in the round
        before walks only those on hosts a give-way changed since (``changed``): what turned the others away
        reads their hosts, and the replicas left over, whose changes the memos leave out as well. On the process
        bench's project at 4,000 hosts the second and third rounds looked at 4,391 and 2,740 candidates, now
        2,714 and 312, and find the same give-ways."""
        applied = self.applied
        self._add_donors()
        self.walked_before = set() if first else self.walked
        self.walked = set()
        self.changed.clear()
        if self.walked_before:
            for key, (_, entries) in self.donors.items():
                mine = [e for e in entries if e[6] in self.touched]
                if mine:
                    self.changed[key] = ([e[0] for e in mine], mine)
        self.touched = set()
        if first:
            self.futile.clear()
        self.resume.clear()
        self.impatient.clear()
        seen, todo = set(), []
        for x in chain(reversed(self.failed), self.rejoined):  # (one may be in both: left over, placed, gave way)
            key = (x[0].deployment, x[0].replica)
            if key not in self.done and key not in seen:
                seen.add(key)
                todo.append(x)
        todo.sort(key=lambda x: (x[0].gpus, x[0].whole, x[0].vram_mib or 0))
        self._pass(todo)
        return self.applied - applied

    def _pass(self, todo: list[tuple[Demand, str | None]], k: int = 0) -> int:
        """Make room for each of ``todo`` from the ``k``-th that is still left over, in order (the list may grow
        meanwhile), while the budget lasts; a shape no room takes is not tried again in this pass. Returns where
        it stopped."""
        tried: set[tuple] = set()
        while k < len(todo) and self.budget > 0:
            u, previous = todo[k]
            k += 1
            if (u.deployment, u.replica) in self.done:
                continue
            shape = _shape(u)
            if shape not in tried and not self.make_room(u, previous, shape):
                tried.add(shape)
        return k

    def make_room(self, u: Demand, previous: str | None, shape: tuple) -> bool:
        """The smallest replica ``u``'s pool holds that makes room for ``u`` and at least one more left over.
        Each donor is looked at once per shape: the ones before ``resume`` gave no way (a give-way since may
        have changed a host of theirs: the search is a bounded heuristic)."""
        run = self.owner
        state, index = run.state, run.index
        cpu_free, ram_free, futile = state.cpu_free, state.ram_free, self.futile
        CHEAP, REST = self.CHEAP, self.LOOK - self.CHEAP
        # what this search spent, in tenths of a look: of the budget (``budget`` when it began; written back before
        # any return, since nothing this walk calls reads it) and of its patience alike, so one count and one
        # limit, the nearer of the two, stand for both
        budget, spent = self.budget, 0
        limit = min(budget, self.PATIENCE * self.LOOK)
        for lists in index.eligible(u):
            key = index.class_of[lists.members[0]]
            at = (shape, key)
            # a search that walked all its donors in the round before looks only at those on hosts changed since
            if at in self.walked_before:
                there = self.changed.get(key)
                if there is None:  # no donor there changed: nothing new to find
                    self.walked.add(at)
                    continue
            else:
                there = self.donors.get(key)
                if there is None:
                    continue
            size = lists.rep.group.vram_mib
            own = u.gpus * (size if u.whole else u.vram_mib)
            helds, entries = there
            mine = self.takers.get(key)
            if mine is None:
                mine = self.takers[key] = Takers([k for shape, kinds in self.kinds.items()
                                                  if run._static_ok(lists.rep, kinds[0].rep) for k in kinds],
                                                 lists.rep, self.clock)
            smallest = mine.smallest  # (u is among them)
            least_cpu, least_ram = mine.least
            u_cpus, u_ram = u.cpus, u.ram_mib
            reach = self.kind_of[u.deployment, u.replica].reach
            at_id = self.at_ids.setdefault(at, len(self.at_ids)) << 32  # (``futile``'s keys: | the room's number)
            i = self.resume.get(at)
            if i is None:
                i = bisect_right(helds, own)  # bigger than u only
            end = len(entries)
            for i in range(i, end):
                e = entries[i]
                # selectors that reach fewer groups, which never give way to ones that reach more; or gave way already
                # (read from the entry alone: its replica's key looked up in the plan, with 100,000 replicas, took a
                # tenth of the step's time at 20,000 hosts, mostly waiting for memory)
                if e[4] < reach or e[GONE]:
                    continue
                if spent >= limit:  # the budget, or this search's patience, is spent
                    self.resume[at] = i
                    if spent < budget:
                        self.impatient.add(shape)
                    self.budget = budget - spent
                    return False
                spent += CHEAP
                host = e[6]
                cpu, ram = cpu_free[host], ram_free[host]  # once a is out and u in
                if cpu is not None:
                    cpu += e[7] - u_cpus
                    if cpu + 1e-9 < least_cpu:
                        continue  # no CPUs for a second
                if ram is not None:
                    ram += e[8] - u_ram
                    if ram < least_ram:
                        continue  # no memory for a second
                # a room like one found with no way in this pass (more left-over replicas placed never opens one):
                # the group's devices alike, a's own alike among them, and the host's CPUs, memory and ports
                held, a, d, gs = e[0], e[1], e[2], e[3]
                v = e[9][0]
                if e[10] != v:  # the host changed since its number was taken (or none was)
                    e[10], e[11] = v, self._room_id(a, d, gs, held, host, e[4])
                memo = at_id | e[11]
                if memo in futile:
                    continue
                spent += REST  # past the cheap checks: a whole look
                if mine.short_of(max(1, held - own), cpu, ram):
                    futile.add(memo)  # not for enough of them to take all the room a held
                    continue
                room = Room(gs)  # the group once a is out and u in: u where the dry run would put it
                vacate(room, [gs.pos_of[x] for x in a.gpus], d.vram_mib)
                left = [None if cpu is None else cpu + u_cpus, None if ram is None else ram + u_ram,
                        state.ports[host].free_count() + 1, 0]  # CPUs, memory, ports; VRAM taken
                running = dict(state.deployments_on[host])
                running[d.deployment] -= 1
                if not _dry_place(room, left, running, u) or \
                        mine.short_of(max(1, held - own), left[0], left[1], mine.room_for(room)):
                    if not mine.spread:  # u does not fit, or the devices it leaves are not enough for the others
                        futile.add(memo)
                    continue
                chosen = self.refill(room, left, running, held, smallest, u, previous, mine, e[4])
                if chosen is not None:
                    self.budget = budget - spent
                    e[GONE] = True
                    self.apply(gs, a, d, chosen)
                    self.resume[at] = i + 1
                    return True
                if not mine.spread:  # (hard anti-affinity makes the answer the host's own)
                    futile.add(memo)
            self.resume[at] = end
            self.walked.add(at)
        self.budget = budget - spent
        return False

    def _room_id(self, a: Assignment, d: Demand, gs: GroupState, held: int, host: str, reach: int) -> int:
        """What a dry run on ``a``'s room reads, as a number (one per distinct room): the VRAM ``a`` holds, the
        CPUs and memory it asks and the groups its selectors reach, its group's devices (free VRAM and claims,
        sorted), ``a``'s own among them, and the host's free CPUs, memory and ports."""
        look = self.looks.get(gs.gid)
        if look is None:
            look = self.looks[gs.gid] = self.look_ids.setdefault(
                (tuple(sorted(gs.free)), tuple(sorted(gs.claims))), len(self.look_ids))
        state = self.owner.state
        mine_now = tuple(sorted([(gs.free[p], gs.claims[p]) for p in [gs.pos_of[x] for x in a.gpus]]))
        room = (held, d.cpus, d.ram_mib, d.whole, reach, look, mine_now, state.cpu_free[host], state.ram_free[host],
                state.ports[host].free_count())
        return self.room_numbers.setdefault(room, len(self.room_numbers))

    def refill(self, with_u: Room, left: list, running: dict, held: int, smallest: int, u: Demand, previous,
               takers: Takers, reach: int) -> list | None:
        """A dry run: a replica that held ``held`` MiB taken back and ``u`` put in its room (``with_u``: a copy
        of the group then; ``left``: the host's CPUs, memory and ports then, and the VRAM u took; ``running``:
        replicas per deployment on the host then), which of ``takers`` fit after u, kind by kind, on copies?
        Returns u and them if one or more fit and together take at least ``held`` (a whole device counted
        whole), else None. The kinds go in each of the orders ``_orders`` gives until one fills enough: the most VRAM
        per CPU first, then per MiB of memory, then the order they were left over in (alone, that order spent CPUs
        on small slices and fell short of the VRAM held: tests/test_placement_giveway.py), then in the third pass
        ``u``'s own kind first. ``smallest``: the smallest slice of a device any of them asks (below it, nothing
        more fits)."""
        least_cpu, least_ram = takers.least
        for order in self._orders(takers, u):
            room = Room(with_u)
            free, now, here = room.free, list(left), dict(running)
            chosen = [(u, previous)]
            biggest, c, r = max(free), now[0], now[1]
            for per, _, cpus, ram_mib, kind in order:
                if not kind.replicas or per > biggest or (c is not None and c + 1e-9 < cpus) or \
                        (r is not None and r < ram_mib) or kind.reach > reach:
                    continue
                before = len(chosen)
                _dry_place_kind(room, now, here, kind, u, chosen)
                if len(chosen) == before:
                    continue
                biggest, c, r = max(free), now[0], now[1]
                if now[2] < 1 or biggest < smallest or (c is not None and c + 1e-9 < least_cpu) or \
                        (r is not None and r < least_ram):
                    break  # nothing more fits
            if len(chosen) < 2:
                return None  # nothing fits beside u, in any order
            if now[3] >= held:  # more replicas, and no VRAM given up
                return chosen
        return None

    def _orders(self, takers: Takers, u: Demand):
        """The orders ``refill`` fills a room in: ``takers.orders``; then, in the third pass and where others alike
        to ``u`` are left over, the order left over with those first (made only when the others fail)."""
        yield from takers.orders
        mine = self.kind_of[u.deployment, u.replica]
        if self.late and len(mine.replicas) > 1:
            order = [t for t in takers.kinds if t[4] is mine]
            if order:
                order += [t for t in takers.kinds if t[4] is not mine]
                if all(order != other for other in takers.orders):
                    yield order

    def apply(self, gs: GroupState, a: Assignment, d: Demand, chosen: list) -> None:
        """What ``refill`` found: ``a`` is left over, ``chosen`` take its room (on the same devices)."""
        run, host = self.owner, a.host
        emptied = []  # kinds with none left over now
        run._drop(a)
        self.left.add(run.index.class_of[gs.gid])
        run.state.release(gs, [gs.pos_of[i] for i in a.gpus], d, host, a.port)
        for w, prev in chosen:  # (the index files the host once, after them all)
            at = choose_devices(gs, w, w.allowed_on(host))
            assert at is not None  # the dry run placed it on these devices
            port = run.state.ports[host].lowest()
            self.placed_since.append((run._commit_placed(w, host, gs, at, port, prev, file=False), w, gs))
            key = (w.deployment, w.replica)
            self.done.add(key)
            reps = self.kind_of[key].replicas  # what is still left over, all a dry run walks
            # u, the replica the room is for, is most often its kind's last (the passes walk the order left over
            # smallest first, backwards): scanned for from the front, 27,000 removals took 1.5 million steps at
            # 21,000 hosts, 22,000 now
            if reps and reps[-1][0] is w:
                reps.pop()
            else:
                for j, (x, _) in enumerate(reps):
                    if x is w:
                        del reps[j]
                        break
            if not reps:
                emptied.append(self.kind_of[key])
        run._file_host(host)
        if (d.deployment, d.replica) in self.done:  # a give-way placed it: its entry in the run's list stands again
            self.done.discard((d.deployment, d.replica))
        else:
            run._failed.append((d, None))
        self.applied += 1
        run.gave_way[a.key] = (host, len(chosen))
        for w, _ in chosen:  # (one that gave way before and is placed again)
            run.gave_way.pop(w.key, None)
        self.looks.pop(gs.gid, None)
        self.cells[host][0] += 1  # (a's host: a donor's, so it has a cell)
        self.touched.add(host)
        self.clock[0] += 1  # (every class's takers forget)
        if emptied:  # a kind with none left over: no bound or dry run walks past it again
            for takers in self.takers.values():
                takers.drop(emptied)
        # (after the pruning: ``d``'s kind may be one just emptied, and it comes back into the takers once)
        if self.gave is not None:
            self.gave.append(d)
        else:
            self._rejoin(d)


def _first(t: tuple) -> int:
    """Where a taker's kind stands in the order left over."""
    return t[4].first


def _per_cpu(t: tuple) -> tuple:
    """A taker's place in ``Takers``' order by VRAM per CPU (kinds asking none first, the most VRAM first)."""
    return (-t[1] / t[2] if t[2] else -inf, -t[1], t[4].first)


def _per_ram(t: tuple) -> tuple:
    """The same per MiB of memory."""
    return (-t[1] / t[3] if t[3] else -inf, -t[1], t[4].first)


#: where a donor's entry (``GiveWay._entry``) says its replica gave way
GONE = 12
#: what orders donors of equal VRAM held: their key (formatted once, when the entry is made)
_donor_key = itemgetter(5)
#: the order of a class's donors: VRAM held, then key
_held_and_key = itemgetter(0, 5)


def _shape(u: Demand) -> tuple:
    """What a search for room for ``u`` depends on: its static shape, VRAM, CPUs and memory."""
    return u.static, u.vram_mib, u.cpus, u.ram_mib


def _dry_place(room: Room, left: list, running: dict, w: Demand) -> bool:
    """Put ``w`` on a dry run's copies (``GiveWay.refill``) if it fits them."""
    cpu, ram = left[0], left[1]
    if left[2] < 1 or (cpu is not None and cpu + 1e-9 < w.cpus) or (ram is not None and ram < w.ram_mib) or \
            (w.spread_hosts and running.get(w.deployment)):
        return False
    at = choose_devices(room, w)  # (no manual selection: those are never left over to the step)
    if at is None:
        return False
    occupy(room, at, w.vram_mib)
    left[0] = None if cpu is None else cpu - w.cpus
    left[1] = None if ram is None else ram - w.ram_mib
    left[2] -= 1
    left[3] += w.gpus * (room.group.vram_mib if w.whole else w.vram_mib)
    running[w.deployment] = running.get(w.deployment, 0) + 1
    return True


def _dry_place_kind(room: Room, left: list, running: dict, kind: Kind, u: Demand, chosen: list) -> None:
    """Put ``kind``'s replicas left over (but ``u``) on a dry run's copies, in order, until one does not fit (the
    others ask the same), each into ``chosen``: ``_dry_place`` one by one, without choosing devices anew for each
    where that choice is known. A one-device slice goes where ``choose_devices`` would put it: the fits in its
    order (shared before untouched, then the least free), each filled until the next slice no longer fits, since
    the device a slice went to stays the best while another fits there; whole devices go g at a time, lowest
    index first. Slices over several devices and replicas that may not share a host with their deployment take
    ``_dry_place``. (The give-way's dry runs place about 36,000 replicas on the 2,000-host process bench.)"""
    rep = kind.rep
    g, v = rep.gpus, rep.vram_mib
    if kind.spread or (v is not None and (g != 1 or v <= 0)):
        _dry_place_each(room, left, running, kind, u, chosen)
        return
    free, claims, exclusive = room.free, room.claims, room.exclusive
    if v is None:
        if claims.count(0) < g:
            return  # (most whole kinds a room is asked of: fewer untouched devices than one asks)
        order = [i for i, c in enumerate(claims) if c == 0]
        taken = g * room.group.vram_mib
    else:
        # (sorted as tuples, not by a key function: a call per device, and this runs 20,000 times a plan)
        order = [i for _, _, i in sorted([(claims[i] == 0, f, i) for i, f in enumerate(free)
                                          if f >= v and not exclusive[i]])]
        taken = v
    cpus, ram_mib, p, end = rep.cpus, rep.ram_mib, 0, len(order)
    for w, prev in kind.replicas:
        if w is u:
            continue
        cpu, ram = left[0], left[1]
        if left[2] < 1 or (cpu is not None and cpu + 1e-9 < cpus) or (ram is not None and ram < ram_mib):
            return
        if v is None:
            if p + g > end:
                return
            for i in order[p:p + g]:
                free[i] = 0
                exclusive[i] = True
                claims[i] += 1
            p += g
        else:
            while p < end and free[order[p]] < v:
                p += 1
            if p == end:
                return
            i = order[p]
            free[i] -= v
            claims[i] += 1
        left[0] = None if cpu is None else cpu - cpus
        left[1] = None if ram is None else ram - ram_mib
        left[2] -= 1
        left[3] += taken  # (``running`` counts for kinds that spread alone, which take ``_dry_place_each``)
        chosen.append((w, prev))


def _dry_place_each(room: Room, left: list, running: dict, kind: Kind, u: Demand, chosen: list) -> None:
    """``_dry_place_kind`` one replica at a time, each through ``_dry_place``."""
    for w, prev in kind.replicas:
        if w is u or (w.spread_hosts and running.get(w.deployment)):
            continue
        if not _dry_place(room, left, running, w):
            break  # the kind's others ask the same
        chosen.append((w, prev))


#: the largest table ``_fill_table`` makes (entries): past it, slices of a few MiB apart are not tabulated
FILL_TABLE_LIMIT = 4096


def _fill_table(slices: list[int], size: int) -> tuple[int, list[int] | None]:
    """(unit, table): table[f // unit] is the most VRAM that slices of ``slices`` (any number of each) fill of a
    device with f MiB free, f up to ``size``: an unbounded subset sum in units of the slices' greatest common
    divisor (every sum of slices is a multiple of it). None past FILL_TABLE_LIMIT entries."""
    if not slices:  # whole claims only: no slice fills a device's remainder
        return max(size, 1), [0, 0]
    unit = 0
    for s in slices:
        unit = gcd(unit, s)
    n = size // unit
    if n >= FILL_TABLE_LIMIT:
        return unit, None
    steps = [s // unit for s in slices]
    reach = [False] * (n + 1)
    reach[0] = True
    for k in range(1, n + 1):
        for s in steps:
            if s > k:
                break
            if reach[k - s]:
                reach[k] = True
                break
    table, best = [], 0
    for k in range(n + 1):
        if reach[k]:
            best = k * unit
        table.append(best)
    return unit, table
