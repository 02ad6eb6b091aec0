"""2i. A small plan still leaving replicas over: ruin and recreate.

The searches before it (stack.placement.exact) walk trees whose first choices keep each replica where it is, and
the runs in other orders (``engine.OTHER_RUNS``) start over from scratch; the better plans a MILP finds for the
plans they leave short are often many moves away from either (bench/placement.py --small-plans, 6 hosts, seed 14
at load 1.3: four more replicas, 47 of them moved). This step walks there one neighbourhood at a time: the replicas
on one to three hosts taken out (all of them, or some: ``PARTIAL``), with every replica left over, and put back one
by one (biggest first, or in a random order), each where it fits best among the places it may use, or now and then
at a random one of them; the result is kept as simulated annealing keeps a step (more replicas placed, else more
VRAM, always; fewer, with a chance that shrinks as the budget is spent), and the best plan met is applied if it
places more replicas than the plan did. The ruin and recreate principle (Schrimpf, Schneider, Stamm-Wilbrandt and
Dueck, J. Comput. Phys. 2000), accepted by annealing (Kirkpatrick, Gelatt and Vecchi, Science 1983).

It keeps the rules the search by chains keeps, on the same copies of the plan's groups and hosts (``exact._Chains``):
a kept replica never moves, a moved one or one with manual GPU selection stays placed, a replica never gives way to
replicas whose selectors reach more, and the plan takes no less VRAM than the floor the caller gives (``least_vram``:
the first run's heuristics' plan less ``exact.RUN_SLACK``); what it leaves over says where it was. Bounded by
``REINSERTS`` replicas put back in all, so a plan's time does not depend on its luck; the draws come from a
generator seeded with a constant and read through ``random()`` alone (the one method whose sequence Python keeps
the same across versions), so a plan is the same on every run and machine.

On bench/placement.py --small-plans (87 plans each of 4, 6 and 8 hosts that leave replicas over): see
bench/RESULTS.md (Placement's later steps, in full).
"""
from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from .exact import HOSTS, _Chains, _scope
from .state import choose_devices

if TYPE_CHECKING:
    from .engine import _Run

#: at most this many replicas in it (those placed and not kept, and those left over), on at most exact.HOSTS hosts
ITEMS = 200
#: replicas put back, in all, before it stops
REINSERTS = 30_000
#: the annealing's temperature at the start, in replicas (it falls linearly to ``COLD`` as the budget is spent):
#: a step that places one replica fewer is kept with a chance of exp(-1 / temperature)
HOT, COLD = 0.3, 0.02
#: the chance that a replica put back takes a random place of those it fits, not the best
WANDER = 0.15
#: how many hosts a ruin takes replicas off, drawn from these
RUINED = (1, 2, 3)
#: the chance that a ruin takes out only some of those hosts' replicas, each staying with the chance ``STAYS``; else
#: it empties them. Emptied hosts alone, the walk took steps too big to keep: on seven plans of --small-plans at 6
#: hosts that fell short of a MILP's most (keeping VRAM), 7 replicas short in all with 30,000 put back (6 to 8 with
#: the generator seeded 1 to 5); with partial ruins as well, 2 (2 to 7, 4.6 on average), and over all the plans as
#: many placed at 4 hosts and 4 more at 8, in the same time (bench/RESULTS.md, Placement's later steps)
PARTIAL, STAYS = 0.7, 0.7
#: the generator's seed
SEED = 1


def ruin_and_recreate(run: _Run, least_vram: float | None = None, least_gpus: float | None = None) -> bool:
    """Search (see the module) and apply what places more, taking no less than ``least_vram`` MiB of VRAM and
    ``least_gpus`` GPUs (None: no floor; ``engine.place`` gives the first run's heuristics' less RUN_SLACK, as for the
    other runs); whether the plan changed."""
    if not run._failed or len(run.fleet.hosts) > HOSTS:
        return False
    scope = _scope(run, run.by_key, ITEMS)
    if scope is None:
        return False
    search = _RuinRecreate(run, *scope, least_vram, least_gpus)
    return search.run()


