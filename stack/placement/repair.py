"""2b, 2c. Repair and re-pack: room for a replica nothing fit, made by moving replicas already placed.

The repair moves a replica (or two of one host, or a chain) elsewhere so one left over fits; the re-pack searches
exactly, within a budget, an arrangement of a few whole-GPU replicas and groups that places more. Methods of the
engine's run (``Repairs`` is one of its bases): they read and change its state.
"""
from __future__ import annotations

from .filters import LABELS
from .giveway import Room
from .model import Assignment, ByKey, Demand
from .order import biggest_first
from .state import GroupState, choose_devices, devices_fit, vacate


class _EntriesByGroup(dict):
    """Group id -> ``_repair_entry`` of the replicas there the repair may move, each group's made from its
    assignments when the repair first reads it: its searches read few groups (3,905 of 19,316 at 21,000 hosts),
    and making every entry at once took 0.09 s there. Read through ``get``, ``[]`` and ``setdefault`` only."""

    def __init__(self, placed: dict[int, list[Assignment]], entry):
        super().__init__()
        self._placed, self._entry = placed, entry

    def _made(self, gid: int) -> None:
        got = self._placed.pop(gid, None)
        if got is not None:
            dict.__setitem__(self, gid, [self._entry(a) for a in got])

    def get(self, gid, default=None):
        self._made(gid)
        return dict.get(self, gid, default)

    def __getitem__(self, gid):
        self._made(gid)
        return dict.__getitem__(self, gid)

    def setdefault(self, gid, default=None):
        self._made(gid)
        return dict.setdefault(self, gid, default)


class Repairs:
    """The repair and re-pack steps of a placement run (mixed into the engine's ``_Run``)."""

    # ------------------------------------------------------------------ 2b. repair
    #: candidate (group, replica) pairs the repair step looks at, over the whole run
    REPAIR_BUDGET = 20_000
    #: replicas with nowhere to go looked at, swaps of them, and the candidates their own repairs look at, in all
    REPAIR_CHAIN_BUDGET = 2_000
    #: candidates more constrained than the replica left over, tried once the others gave no room, in all
    REPAIR_LATER_BUDGET = 2_000
    #: pairs of replicas of one host that might make room together, in all
    REPAIR_PAIR_BUDGET = 2_000

    def repair(self, by_key: ByKey, constrained) -> None:
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
        placed: dict[int, list[Assignment]] = {}  # group id -> the replicas there a repair may move
        on_host: dict[str, list[tuple]] = {}  # host -> _repair_entry of those needing no GPU
        for a in self.placed.values():
            if a.status != "kept":
                if a.vendor is not None:
                    gid = self._group_of(a).gid
                    got = placed.get(gid)
                    if got is None:
                        got = placed[gid] = []
                    got.append(a)
                elif by_key[a.deployment, a.replica].manual is None:
                    on_host.setdefault(a.host, []).append(self._repair_entry(a, by_key, constrained))
        on_group = _EntriesByGroup(placed, lambda a: self._repair_entry(a, by_key, constrained))
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

    # ------------------------------------------------------------------ 2c. re-pack
    #: a re-pack is tried only on pools this small: an exact search stays cheap (see repack)
    REPACK_ITEMS, REPACK_GROUPS, REPACK_NODES = 40, 48, 50_000

    def repack(self, by_key: ByKey) -> None:
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
        placed = [(a, d) for a, d in ((a, by_key[a.deployment, a.replica]) for a in self.placed.values()
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
        order = sorted(range(len(items)), key=lambda i: biggest_first(items[i][1]))
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
        for i in sorted((i for i in moving if plan[i] is not None), key=lambda i: biggest_first(items[i][1])):
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

    # ------------------------------------------------------------------ the repair's moves
    @staticmethod
    def _repair_entry(a: Assignment, by_key: ByKey, constrained) -> tuple:
        """What the repair asks of a replica it may move, worked out once: (assignment, demand, its shape as
        ``_hopeless`` files it, how constrained it is). The repair looks at up to REPAIR_BUDGET of these, and
        on the bench fleets spends the whole budget turning them away by these two answers."""
        d = by_key[a.deployment, a.replica]
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
        self._file_host(host)
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
        self._file_host(host)
        return None

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
        self._file_host(host)
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
            for a, other, _ in sorted(held, key=lambda x: biggest_first(x[1])):
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
