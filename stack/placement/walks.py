"""What a search walking the index's sorted lists skips, and what earlier walks of the same list learnt.

``HostsLacking`` is the set of hosts a search avoids (those it must not use, those short of CPUs or memory, those
a preference turns away), tested entry by entry as a ranker walks a list; ``Walks`` keeps, per list and ask, the
stretch already looked at and the entries that passed, so the next walk does not look at them again.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from itertools import islice

from .index import CandidateIndex
from .model import Demand
from .state import FleetState, needs


class GiveUp(Exception):
    """A tier with per-host preference checks ran out of budget: the next tier searches without them."""


class HostsLacking:
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
        self.need_cpu, self.need_ram = need_cpu, need_ram = needs(demand.cpus, demand.ram_mib)
        #: what walks learnt for this ask, by list (looked up once here, not on every pick; inlined: one of these is
        #: made per search)
        if walks is None:
            self.seen = None
        else:
            ask = (need_cpu, need_ram, key)
            table = walks.seen.get(ask)
            if table is None:
                table = walks.seen[ask] = {}
            self.seen = table

    def __contains__(self, host: str) -> bool:
        return host in self.avoid or not self.passes(host)

    def __bool__(self) -> bool:
        return True

    def first(self, lst: list, i: int, lists=None) -> tuple | None:
        """The rankers' ``_first`` for this set: the same checks as ``in``, inlined in one loop. With
        ``lists`` (the class ``lst`` belongs to), what earlier walks of the same list learnt is reused
        (see ``Walks``): on a 4,000-host plan the walks past hosts short of CPUs or turned away by a
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
                    raise GiveUp
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
                        raise GiveUp
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
                raise GiveUp
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


class Walks:
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

    def of(self, hosts: HostsLacking, table: dict[int, _Seen], lst: list, lists, low: tuple) -> _Seen:
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
                except GiveUp:
                    del table[key]  # half brought up to date: forgotten
                    raise
                got.synced = len(log)
        if got is None:
            got = table[key] = _Seen(len(log), low)
        return got

    def _patch(self, hosts: HostsLacking, seen: _Seen, lst: list, lists, changed: set[str]) -> None:
        """The changed hosts' entries inside the stretch are looked at again; nothing else can have changed."""
        start, end = seen.start, seen.end
        seen.fits = [e for e in seen.fits if e[1] not in changed]
        for host in changed:
            for e in self.index.entries(lst, lists, host):
                if start <= e and (end is None or e < end) and hosts.passes(host):
                    insort(seen.fits, e)