class _RuinRecreate(_Chains):
    """The chains' copies of the plan (every replica in scope taken back), walked by ruin and recreate."""

    def __init__(self, run: _Run, items, hosts: list[str], least_vram: float | None, least_gpus: float | None):
        super().__init__(run, items, hosts, least_vram)
        #: the GPUs the items must allocate at least: the floor, less what the replicas out of scope allocate
        self.gpu_need = -math.inf if least_gpus is None else least_gpus - run.gpus_allocated() + \
            sum(self._gpus(it, it.home[1]) for it in self.items if it.required)
        self.random = random.Random(SEED).random
        #: the hosts a ruin may empty: those any replica in scope may use, by name
        self.ruinable = sorted({h for it in self.items for h, _ in it.slots})

    def run(self) -> bool:
        items, n = self.items, len(self.items)
        if not n or all(it.required for it in items) or self._most() <= sum(it.required for it in items):
            return False  # (no more fit than are placed now: the chains' bound)
        rnd = self.random
        now: list[tuple | None] = [None] * n  # each item's (slot, positions), None: left over
        for k, it in enumerate(items):
            if it.home is not None:
                h, gid, positions = it.home
                now[k] = ((h, gid), tuple(positions))
                self._take(it.d, now[k][0], now[k][1])
        start = self._value(now)
        assert start is not None  # the plan it starts from keeps every rule
        value, best, best_value = start, list(now), start
        spent = 0
        while spent < REINSERTS and best_value[0] < n:  # (every replica in scope placed: none more can be)
            # ruin: every replica left over, and those on one to three hosts (all of them, or each with a chance)
            ruined = {self.ruinable[int(rnd() * len(self.ruinable))] for _ in range(RUINED[int(rnd() * len(RUINED))])}
            partial = rnd() < PARTIAL
            redo = [k for k in range(n)
                    if now[k] is None or (now[k][0][0] in ruined and not (partial and rnd() < STAYS))]
            before = {k: now[k] for k in redo}
            for k in redo:
                if now[k] is not None:
                    self._give_back(items[k].d, *now[k])
                    now[k] = None
            # recreate: biggest first (equals in a random order), or all in a random order
            if rnd() < 0.5:
                redo.sort(key=lambda k: (-items[k].d.gpus, -(items[k].d.vram_mib or 1 << 30), -items[k].d.cpus, rnd()))
            else:
                redo.sort(key=lambda k: rnd())
            for k in redo:
                # one left over before the ruin fitted nowhere then, and since only the ruined hosts gained room
                got = self._place(items[k], ruined if before[k] is None else None)
                if got is not None:
                    self._take(items[k].d, *got)
                    now[k] = got
            spent += len(redo) or 1  # (nothing left over, and nothing on the hosts drawn: a step all the same)
            after = self._value(now)
            heat = HOT * max(0.0, 1 - spent / REINSERTS) + COLD
            if after is not None and (self._energy(after) <= self._energy(value) or
                                      rnd() < math.exp((self._energy(value) - self._energy(after)) / heat)):
                value = after
                if after[1] >= self.need and after[3] >= self.gpu_need - 1e-9 and after[:3] > best_value[:3]:
                    best, best_value = list(now), after
            else:  # undone: the items back where they were
                for k in redo:
                    if now[k] is not None:
                        self._give_back(items[k].d, *now[k])
                        now[k] = None
                for k, got in before.items():
                    if got is not None:
                        self._take(items[k].d, *got)
                        now[k] = got
        if best_value[0] <= start[0]:
            return False
        self._apply([None if got is None else (got[0], list(got[1])) for got in best])
        return True

    def _value(self, now: list) -> tuple[int, int, int, float] | None:
        """(replicas placed, VRAM taken, -moves, GPUs allocated) of ``now``; None where it breaks a rule: a replica
        that must stay placed left over, or one left over whose selectors reach fewer groups than one placed
        instead."""
        count = vram = moves = 0
        gpus = 0.0
        widest, narrowest = 0, 1 << 62
        for k, got in enumerate(now):
            it, reach = self.items[k], self.reach[k]
            if got is None:
                if it.required:
                    if not self.may_leave[k]:
                        return None
                    moves += 1
                    if reach is not None and reach < narrowest:
                        narrowest = reach
                continue
            (h, gid), positions = got
            count += 1
            vram += self._vram(it, gid)
            gpus += self._gpus(it, gid)
            if it.home is not None and it.home != (h, gid, positions):
                moves += 1
            if not it.required and reach is not None and reach > widest:
                widest = reach
        if widest > narrowest:
            return None
        return count, vram, -moves, gpus

    def _gpus(self, it, gid: int | None) -> float:
        """Whole GPUs' worth ``it`` allocates on group ``gid`` (as ``_Run.gpus_allocated`` counts them)."""
        d = it.d
        if gid is None or not d.gpus:
            return 0.0
        return d.gpus if d.vram_mib is None else d.gpus * d.vram_mib / self.size[gid]

    def _energy(self, value: tuple) -> float:
        """What the annealing lowers: replicas placed, then (a sliver) VRAM taken; below the VRAM floor, a replica's
        worth for each 8 GiB short."""
        return -(value[0] + 1e-9 * value[1]) + max(0.0, self.need - value[1]) / (8 * 1024)

    def _place(self, it, only: set[str] | None) -> tuple | None:
        """Where ``it`` goes now: (slot, positions) of the best of the places it fits (the tightest group for whole
        devices, bigger devices first; the least VRAM left on the devices for a slice; equals in a random order),
        or now and then (``WANDER``) a random one of them; None where it fits none. ``only``: these hosts alone."""
        d, rnd = it.d, self.random
        v, g = d.vram_mib, d.gpus
        fits = []
        for slot in it.slots:
            h, gid = slot
            if (only is not None and h not in only) or not self._host_takes(d, h):
                continue
            if gid is None:
                fits.append((0, 0, rnd(), slot, ()))
                continue
            room = self.rooms[gid]
            positions = choose_devices(room, d, d.allowed_on(h))
            if positions is None:
                continue
            if v is None:
                fits.append((room.claims.count(0) - g, -self.size[gid], rnd(), slot, tuple(positions)))
            else:
                fits.append((sum(room.free[i] for i in positions) - v * g, 0, rnd(), slot, tuple(positions)))
        if not fits:
            return None
        got = fits[int(rnd() * len(fits))] if len(fits) > 1 and rnd() < WANDER else min(fits)
        return got[3], got[4]
