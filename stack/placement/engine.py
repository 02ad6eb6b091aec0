"""The placement pipeline, in the order it runs:

1. **sticky**: each replica in the prior lock stays exactly where it was (host, GPUs, port)
   while that is still valid: same demand shape, host active, devices present, every filter
   passes, capacity and port still free.  Otherwise the reason it must move is recorded.
2. **fresh**: the rest, most constrained first, then biggest first (``order``), each through
   the filters and rankers (``index.best``; what a walk of the index's lists skips: ``walks``):
   soft anti-affinity first tries hosts not yet running the deployment; ``spread: hosts`` makes
   that a hard rule. Where replicas ask CPUs or memory, equally constrained replicas go in two
   rounds: one that would strand a host's GPUs next to its last CPUs waits for the second
   (preferences.KeepCpusPerGpu). Then bounded steps (``_place``): repair and re-pack (``repair``),
   exchange and rebalance (``trade``); once the order is chosen, the give-way step (``giveway``): in
   a full pool a bigger new replica leaves its room to two or more smaller ones left over; then, in a
   small plan that still leaves replicas over, a bounded exact search for an arrangement that places
   more (``exact``); where some are still left over, a few other runs: in perturbed orders, and a
   binpack plan with the spread ranker (``place``, ``OTHER_RUNS``); last, ruin and recreate of the plan
   taken (``recreate``).
3. **explain** (``explain``): a replica nothing fits is run through every filter on every host,
   and the hosts each filter rejected are counted under its reason code.
4. **removed**: lock entries whose replica no longer exists.

This module holds the pipeline and the run's state and its shared moves (commit, take back, the fresh
search); the steps that are methods of the run (repair, trade, explain) live in their own modules as its
bases, and module-level parts (order, walks) are plain functions and classes.

Pure: the same fleet, demands, prior and strategy give the same Placement.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import groupby
from operator import attrgetter
from typing import Iterable

from inventory.fleet import Fleet

from ..collector import collector_paused

from .exact import CHAIN_ITEMS, HOSTS, RUN_SLACK, place_more
from .explain import Explanations
from .filters import PIPELINE, applicable
from .giveway import GiveWay
from .index import BINPACK, SPREAD, CandidateIndex, HostIndex
from .model import Assignment, ByKey, Demand, LockedReplica, Placement, Removed, Unplaced
from .order import (Constrainedness, DeviceSize, biggest_first, by_size, capacity_per_gpu, perturbed, plan_ratios,
                    sorted_by_runs)
from .packing import device_bins
from .preferences import Context, Tiers
from .rankers import RANKERS
from .recreate import ruin_and_recreate
from .repair import Repairs
from .state import FleetState, GroupState, choose_devices, needs
from .trade import Trades
from .walks import GiveUp, HostsLacking, Walks


#: (deployment, replica) of a demand, an assignment or a replica left over: the order plans list them in (a C
#: getter, not a lambda: sorted for every replica of a plan, twice)
_REPLICA_ORDER = attrgetter("deployment", "replica")


@collector_paused()
def place(fleet: Fleet, demands: list[Demand], prior: dict[str, LockedReplica] | None = None,
          strategy: str = BINPACK, reserved: tuple[LockedReplica, ...] = (),
          held: dict[str, tuple[LockedReplica, ...]] | None = None) -> Placement:
    """Place ``demands``; ``prior`` is the lock's placement (see ``_place``).

    A second order is tried when a plan that nearly fits leaves shared claims over while their VRAM is there
    in slivers, and a best-fit-decreasing dry run (stack.placement.packing) pairs all the plan's shared claims
    on no more devices than the first run's placed ones hold (``_Run.wants_device_order``): shared claims
    placed device by device as that dry run groups them. It is kept only when it places no fewer replicas and
    no fewer GPUs, and more of one: on 37 nearly-full plans of the process bench's generator it was made on 11
    and kept on 9 (+0.4 % devices in use, +0.6 % VRAM). Where it loses either (more multi-GPU or CPU-heavy
    replicas: it places more replicas but fewer GPUs) the first order stands.

    Then, in a full pool, a bigger replica this plan places new may give its room to two or more smaller ones
    left over (stack.placement.giveway): more replicas placed, never less VRAM taken.

    Last, a small plan (``exact.HOSTS`` hosts at most, ``exact.CHAIN_ITEMS`` replicas left over at most) that
    still leaves replicas over is made again (``OTHER_RUNS``), twice in an order where what a replica asks
    weighs a quarter more or less, by deployment (``order.perturbed``), through every step; a run is taken if it
    places more replicas and takes no less VRAM and no fewer GPUs than the first run's heuristics did, less
    ``exact.RUN_SLACK`` (half a percent: a plan of many more replicas is not turned down for a sliver of VRAM; the
    searches by chains of every run keep to the same floor). The searches before keep
    close to the first order's plan (their first choices keep each replica where it is), and the better plans a
    MILP finds are often far from it; another order starts elsewhere. A multi-start search: each start a greedy
    construction in a perturbed order, then the same local searches (as in GRASP: Feo and Resende, J. Global
    Optim. 1995), the perturbation drawn from names, not from a random generator, so a plan is the same on every
    run. An order the same as the first is not run again. A binpack plan is also made with the spread ranker, in the
    first order (``OTHER_RUNS``): its plan starts from the emptiest groups, away from where
    binpack's every search starts, and is taken on the same terms (more replicas placed is what binpack is for;
    the plan still says binpack). Last, a plan whose replicas ask CPUs or memory is made once more weighing no
    CPUs and memory per GPU (``_place``'s ``ratios``): the first run defers a replica that would leave a host
    short of CPUs or memory for its other GPUs, and a small host filled meanwhile with smaller replicas may have
    been the only place it fitted. Then the plan taken, if it still leaves replicas over, is shaken by ruin and
    recreate (stack.placement.recreate) on the same terms and floor.
    """
    run = _best_order(fleet, demands, prior, strategy, reserved, held)
    run.give_way()  # 2f. a full pool: one replica's room for two or more left over
    # what a small plan keeps of the VRAM and GPUs the heuristics' plan takes, whatever the searches and runs after
    floor = run.floor() if run._failed and len(fleet.hosts) <= HOSTS else None
    # 2g. a small plan: an exact search for a placement of more
    place_more(run, run.by_key, None if floor is None else floor[0])
    # 2h. a small plan still leaving replicas over: other runs
    if floor is not None and run._failed and len(run._failed) <= CHAIN_ITEMS:
        made = {(strategy, 0, True)}  # (the first run)
        weighs = run.ratios is not None
        for ranker, salt, ratios in OTHER_RUNS:
            # the same run as one made is skipped (a spread plan's own ranker is spread; a plan weighing no CPUs
            # or memory per GPU has no ratios to leave out)
            key = (ranker or strategy, salt, ratios or not weighs)
            if key in made:
                continue
            made.add(key)
            other = _place(fleet, demands, prior, strategy, reserved, held, salt=salt, ranker=ranker, ratios=ratios)
            if other is None:
                continue
            other.give_way()
            place_more(other, other.by_key, floor[0])
            if other.beats(run, floor):
                run, other = other, run
            other.close()
            if not run._failed:
                break
    # 2i. a small plan still leaving replicas over: ruin and recreate
    if floor is not None and run._failed:
        ruin_and_recreate(run, *floor)
    try:
        return run.finish(demands, prior)
    finally:
        run.close()


#: the other runs of a small plan that leaves replicas over (``place``), in turn: (ranker, None: the strategy's; salt of
#: the perturbed order, 0: none; whether CPUs and memory per GPU are weighed). A run the same as one made before is
#: skipped (spread's own ranker is spread: a spread plan gets the two perturbed orders and the run without ratios only;
#: a plan none of whose replicas asks CPUs or memory has no ratios to leave out). Against the MILP answers of
#: --small-plans' plans of 4, 6 and 8 hosts, in perturbed orders alone: one placed 8, 6 and 10 more replicas than the
#: first run, two 8, 17 and 12, three 9, 17 and 12, four 9, 17 and 12, sixteen 13 and 19 at 4 and 6 hosts; two and the
#: spread ranker 12, 17 and 18 (one and the spread ranker 12, 8 and 17); two, the spread ranker and the spread ranker in
#: a perturbed order 17, 19 and 19 (with a second such order too: 17 and 19 at 4 and 6 hosts; with one binpack order
#: fewer: 17 and 10). Then (ratios False: no CPUs and memory per GPU weighed, in the first order) 21, 22 and 20, for a
#: fifth to two fifths more time on those plans (in place of the spread ranker's perturbed order: 16 and 20 at 4 and 6
#: hosts; made first instead of last: 21 and 15). Each costs about what the plan did in the first run, where it runs.
#: Since the search by chains cuts a branch that the CPUs, memory or VRAM free cannot take more replicas in
#: (2026-12-06), the spread ranker in a perturbed order placed no more on any of the 261 plans, and was dropped; left
#: out one at a time, the others cost 1, 8, 3 and 15 replicas over those plans
OTHER_RUNS: tuple[tuple[str | None, int, bool], ...] = (
    (None, 1, True), (None, 2, True), (SPREAD, 0, True), (None, 0, False))


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
          by_device: bool = False, salt: int = 0, ranker: str | None = None, ratios: bool = True) -> "_Run | None":
    """Place ``demands`` up to the explanations (``_Run.finish``); ``prior`` is the lock's placement.

    ``reserved``: departing replicas the lock recorded (their containers still run until the up
    that applies this lock deletes them). ``held``: replicas of other stacks on the same hosts, by
    stack name.
    Both, like this plan's own departing replicas, keep their GPUs and ports. ``by_device``: shared claims
    go in the order of the devices a dry run packs them onto (see ``place``). ``salt``: another order
    (``order.perturbed``; 0: none), or None where it is the same as the first. ``ranker``: the ranker the
    searches use where not the strategy's (the Placement still records the strategy). ``ratios``: False, the run
    weighs no CPUs and memory per GPU (``order.plan_ratios``): biggest first in one round, as where no replica
    asks any, with CPUs and memory still checked on every host.
    """
    prior = prior or {}
    state = FleetState(fleet)
    index = CandidateIndex(state, demands)
    run = _Run(fleet, state, index, strategy, ranker)
    run.hosts = HostIndex(state, demands, run.ranker)
    gpu_demands = [d for d in demands if d.gpus]
    run.gpu_replicas = len(gpu_demands)
    run.least = needs(min((d.cpus for d in gpu_demands), default=0), min((d.ram_mib for d in gpu_demands), default=0))
    if any(d.cpus or d.ram_mib for d in gpu_demands):
        run.walks = Walks(index)

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
    ordered = sorted(demands, key=_REPLICA_ORDER)
    fresh: list[Demand] = []
    resized: list[tuple[Demand, LockedReplica]] = []
    for demand in ordered:  # 1. sticky
        locked = prior.get(demand.key) if prior else None  # no lock: no key formatted per replica
        if locked is None:
            fresh.append(demand)
            continue
        c = locked.claim
        if (c.vram_mib != demand.vram_mib or c.cpus != demand.cpus or c.ram_mib != demand.ram_mib) \
                and c.framework == demand.framework and c.gpus == demand.gpus and (c.vram_mib is None) is demand.whole:
            # the same devices, asking other VRAM, CPUs or memory (compared field by field: making ``demand.claim``
            # for every replica of a lock took 4.5 % of the instructions of planning the process bench's 9,019
            # replicas again from their own lock)
            resized.append((demand, locked))  # decided below, beside what stays on during the apply
        elif not run.keep(demand, locked):
            fresh.append(demand)
    # what the apply leaves running meanwhile: the lock's replicas not kept (the resized ones as they are, until
    # each is decided), and what the lock's last change left (a resized replica's, beyond what it asks now)
    now = {a.key: a for a in run.placed.values()}
    deciding = {d.key for d, _ in resized}
    departing = [lr for key, lr in sorted(prior.items()) if key not in now and key not in deciding]
    beyond = (held_beyond(r, now.get(r.key)) for r in reserved)
    _hold(state, index, tuple(departing) + tuple(x for x in beyond if x is not None))
    holds = [_hold_one(state, index, locked) for _, locked in resized]
    for (demand, locked), held in zip(resized, holds):
        if run.keep_resized(demand, locked, held):
            if held_beyond(locked, run.placed[demand.deployment, demand.replica]) is not None:
                departing.append(locked)  # the lock's ``reserved``: it holds the difference until the apply
        else:
            departing.append(locked)
            fresh.append(demand)
    if resized:
        departing.sort(key=lambda lr: lr.key)
        fresh.sort(key=_REPLICA_ORDER)
    departing = tuple(departing)
    run.ratios = run.hosts.per_gpu = plan_ratios(fresh, demands) if ratios else None
    run.context = Context(state, run.ratios)
    run.tiers = Tiers(run.context)
    for host in fleet.hosts:  # what departing and other stacks' replicas hold is taken now
        if run._exhausted(host.name):
            index.drop_host(host.name)
        run.hosts.refresh(host.name)
    constrained = run.constrained
    bins = device_bins(fresh, DeviceSize(index)) if by_device else None
    size = by_size(capacity_per_gpu(fleet), bins) if run.ratios is not None else biggest_first
    if bins is None:  # the order is the same for replicas alike but for their number: asked once per run of them
        fresh, first = sorted_by_runs(fresh, lambda d: (constrained(d), size(d)[:-1])), fresh
        if salt:
            weighed = perturbed(size, salt)
            other = sorted_by_runs(first, lambda d: (constrained(d), weighed(d)[:-1]))
            if other == fresh:
                run.close()
                return None  # (the same order: the same plan)
            fresh = other
    else:  # bins are per replica
        fresh.sort(key=lambda d: (constrained(d), size(d)))
    if run.ratios is None:
        for demand in fresh:  # 2. fresh
            run.place_fresh(demand, prior.get(demand.key) if prior else None)
    else:  # 2. fresh, equally constrained replicas at a time, each run in two rounds
        for _, alike in groupby(fresh, key=constrained):
            run.place_in_two_rounds(alike, prior)
    # by (deployment, replica), as ``placed`` is: a lookup of a placed replica's demand formats no key string
    by_key = run.by_key = {(d.deployment, d.replica): d for d in demands}
    run.repair(by_key, constrained)  # 2b. make room for what nothing fit
    run.repack(by_key)  # 2c. few whole-GPU replicas left over: an exact, bounded search
    run.retry()  # the re-pack may have freed room: what fits now goes first
    run.trade()  # 2d, 2e. GPUs idle next to exhausted CPUs or memory: trade heavy for light replicas
    run.departing = departing
    return run


def held_beyond(entry: LockedReplica, now) -> LockedReplica | None:
    """What the container ``entry`` records still holds while the apply runs, where ``now`` (an Assignment or a
    LockedReplica: the same replica in this plan, or None) keeps it on the same devices with another claim: its
    container is replaced in place (delete, then create), and every other container on those devices may start
    before or after it, so the devices and the host hold the larger of the two claims until the apply is done.
    ``entry`` itself where the replica is elsewhere or gone; None where the claim it keeps is no smaller."""
    if now is None or (now.host, now.vendor, tuple(now.gpus)) != (entry.host, entry.vendor, tuple(entry.gpus)):
        return entry
    was, new = entry.claim, now.claim
    vram = max(0, was.vram_mib - new.vram_mib) if was.vram_mib is not None and new.vram_mib is not None else 0
    cpus, ram = max(0, was.cpus - new.cpus), max(0, was.ram_mib - new.ram_mib)
    if not (vram or cpus or ram):
        return None
    return replace(entry, gpus=entry.gpus if vram else (), uuids=entry.uuids if vram else (),
                   claim=replace(was, vram_mib=vram or None, cpus=cpus, ram_mib=ram))


def _hold(state: FleetState, index: CandidateIndex, entries: tuple[LockedReplica, ...]) -> None:
    """GPUs and ports of containers that still exist during the apply stay taken in this plan.

    Pulumi creates new containers before it deletes removed ones, and a replica moving to
    another host is created there before the old one goes: a new replica on a GPU or port an
    old container still holds would fail its free-memory check or its bind. Entries naming a
    host or device that no longer exists hold nothing.
    """
    for locked in entries:
        _hold_one(state, index, locked)


def _hold_one(state: FleetState, index: CandidateIndex, locked: LockedReplica) -> tuple:
    """``_hold`` of one entry; what it took, for ``_give_back``: (group, positions, the MiB taken on each and
    whether each was held whole before, whether the port was taken). A device or port another lock holds too
    gives up only what it had left, and gets back only that."""
    gs, positions, taken, took_port = None, [], None, False
    if locked.host in state.cpu_free:
        state.hold_host(locked.host, locked.claim.cpus, locked.claim.ram_mib)
    if locked.gpus:
        gs = next((g for g in state.groups_of.get(locked.host, ()) if g.group.vendor == locked.vendor
                   and all(i in g.pos_of for i in locked.gpus)), None)
        if gs is not None:
            positions = [gs.pos_of[i] for i in locked.gpus]
            before = [(gs.free[p], gs.exclusive[p]) for p in positions]
            state.hold(gs, positions, locked.claim.vram_mib)
            taken = [(free - gs.free[p], whole) for (free, whole), p in zip(before, positions)]
            _over_held(state, gs, positions, locked, taken, 1)
            index.refresh(gs)
    ports = state.ports.get(locked.host)
    if ports is not None and ports.take(locked.port):
        took_port = True
        if not state.has_free_port(locked.host):
            index.drop_host(locked.host)
    return gs, positions, taken, took_port


def _give_back(state: FleetState, index: CandidateIndex, locked: LockedReplica, held: tuple) -> None:
    """Undo ``_hold_one`` (``held``: what it took): a resized replica's own container, replaced where it is."""
    gs, positions, taken, took_port = held
    if locked.host in state.cpu_free:
        state.hold_host(locked.host, -locked.claim.cpus, -locked.claim.ram_mib)
    if gs is not None:
        state.unhold(gs, positions, taken)
        _over_held(state, gs, positions, locked, taken, -1)
        index.refresh(gs)
    if took_port:
        state.ports[locked.host].give_back(locked.port)


def _over_held(state: FleetState, gs: GroupState, positions: list[int], locked: LockedReplica, taken: list,
               sign: int) -> None:
    """Count (``sign`` 1) or uncount (-1) in ``state.over_held`` what a shared hold of ``locked`` asked on each device
    beyond what it took (``taken``): where two locks written apart filled one device, giving one hold back frees no
    more than the device had beside the others (tests/test_placement_beside_others.py, seed 230: a replica whose
    CPUs changed was kept on a device that its departing neighbour and another stack's replica held past its VRAM,
    and its new container would start there)."""
    want = locked.claim.vram_mib
    if want is None:
        return  # (a whole hold takes what is left, exclusively: nothing else keeps a claim there)
    over = state.over_held
    for p, (mib, _) in zip(positions, taken):
        if mib < want:
            k = (gs.gid, p)
            left = over.get(k, 0) + sign * (want - mib)
            if left:
                over[k] = left
            else:
                over.pop(k, None)


class _Run(Repairs, Trades, Explanations):
    """One placement run: the state, the index, and what has been decided so far."""

    def __init__(self, fleet: Fleet, state: FleetState, index: CandidateIndex, strategy: str,
                 ranker: str | None = None):
        self.fleet, self.state, self.index, self.strategy = fleet, state, index, strategy
        self.ranker = RANKERS[ranker or strategy]
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
        #: what searches learnt about the index's lists (see Walks; set by place when replicas ask for
        #: CPUs or memory: only then do searches walk past hosts that lack them)
        self.walks: Walks | None = None
        #: the lock's replicas not kept, whose containers still run during the apply (set by _place)
        self.departing: tuple[LockedReplica, ...] = ()
        #: how many replicas of the plan need GPUs (set by _place)
        self.gpu_replicas = 0
        #: what the preferences read (stack.placement.preferences; set by _place with the ratios)
        self.context: Context | None = None
        #: the fresh pass's first round: firm preferences are not given up (set by place_in_two_rounds)
        self.firm = False
        #: the tiers searches walk, with the preferences' per-host checks, made once per run (a search made each
        #: check again: 12,000 closures on the process bench; set by _place with the context)
        self.tiers: Tiers | None = None
        #: replicas that gave their room to smaller ones left over (give_way): key -> (host, how many took it)
        self.gave_way: dict[str, tuple[str, int]] = {}
        #: replicas the search by chains of a small plan left over (exact._Chains): key -> (host, how many more
        #: replicas the plan places for it)
        self.left_for_more: dict[str, tuple[str, int]] = {}
        #: the plan's demands by (deployment, replica), the key of ``placed`` (set by _place)
        self.by_key: ByKey = {}
        #: how many device groups (hosts, for CPU-only replicas) a replica could ever use: the fresh pass's order,
        #: the repair's and the give-way's rule that the more constrained keep their place
        self.constrained = Constrainedness(fleet, index)

    # ------------------------------------------------------------------ 3. and 4.: the Placement
    def finish(self, demands: list[Demand], prior: dict[str, LockedReplica] | None) -> Placement:
        self.explain_unplaced()  # 3. explain, against the final state the user will see
        wanted = {d.key for d in demands} if prior else set()  # 4. removed
        removed = tuple(Removed(key, lr.host, lr.gpus, lr.port) for key, lr in sorted((prior or {}).items())
                        if key not in wanted)
        placed = self.placed  # (keyed by (deployment, replica): its keys sort as the assignments do)
        return Placement(self.strategy, tuple([placed[k] for k in sorted(placed)]),
                         tuple(sorted(self.unplaced, key=_REPLICA_ORDER)), removed,
                         dict(sorted(self.move_reasons.items())), self.departing)

    def close(self) -> None:
        """The run is over: the state forgets the index it told of changes (see Walks), the one cycle a run
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
        only trade replicas for GPUs, and a second run would double its time for nothing; so is one whose
        shared claims the dry run cannot pair on fewer devices (``pairing_makes_room``)."""
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
                        return self.pairing_makes_room()
        return False

    def pairing_makes_room(self) -> bool:
        """The best-fit-decreasing dry run of the second order (``packing.device_bins``) puts every one-GPU shared
        claim of the plan, those left over too, on no more devices than this run's placed ones take: pairing them
        better, what that order is for, could make room for the ones left over. Where it cannot, the order has
        nothing to gain from pairing: on Alibaba's openb trace the dry run needed 1,974-1,978 devices for the
        default list's shared claims and the first run held all but about 150 on 1,857; the second order was
        made on 16 of the 24 task lists and kept on one (gpuspec33: 6 more replicas placed in the end, 0.01
        points fewer GPUs), for twice the time. On the nearly-full plans of the process bench's generator the dry
        run needs about half the devices the first run takes (it was kept on 9 of 11), and in
        tests/test_placement_packing.py's small case as many (it places the replica left over)."""
        by_key = self.by_key
        devices = {(a.host, a.vendor, a.gpus[0]) for k, a in self.placed.items()
                   if not a.whole and a.vendor is not None and len(a.gpus) == 1 and by_key[k].manual is None}
        bins = device_bins(by_key.values(), DeviceSize(self.index))  # (it takes the one-GPU shared claims itself)
        return len({id(b) for b in bins.values()}) <= len(devices)

    def better_than(self, other: "_Run") -> bool:
        """This run places at least as many replicas and GPUs as ``other``, and more of one."""
        na, nb = len(self.placed), len(other.placed)
        ga, gb = self.gpus_allocated(), other.gpus_allocated()
        return na >= nb and ga >= gb - 1e-9 and (na > nb or ga > gb + 1e-9)

    def floor(self) -> tuple[float, float]:
        """The least VRAM (MiB) and GPUs a small plan may end with: ``RUN_SLACK`` less than this run takes (the
        first run's, before the exact searches: ``place``, ``beats``, ``exact.place_more``)."""
        return (1 - RUN_SLACK) * self.vram_taken(), (1 - RUN_SLACK) * self.gpus_allocated() - 1e-9

    def beats(self, other: "_Run", floor: tuple[float, float]) -> bool:
        """This run places more replicas than ``other``, and takes at least ``floor``'s VRAM (a whole device
        counted whole) and GPUs (``floor``: the first run's heuristics', less ``RUN_SLACK``)."""
        return len(self.placed) > len(other.placed) and self.vram_taken() >= floor[0] and \
            self.gpus_allocated() >= floor[1]

    def vram_taken(self) -> int:
        """MiB of VRAM the replicas placed take (an assignment's ``vram_mib`` is its devices' whole size for a
        whole claim)."""
        return sum(a.vram_mib * len(a.gpus) for a in self.placed.values())

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

    def keep_resized(self, demand: Demand, locked: LockedReplica, held: tuple) -> bool:
        """``keep`` for a replica whose claim changed but not its kind of devices, asked once what the apply leaves
        running is held (the lock's replicas not kept, and the other resized ones as they are): its container is
        replaced where it is, its new one starting beside those. Kept, it goes on holding what it held beyond its
        new claim (``held_beyond``); not kept, its container stays until the apply deletes it, holding its old one.
        ``held``: what holding it as it is took (``_hold_one``), given back first."""
        _give_back(self.state, self.index, locked, held)
        if self.keep(demand, locked):
            extra = held_beyond(locked, self.placed[demand.deployment, demand.replica])
            if extra is not None:
                _hold(self.state, self.index, (extra,))
            return True
        _hold(self.state, self.index, (locked,))
        return False

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
            allowed = demand.allowed_on(host.name)
            if allowed is not None and not allowed.issuperset(locked.gpus):
                # manual GPU selection that no longer names its devices (the filter below asks only whether the
                # host has enough selected ones)
                return "no_longer_matches:gpu_selection", None, None
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
        if gs is not None and not _positions_free(gs, positions, demand, self.state.over_held):
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
        for _, avoiding, checks, key in self.tiers.of(demand, self.firm):
            skip = set(hard)
            for pref in avoiding:
                skip |= pref.avoided(ctx, demand) or frozenset()
            hosts = HostsLacking(skip, self.state, demand, checks, self.walks, key) if sized or checks else skip
            try:
                gs = self.index.best(demand, self.ranker, hosts)
            except GiveUp:
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

    def retry(self) -> None:
        """Replicas nothing fit, tried again in order: the repair and the re-pack move capacity around."""
        failed, self._failed = self._failed, []
        self._hopeless.clear()
        for demand, previous in failed:
            self._place_one(demand, previous)

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
        else:
            gs = self._group_of(a)
            self.state.release(gs, [gs.pos_of[i] for i in a.gpus], d, a.host, a.port)
        self._file_host(a.host)

    # ------------------------------------------------------------------ commit
    def _commit_placed(self, demand, host_name, gs, positions, port, previous, file: bool = True) -> Assignment:
        """Commit a replica this run places: new, or moved off ``previous`` (the lock's host) with its reason.
        ``file``: False, the indexes are left for ``_file_host`` (``_record``)."""
        reason = self.move_reasons.get(demand.key, "") if previous else ""
        return (self._commit if file else self._record)(demand, host_name, gs, positions, port,
                                                         "moved" if previous else "new", reason, previous)

    def _commit(self, demand, host_name, gs, positions, port, status, reason, previous) -> Assignment:
        a = self._record(demand, host_name, gs, positions, port, status, reason, previous)
        if gs is not None:
            self.index.refresh(gs)
        if not self.state.has_free_port(host_name) or self._exhausted(host_name):
            self.index.drop_host(host_name)
        if self.hosts is not None:
            self.hosts.refresh(host_name)
        return a

    def _file_host(self, host: str) -> None:
        """The index and the host index file ``host`` again after what it holds changed (a replica taken back, or
        replicas recorded there without them: ``_record``): each of its groups where it has room left, none where
        it has not (the give-way records a room's replicas and files the host once: 1.2 % of the process bench's
        placement instructions)."""
        if self.state.has_free_port(host) and not self._exhausted(host):
            self.index.restore_host(host)
        else:
            self.index.drop_host(host)
        if self.hosts is not None:
            self.hosts.refresh(host)

    def _record(self, demand, host_name, gs, positions, port, status, reason, previous) -> Assignment:
        """``_commit`` but for the indexes: the state and the plan record the replica (``_file_host`` files the
        host once several are recorded there)."""
        taken = self.state.ports[host_name].take(port) if status == "kept" else True
        assert taken
        per = self.state.claim(gs, positions, demand, host_name)
        if gs is None:
            gpus = uuids = ()
        elif len(positions) == 1:  # (most replicas: the group's own tuples for the device, no list made)
            gpus, uuids = gs.device_ids[positions[0]]
        else:
            devices = [gs.group.devices[p] for p in positions]
            gpus, uuids = tuple([d.index for d in devices]), tuple([d.uuid for d in devices])
        a = Assignment(
            deployment=demand.deployment, replica=demand.replica, host=host_name,
            vendor=gs.group.vendor if gs is not None else None, gpus=gpus, uuids=uuids,
            vram_mib=per, whole=demand.whole, port=port, status=status, reason=reason,
            previous_host=previous, claim=demand.claim)
        key = (demand.deployment, demand.replica)  # a tuple: no string formatted per commit
        assert key not in self.placed, key
        self.placed[key] = a
        return a

    def _exhausted(self, host: str) -> bool:
        """No GPU replica of this plan fits the CPUs or memory the host has left: the index forgets it
        (capacity only shrinks during a run), so lookups never walk past it again."""
        cpu, ram = self.state.cpu_free[host], self.state.ram_free[host]
        need_cpu, need_ram = self.least
        return (cpu is not None and cpu < need_cpu) or (ram is not None and ram < need_ram)


def _positions_free(gs: GroupState, positions: list[int], demand: Demand, over: dict[tuple[int, int], int]) -> bool:
    """``demand`` fits on ``positions`` of ``gs`` as they are, less what holds there asked beyond them (``over``:
    ``FleetState.over_held``)."""
    if demand.vram_mib is None:
        return all(gs.claims[p] == 0 for p in positions)
    gid = gs.gid
    return all(not gs.exclusive[p] and gs.free[p] - over.get((gid, p), 0) >= demand.vram_mib for p in positions)
