"""Fast candidate lookup: device groups kept in sorted lists per class, for the rankers to pick from.

Groups whose static attributes are equal (host state, the label values demands ask about,
vendor, model, device size and count) form a *class*: static filters are evaluated once per
class and demand shape, never per host.  Inside a class, groups and devices sit in lists
sorted by what the rankers prefer, so a replica costs a few bisections instead of a scan
of every host:

- ``whole``:   (unclaimed devices U, host, group)  - binpack takes the smallest U >= gpus
               (the tightest group, keeping empty hosts empty); spread takes the largest
               (stack.placement.rankers says which).
- ``touched``: (free MiB, host, group, device)      - already-shared devices, best fit first.
- ``kth[g]``:  (g-th largest shareable free MiB, host, group) - g-GPU fractional claims.

Ties go to the lowest host name, then group, so the result never depends on file order.

Classes are split by the label values some demand selects (a zone, say), so a replica that selects one
walks only its hosts. A replica that selects none searches *views* instead: the lists of classes alike
but for those labels, merged back (kept beside the classes, re-filed with them). Everything else (which
groups are eligible, repair, trades, explanations) reads the classes.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Iterable

from .filters import STATIC
from .model import Demand
from .rankers import NOTHING, Ranker
from .state import FleetState, GroupState, needs

BINPACK, SPREAD = "binpack", "spread"


class _ClassLists:
    __slots__ = ("capacity", "is_view", "kth", "log", "members", "rep", "touched", "view", "whole")

    def __init__(self, capacity: int, rep: GroupState, is_view: bool = False):
        self.capacity = capacity
        #: a class split by the label values demands select: the class of its groups whatever their labels
        #: (``CandidateIndex.searched``); None where nothing is split
        self.view: _ClassLists | None = None
        self.is_view = is_view
        #: the hosts whose entries or GPUs, CPUs or memory changed, in order (what searches remember
        #: about these lists is brought up to date from it: walks.Walks)
        self.log: list[str] = []
        self.rep = rep
        self.members: list[int] = []
        self.whole: list[tuple] = []
        self.touched: list[tuple] = []
        self.kth: dict[int, list[tuple]] = {}


class CandidateIndex:
    def __init__(self, state: FleetState, demands: Iterable[Demand]):
        self.state = state
        label_keys = sorted({k for d in demands for k, _ in d.labels})
        self.classes: dict[tuple, _ClassLists] = {}
        self.class_of: list[tuple] = []
        for gs in state.groups:
            host, group = gs.host, gs.group
            labels = tuple(host.label_map.get(k) for k in label_keys)
            key = (host.state, labels, group.vendor, group.model, group.vram_mib, len(group.devices))
            lists = self.classes.get(key)
            if lists is None:
                lists = self.classes[key] = _ClassLists(group.vram_mib, gs)
            lists.members.append(gs.gid)
            self.class_of.append(key)
        #: classes alike but for label values, merged back (see ``searched``): key without the labels -> view
        self.views: dict[tuple, _ClassLists] = {}
        if label_keys:
            for gs in state.groups:
                key = self.class_of[gs.gid]
                base = (key[0], *key[2:])
                view = self.views.get(base)
                if view is None:
                    view = self.views[base] = _ClassLists(gs.group.vram_mib, gs, is_view=True)
                view.members.append(gs.gid)
                self.classes[key].view = view
        self._whole: list[tuple | None] = [None] * len(state.groups)
        self._touched: list[list[tuple]] = [[] for _ in state.groups]
        #: a group's entries in its class's kth lists, and in its view's (filed apart: either may lack a g)
        self._kth: list[dict[int, tuple]] = [{} for _ in state.groups]
        self._kth_view: list[dict[int, tuple]] = [{} for _ in state.groups]
        self.dropped: set[int] = set()
        self._eligible: dict[tuple, list[_ClassLists]] = {}
        #: the classes by their devices' framework, in class order (``eligible``)
        self._of_framework: dict[str, list[_ClassLists]] = {}
        for lists in self.classes.values():
            self._of_framework.setdefault(lists.rep.group.framework, []).append(lists)
        self._searched: dict[tuple, list[_ClassLists]] = {}
        self._by_class: tuple | None = None
        # every group filed at once, each list sorted once (``refresh`` files one group at a time)
        for gs in state.groups:
            whole, touched = self._entries(gs)
            self._whole[gs.gid], self._touched[gs.gid] = whole, touched
            own = self.classes[self.class_of[gs.gid]]
            for lists in (own, own.view) if own.view is not None else (own,):
                if whole is not None:
                    lists.whole.append(whole)
                lists.touched.extend(touched)
        for lists in (*self.classes.values(), *self.views.values()):
            lists.whole.sort()
            lists.touched.sort()

    def touch(self, host: str) -> None:
        """The host's GPUs, CPUs or memory changed: its classes log it (FleetState.on_change, installed by
        walks.Walks, the reader of the logs)."""
        for gs in self.state.groups_of[host]:
            lists = self.classes[self.class_of[gs.gid]]
            lists.log.append(host)
            if lists.view is not None:
                lists.view.log.append(host)

    def entries(self, lst: list, lists: _ClassLists, host: str) -> list[tuple]:
        """The entries ``host``'s groups have in ``lst``, one of the lists of class ``lists``."""
        out = []
        kth = self._kth_view if lists.is_view else self._kth
        for gs in self.state.groups_of[host]:
            gid = gs.gid
            mine = self.classes[self.class_of[gid]]
            if mine is not lists and mine.view is not lists:
                continue
            if lst is lists.whole:
                if self._whole[gid] is not None:
                    out.append(self._whole[gid])
            elif lst is lists.touched:
                out.extend(self._touched[gid])
            else:
                out.extend(e for g, e in kth[gid].items() if lists.kth.get(g) is lst)
        return out

    # ------------------------------------------------------------------ maintenance
    def refresh(self, gs: GroupState) -> None:
        """Re-file one group after its usage changed: in its class, and in its class's view if it has one."""
        gid, name, gidx = gs.gid, gs.host.name, gs.gidx
        old_whole, old_touched = self._whole[gid], self._touched[gid]
        whole, touched = self._entries(gs)
        self._whole[gid], self._touched[gid] = whole, touched
        own = self.classes[self.class_of[gid]]
        for lists, kth in ((own, self._kth), (own.view, self._kth_view)):
            if lists is None:
                break
            lists.log.append(name)
            if old_whole != whole:  # a shared claim on a device already shared leaves the whole entry as it was
                if old_whole is not None:
                    del lists.whole[bisect_left(lists.whole, old_whole)]
                if whole is not None:
                    insort(lists.whole, whole)
            if old_touched != touched:  # only the entries that changed move (a claim changes one device or a few)
                for entry in old_touched:
                    if entry not in touched:
                        del lists.touched[bisect_left(lists.touched, entry)]
                for entry in touched:
                    if entry not in old_touched:
                        insort(lists.touched, entry)
            old = kth[gid]
            if not old and not lists.kth:
                continue  # (no multi-GPU shared claim asked yet: nothing filed, no dict made)
            kth[gid] = {}
            if gid not in self.dropped:
                for g, lst in lists.kth.items():
                    self._file_kth(gs, g, lst, name, gidx, kth, old.pop(g, None))
            for g, entry in old.items():  # (filed no more)
                lst = lists.kth[g]
                del lst[bisect_left(lst, entry)]

    def _entries(self, gs: GroupState) -> tuple[tuple | None, list[tuple]]:
        """The group's entry in ``whole`` (None without an unclaimed device) and its entries in ``touched``."""
        if gs.gid in self.dropped:
            return None, []
        name, gidx, gid = gs.host.name, gs.gidx, gs.gid
        claims = gs.claims
        u = claims.count(0)
        whole = (u, name, gidx, gid) if u else None
        if gs.exclusive.count(True) == len(claims) - u:  # every claimed device is taken whole: none is shared
            return whole, []
        return whole, [(free, name, gidx, pos, gid) for pos, (free, excl, n)
                       in enumerate(zip(gs.free, gs.exclusive, claims)) if n and not excl and free > 0]

    def _file_kth(self, gs: GroupState, g: int, lst: list, name: str, gidx: int,
                  kth: list[dict[int, tuple]], old: tuple | None = None) -> None:
        """File the group in ``lst``, the list of its ``g``-th largest free device, where that is not 0 (``old``:
        its entry there until now, left where it is if unchanged)."""
        k = gs.kth_free(g)
        entry = (k, name, gidx, gs.gid) if k > 0 else None
        if entry != old:
            if old is not None:
                del lst[bisect_left(lst, old)]
            if entry is not None:
                insort(lst, entry)
        if entry is not None:
            kth[gs.gid][g] = entry

    def kth_list(self, lists: _ClassLists, g: int) -> list:
        lst = lists.kth.get(g)
        if lst is None:
            lst = lists.kth[g] = []
            kth = self._kth_view if lists.is_view else self._kth
            for gid in lists.members:
                if gid not in self.dropped:
                    gs = self.state.groups[gid]
                    self._file_kth(gs, g, lst, gs.host.name, gs.gidx, kth)
        return lst

    def drop_host(self, host: str) -> None:
        """No free port left: none of the host's groups is a candidate any more."""
        for gs in self.state.groups_of[host]:
            self.dropped.add(gs.gid)
            self.refresh(gs)

    def restore_host(self, host: str) -> None:
        """The host has room again (the repair step took a replica back): its groups are candidates."""
        for gs in self.state.groups_of[host]:
            self.dropped.discard(gs.gid)
            self.refresh(gs)

    def hosts_by_class(self) -> tuple[dict[tuple, tuple[list, list[tuple]]], list[tuple], list[tuple]]:
        """The fleet's hosts as a walk over every host visits them (engine.walk): those with one device group by
        its class, as (hosts, [(position in the fleet, host, group)]); then (position, host) of those with several
        groups and of those with none. A class that fails a static filter settles all its one-group hosts at once
        (most hosts of a fleet have one group, and most classes fail a shape's static filters). Made once: the
        fleet does not change during a run."""
        if self._by_class is None:
            single: dict[tuple, tuple[list, list[tuple]]] = {key: ([], []) for key in self.classes}
            several, bare = [], []
            for pos, host in enumerate(self.state.fleet.hosts):
                groups = self.state.groups_of[host.name]
                if len(groups) == 1:
                    hosts, entries = single[self.class_of[groups[0].gid]]
                    hosts.append(host)
                    entries.append((pos, host, groups[0].group))
                else:
                    (several if groups else bare).append((pos, host))
            self._by_class = (single, several, bare)
        return self._by_class

    # ------------------------------------------------------------------ queries
    def eligible(self, demand: Demand) -> list[_ClassLists]:
        """Classes whose groups pass every static filter for this demand shape (cached)."""
        key = demand.static
        got = self._eligible.get(key)
        if got is None:
            # only classes of the demand's framework can pass (FRAMEWORK is among STATIC): on the bench fleets
            # a quarter of them, for each of a hundred shapes
            got = [lists for lists in self._of_framework.get(demand.framework, ())
                   if all(f(lists.rep.host, lists.rep.group, demand) for f in STATIC)]
            self._eligible[key] = got
        return got

    def searched(self, demand: Demand) -> list[_ClassLists]:
        """The classes a search for this demand walks: ``eligible``, where a replica that selects no label
        walks the views instead (classes split only by the label values other replicas select, merged back:
        all or none of a view's classes are eligible for it). On the 2,000-host bench fleet, where a tenth of
        the deployments select a zone, a search bounded 15 classes instead of 5 and picked in more of them."""
        eligible = self.eligible(demand)
        if demand.labels or not self.views:
            return eligible
        key = demand.static
        got = self._searched.get(key)
        if got is None:
            got = self._searched[key] = list({id(c.view): c.view for c in eligible}.values())
        return got

    def best(self, demand: Demand, ranker: Ranker, avoid: set[str] | frozenset = frozenset()) -> GroupState | None:
        """The group the ranker prefers for this demand, skipping hosts in ``avoid``; None if nothing fits."""
        best_key, best_gid = None, None
        eligible = self.searched(demand)
        bound = ranker.bound
        if avoid and len(eligible) > 1 and ranker.bounded:
            # a pick walks past avoided hosts (short of CPUs, memory or a preference): the most promising class
            # first, so the first pick is most often the best and every class bounded above it is never walked
            exhausted = getattr(avoid, "exhausted", None)
            floors = sorted([(bound(lists, demand, exhausted), i) for i, lists in enumerate(eligible)])
            for floor, i in floors:
                if floor is NOTHING or (best_key is not None and floor > best_key):
                    break
                cand = ranker.pick(self, eligible[i], demand, avoid)
                if cand and (best_key is None or cand[0] < best_key):
                    best_key, best_gid = cand
        else:  # picks cost a bisection or two: bounds are asked only once there is something to beat
            for lists in eligible:
                if best_key is not None and ranker.bounded and bound(lists, demand) > best_key:
                    continue
                cand = ranker.pick(self, lists, demand, avoid)
                if cand and (best_key is None or cand[0] < best_key):
                    best_key, best_gid = cand
        return None if best_gid is None else self.state.groups[best_gid]


