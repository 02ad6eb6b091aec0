"""2d, 2e. Trades: GPUs idle next to exhausted CPUs or memory.

A CPU-heavy replica trades places with a CPU-light one of the same GPUs and VRAM so that one left over fits
(``exchange``); hosts still short of CPUs or memory for their idle GPUs trade until they are not
(``rebalance``). Methods of the engine's run (``Trades`` is one of its bases): they read and change its state.
"""
from __future__ import annotations

from bisect import bisect_left
from itertools import groupby
from operator import itemgetter
from typing import Iterable, Iterator

from .model import Assignment, ByKey, Demand
from .state import FleetState, choose_devices


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

    def without(self, hosts: set[str]) -> _Partners:
        """These partners but those on ``hosts``."""
        out = _Partners(())
        for weight, run in self._runs.items():
            kept = [e for e in run if e[3].host not in hosts]
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


class Trades:
    """The trade steps of a placement run (mixed into the engine's ``_Run``)."""

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
        with the first run so restricted too). The replicas a trade may move are listed once for both steps
        (``made``), what the exchange and its retry placed added to them (``_list_placed``)."""
        left, made = self._failed, []
        roomy = self.exchange(self.by_key, made)
        self.retry()
        if roomy is None or roomy:
            if made:  # the exchange listed them
                self._list_placed(made[0], left)
            self.rebalance(self.by_key, roomy if last else None, made)
            self.retry()

    #: candidate exchanges the CPU step looks at, each time it runs
    EXCHANGE_BUDGET = 200_000

    def exchange(self, by_key: ByKey, made: list | None = None) -> set[str] | None:
        """GPUs left idle on hosts whose CPUs or memory ran out: a replica nothing fit gets such a host's
        GPUs once a CPU-heavy replica there trades places with a CPU-light replica of the same GPUs and VRAM
        on a host with CPUs to spare (both new or moved, never kept; the devices must suit both: a smallest
        device size differs). Each trade must place the replica that was left over, or it is undone.
        Bounded: at most EXCHANGE_BUDGET candidates each time it runs (twice where a give-way applied).
        Returns the hosts where some replica left over that asks CPUs or memory had the devices and a port free,
        the only hosts where moving CPUs and memory can place one; None where the budget ran out before all were
        asked (any host may be one). ``made``: where the replicas a trade may move are kept once listed, for the
        rebalance after it."""
        failed = [(d, p) for d, p in self._failed if d.gpus and d.manual is None and (d.cpus or d.ram_mib)]
        if not failed:
            return set()
        made = [] if made is None else made

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

    def _tradeable(self, by_key: ByKey) -> tuple[dict[tuple, _Partners], dict[str, list[tuple]]]:
        """The GPU replicas a trade may move (new or moved, not pinned; a kept one stays): as partners by GPUs and
        VRAM (``_Partners``), and as (assignment, demand) by host."""
        by_shape: dict[tuple, list[tuple]] = {}
        on_host: dict[str, list[tuple]] = {}
        # every placed replica passes here, twice a plan (100,000 at 21,000 hosts): no empty list made per replica
        # for setdefault to drop
        for k, a in self.placed.items():
            if a.vendor is None or a.status == "kept":
                continue
            d = by_key[k]
            if d.manual is None:
                shape = _trade_shape(d)
                got = by_shape.get(shape)
                if got is None:
                    got = by_shape[shape] = []
                got.append((d.cpus, d.ram_mib, a.key, a, d))
                host = a.host
                got = on_host.get(host)
                if got is None:
                    got = on_host[host] = []
                got.append((a, d))
        return {shape: _Partners(entries) for shape, entries in by_shape.items()}, on_host

    def _list_placed(self, tradeable: tuple[dict[tuple, _Partners], dict[str, list[tuple]]],
                     left: list[tuple[Demand, str | None]]) -> None:
        """Those of ``left`` (replicas left over when ``tradeable`` was made) placed since join its lists, as
        ``_tradeable`` made again would list them (trades keep the lists up to date themselves: ``_traded``;
        nothing else moves or takes back a replica during the trade steps). Made again for the rebalance, the
        lists took 1 % of the process bench's placement, 2 % at 4,000 hosts."""
        by_shape, on_host = tradeable
        for d, _ in left:
            a = self.placed.get((d.deployment, d.replica))
            if a is None or a.vendor is None or d.manual is not None:
                continue
            entry = (d.cpus, d.ram_mib, a.key, a, d)
            partners = by_shape.get(_trade_shape(d))
            if partners is None:
                by_shape[_trade_shape(d)] = _Partners([entry])
            else:
                partners.put(entry, None)
            on_host.setdefault(a.host, []).append((a, d))

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

    def rebalance(self, by_key: ByKey, only: set[str] | None = None, made: list | None = None) -> None:
        """GPUs idle beside CPUs or memory too short for them, while other hosts have CPUs and memory to spare:
        the heaviest replica on the first trades places with a lighter one (in CPUs and memory both) of the same
        GPUs and VRAM on the second (both new or moved, never kept; the devices must suit both), as long as the
        first host is short and the second is not left short itself. Nothing is placed or lost by a trade, and
        the step runs after the exchange, followed by a retry that places what now fits: it never costs a replica
        or a GPU.
        On ten fleets of bench/placement.py --resources (load 1.0), GPUs allocated on average: 96.6 %, 97.0 %
        with the exchange's wider pairs, 97.1 % with this step too (load 1.3: 97.1 % -> 97.3 %); Alibaba's openb
        trace unchanged. Bounded: at most REBALANCE_BUDGET candidates each time it runs
        (twice where a give-way applied). ``only``: the first hosts are among these (``trade``). ``made``: the
        replicas a trade may move, where the exchange listed them (``trade``)."""
        if self.ratios is None or not any(d.gpus and d.manual is None for d, _ in self._failed):
            return
        state = self.state
        cpus_pg, ram_pg = self.ratios
        cpu, ram, free = state.cpu_free, state.ram_free, state.gpus_free

        def short(h: str) -> bool:
            g = free[h]
            return g >= 0.5 and ((cpu[h] is not None and cpu[h] < cpus_pg * g) or
                                 (ram[h] is not None and ram[h] < ram_pg * g))

        by_shape, on_host = made[0] if made else self._tradeable(by_key)
        # a partner on a host short itself would leave it shorter still: never walked past (each host asked once,
        # not once per replica on it: every placed replica is a partner of some shape)
        shorts = {h for h in on_host if short(h)}
        by_shape = {k: p.without(shorts) for k, p in by_shape.items()}
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

        firsts = [h for h in shorts if only is None or h in only]  # (nothing has traded since ``shorts``)
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
            self._file_host(a.host)  # a host the index dropped for want of CPUs may have them now
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
        for host in (h1, h2):
            self._file_host(host)
        return False