class HostIndex:
    """Replicas that need no GPU: hosts in sorted lists per class, instead of a scan of every host.

    A class is hosts alike for static filters (active, the label values demands ask about, with or
    without GPUs). Inside a class, hosts sit sorted by how little GPU work their CPUs and memory are
    still needed for, then by the ranker's preference (binpack the most replicas first, spread the
    fewest), ties to the lower name. A host is re-filed when what it holds changes and leaves the
    index when it has no free port or cannot hold the smallest CPU-only replica of the plan any more.

    Each class is split by what the host can still hold: its CPU level (how many of the plan's distinct CPU
    asks its free CPUs cover) and its memory level, likewise. A search reads only the lists whose levels cover
    its replica's ask, so it never walks past hosts short of it. Filed in one list per class, binpack put the
    fullest hosts first and every search walked past those too full for it, more of them the bigger the fleet:
    on the process bench's project, 40 hosts a search at 2,000 hosts, 127 at 8,000, and at 20,000 hosts the
    searches took 0.8 s of the placement.

    "Needed for GPU work" (when the plan's GPU replicas ask CPUs or memory: ``per_gpu``): a host whose
    GPUs are all taken comes first (nothing else will ever want its CPUs), then hosts by their spare
    capacity, the GPUs' worth of CPUs (or memory, the scarcer) beyond what their free GPUs will ask at
    the plan's average. Filed by the ranker alone, CPU-only replicas went to the busiest hosts, the
    8-GPU ones, and took the CPUs later GPU replicas needed: on Alibaba's openb trace fed in 20
    batches, 729 of 1,088 CPU-only replicas sat on 8-GPU hosts and 87.9 % of the GPUs were allocated;
    filed by spare capacity they go to the CPU-rich 2-GPU hosts, and 95.5 % are.
    """

    #: CPUs and MiB of memory per GPU the plan's GPU replicas ask on average (the engine sets it; None: none ask)
    per_gpu: tuple[float, float] | None = None

    def __init__(self, state: FleetState, demands: Iterable[Demand], ranker: Ranker):
        self.state, self.ranker = state, ranker
        cpu_only = [d for d in demands if d.gpus == 0]
        #: without CPU-only replicas nobody asks: nothing is filed (re-filing costs every placement)
        self.active = bool(cpu_only)
        self.label_keys = sorted({k for d in cpu_only for k, _ in d.labels})
        #: the distinct asks, as ``needs`` thresholds, in order: a host's levels are how many of each it covers
        #: (level 0: not even the least any of them asks)
        asks = [needs(d.cpus, d.ram_mib) for d in cpu_only]
        self.cpu_asks = sorted({c for c, _ in asks})
        self.ram_asks = sorted({r for _, r in asks})
        #: (class, CPU level, memory level) -> entries (rank, host), sorted
        self.classes: dict[tuple, list[tuple]] = {}
        #: host -> its entry and the list it is in
        self.entry: dict[str, tuple[tuple, list]] = {}
        self.class_of: dict[str, tuple] = {}
        #: (GPU hosts or not, label values asked, CPU level, memory level) -> the lists a search reads
        self._lists: dict[tuple, list[list]] = {}
        #: hosts changed since they were last filed: filed again when a search next reads the lists (a plan
        #: commits several GPU replicas to a host between two replicas that need no GPU)
        self.stale: set[str] = set()
        for host in state.fleet.hosts:
            key = (host.active, bool(host.groups), tuple(host.label_map.get(k) for k in self.label_keys))
            self.class_of[host.name] = key
            self.refresh(host.name)

    def _rank(self, host: str) -> tuple:
        s = self.state
        load = self.ranker.host_rank(s.replicas_on[host])
        free = s.gpus_free[host]
        if self.per_gpu is None or free < 0.5:
            return (0, 0, load)
        cpus_per_gpu, ram_per_gpu = self.per_gpu
        worth = [have / per for have, per in ((s.cpu_free[host], cpus_per_gpu), (s.ram_free[host], ram_per_gpu))
                 if have is not None and per > 0]
        if not worth:
            return (0, 0, load)  # capacity not declared: placing here takes nothing GPU work counts on
        return (1, -int(min(worth) - free), load)

    def refresh(self, host: str) -> None:
        """What the host holds changed: it is filed again before the next search."""
        if self.active:
            self.stale.add(host)

    def _file(self, host: str) -> None:
        old = self.entry.pop(host, None)
        if old is not None:
            entry, lst = old
            del lst[bisect_left(lst, entry)]
        s = self.state
        cpu, ram = s.cpu_free[host], s.ram_free[host]
        cpu_level = len(self.cpu_asks) if cpu is None else bisect_right(self.cpu_asks, cpu)
        ram_level = len(self.ram_asks) if ram is None else bisect_right(self.ram_asks, ram)
        if not cpu_level or not ram_level or not s.has_free_port(host):
            return
        key = (self.class_of[host], cpu_level, ram_level)
        lst = self.classes.get(key)
        if lst is None:
            lst = self.classes[key] = []
            self._lists.clear()  # (a search may read the new list)
        entry = (self._rank(host), host)
        insort(lst, entry)
        self.entry[host] = (entry, lst)

    def _lists_for(self, gpus: bool, want: tuple, need_cpu: float, need_ram: float) -> list[list]:
        """The lists whose hosts may hold an ask of ``need_cpu`` and ``need_ram`` (``needs`` thresholds): every
        host that can is in one of them. For one of the plan's asks, every host in them can; for another, some
        may not, and ``best`` checks each host it takes all the same."""
        cpu_level, ram_level = bisect_right(self.cpu_asks, need_cpu), bisect_right(self.ram_asks, need_ram)
        key = (gpus, want, cpu_level, ram_level)
        got = self._lists.get(key)
        if got is None:
            got = self._lists[key] = [
                lst for ((active, has_gpus, labels), cpus, ram), lst in self.classes.items()
                if active and has_gpus == gpus and cpus >= cpu_level and ram >= ram_level
                and not any(w is not None and w != v for w, v in zip(want, labels))]
        return got

    def best(self, demand: Demand, avoid) -> str | None:
        """The host the ranker prefers, skipping ``avoid`` and hosts short of the replica's CPUs or memory."""
        if self.stale:
            for host in self.stale:
                self._file(host)
            self.stale.clear()
        want = tuple(dict(demand.labels).get(k) for k in self.label_keys)
        cpu_free, ram_free = self.state.cpu_free, self.state.ram_free
        need_cpu, need_ram = needs(demand.cpus, demand.ram_mib)
        spread = demand.spread_hosts
        for gpus in (False, True):  # keep GPU hosts for GPU work
            found = None
            for lst in self._lists_for(gpus, want, need_cpu, need_ram):
                for entry in lst:
                    if found is not None and entry >= found:
                        break
                    host = entry[1]
                    if host in avoid or (spread and self.state.runs(host, demand.deployment)):
                        continue
                    cpu, ram = cpu_free[host], ram_free[host]
                    if (cpu is not None and cpu < need_cpu) or (ram is not None and ram < need_ram):
                        continue
                    found = entry
                    break
            if found is not None:
                return found[1]
        return None
