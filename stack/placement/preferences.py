"""Preferences: soft wishes on where a replica goes, as small named parts.

A replica's host is searched in tiers. The base ranker (``binpack`` or ``spread``, kept as sorted
lists in ``index.CandidateIndex``) orders candidates inside a tier; each preference that applies
removes some hosts from the first tiers and is given up, last one first, when nothing fits with
it; a firm one only in the fresh pass's second round. Hard rules (CPU and memory capacity,
``spread: hosts``) are never given up. Adding a preference (topology, say) is adding a class
here and to ``PREFERENCES``, in order of weight.

Tiers for preferences (A, B): A+B, A, B, none — the order the engine searches in. Today: soft
anti-affinity, keeping CPU-rich hosts for CPU-heavy replicas, not stranding GPUs next to
exhausted CPUs, and keeping memory-heavy replicas off hosts built lean in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Callable

from .model import Demand
from .state import FleetState


@dataclass(frozen=True)
class Context:
    """What preferences may look at: the run's state and figures the engine computed once."""

    state: FleetState
    #: CPUs and MiB of memory per GPU the plan's GPU replicas ask on average (None: nobody asks)
    ratios: tuple[float, float] | None


class Preference:
    """What a preference reads of a replica is its GPUs, VRAM, CPUs, memory and spread, and of the run its figures
    (``Context.ratios``, what hosts were built with): ``Tiers`` remembers its answers by those (``Tiers.of``'s key).
    One whose ``applies`` reads the plan as it stands is ``live``, asked again for every search; one that reads
    more of a replica adds that to the key."""

    name = ""
    #: given up only in the fresh pass's second round (see ``tiers``): a replica that can only be placed against
    #: it waits until every replica that can be placed with it has been
    firm = False
    #: ``applies`` reads the plan as it stands (not only the replica and the run's figures)
    live = False

    def applies(self, ctx: Context, demand: Demand) -> bool:
        raise NotImplementedError

    def avoided(self, ctx: Context, demand: Demand) -> frozenset[str] | None:
        """A fixed set of hosts to skip while honoured, or None when ``skips`` decides per host."""
        return None

    def skips(self, ctx: Context, demand: Demand) -> Callable[[str], bool] | None:
        return None

    def skips_key(self, demand: Demand) -> tuple:
        """What ``skips``'s answer depends on besides the host's own state and the run's figures: equal
        keys give equal answers on an unchanged host (the engine remembers them)."""
        return (self.name,)


class SoftAntiAffinity(Preference):
    """Replicas of one deployment avoid sharing a host (``spread: hosts`` makes it a hard rule)."""

    name = "anti_affinity"
    live = True  # (while the deployment runs somewhere)

    def applies(self, ctx, demand):
        return not demand.spread_hosts and bool(ctx.state.hosts_running(demand.deployment))

    def avoided(self, ctx, demand):
        return frozenset(ctx.state.hosts_running(demand.deployment))


class KeepCpusPerGpu(Preference):
    """Skip hosts this replica would leave with too few CPUs or too little memory per free GPU
    (stranding its GPUs next to exhausted CPUs): multi-resource alignment (Tetris, SIGCOMM 2014).

    Firm: a CPU-heavy replica that finds no host it would not strand waits for the fresh pass's second
    round, so the CPU-light replicas after it in the order fill the lean hosts' GPUs first. Given up at
    once (as it was until 2026-12), the heavy replicas took the last CPUs of lean hosts and the light ones
    found those GPUs stranded: on bench/placement.py's CPU-and-memory workload, 60 fleets, GPUs allocated
    in one plan went from 97.1 % to 98.8 % on average at load 1.0 (lowest fleet 91.2 % -> 95.7 %), and
    from 97.6 % to 99.3 % at load 1.3; with state.strands' slack (see there)."""

    name = "cpu_per_gpu"
    firm = True

    def applies(self, ctx, demand):
        return ctx.ratios is not None and bool(demand.cpus or demand.ram_mib)

    def skips(self, ctx, demand):
        cpus, ram = ctx.ratios
        return ctx.state.strands(demand, cpus, ram)

    def skips_key(self, demand):
        return (self.name, demand.gpus, demand.whole, demand.vram_mib, demand.cpus, demand.ram_mib)


class SaveCpuRichHosts(Preference):
    """A replica asking fewer CPUs per GPU than the plan's average skips hosts that have more free
    CPUs per free GPU than that average: those are kept for the CPU-heavy replicas that need them
    (the other half of alignment: light work on lean hosts). On bench/placement.py's CPU-and-memory
    workload it raised the GPUs allocated from 94.3 % to 95.8 % on average (factors 0.8 to 3 tried;
    1, the average itself, did best).

    Its twin for memory (2026-12-03: replicas asking less memory per GPU than the average skip hosts with more
    free memory per free GPU, factors 0.8 to 1.25) is not a preference: it helped the synthetic workload in one
    plan (20 fleets, load 1.0 and 1.3: 98.91 -> 99.01 % and 99.55 -> 99.61 %, lowest fleet 97.1 -> 97.9 %) and
    not in batches, and cost Alibaba's openb trace up to 0.26 points (cpu250 96.25 -> 95.99 %, gpuspec25
    96.03 -> 95.80 %)."""

    name = "save_cpu_rich_hosts"

    def applies(self, ctx, demand):
        if ctx.ratios is None or not demand.gpus or not demand.cpus:
            return False
        return demand.cpus / gpu_share(demand) < ctx.ratios[0]

    def skips(self, ctx, demand):
        state, average = ctx.state, ctx.ratios[0]

        def rich(host: str) -> bool:
            free_gpus, cpus = state.gpus_free[host], state.cpu_free[host]
            return cpus is not None and free_gpus > 0.5 and cpus / free_gpus > average

        return rich


class SpareLeanHostsHeavyMemory(Preference):
    """A replica asking more than FACTOR times the memory a host was built with per GPU, for its share of that
    host's GPUs, skips the host: there it would take the memory of GPUs it does not take, and strand them (a
    1-GPU replica asking 192 GiB on a host of 8 GPUs and 384 GiB). Decided by what hosts were built with, not by
    the plan's averages, so it holds from a fleet's first replica on: replicas arriving in batches found lean
    hosts' memory taken by heavy replicas that came early.

    On bench/placement.py's CPU-and-memory workload, 20 batches with the lock, GPUs allocated at load 1.0 and 1.3
    over its ten fleets: 96.94 -> 97.34 % (lowest fleet 94.59 -> 95.43 %) and 97.12 -> 97.74 % (95.10 -> 96.38 %);
    over twenty other fleets 97.10 -> 97.41 % and 97.20 -> 97.57 % (lowest 93.98 -> 94.34 % and 94.26 -> 94.32 %).
    One plan unchanged (98.75 % and 99.49 %), Alibaba's openb trace too (96.27 % in one plan, 95.60 -> 95.65 %
    in batches); the process bench 206 -> 147 replicas left over (98.45 -> 98.43 % of GPUs). Factor 2 did as well
    in batches and better on openb (96.34 %) but left 495 over on the process bench; 1 lost 3 points in batches;
    4 gained less. A CPU twin changed nothing but the time taken (2026-12-03). Given up first of all."""

    name = "spare_lean_hosts_heavy_memory"
    FACTOR = 3.0

    def applies(self, ctx, demand):
        if ctx.ratios is None or not demand.gpus or not demand.ram_mib:
            return False
        lean = ctx.state.leanest_memory  # is some host lean for it? (most replicas: none is)
        if lean is None:
            return False
        per_gpu, per_device_mib = lean
        if demand.whole:
            return demand.ram_mib > self.FACTOR * per_gpu * demand.gpus
        return demand.ram_mib > self.FACTOR * per_device_mib * demand.gpus * demand.vram_mib

    def skips(self, ctx, demand):
        built, device_mib, factor = ctx.state.built_per_gpu, ctx.state.device_mib, self.FACTOR
        ram, whole, gpus, shared = demand.ram_mib, demand.whole, demand.gpus, demand.gpus * (demand.vram_mib or 0)

        def lean(host: str) -> bool:
            per_gpu = built.get(host)
            if per_gpu is None or per_gpu[1] is None or not device_mib[host]:
                return False  # no GPUs, or no memory declared
            take = gpus if whole else shared / device_mib[host]
            return ram > factor * per_gpu[1] * take

        return lean

    def skips_key(self, demand):
        return (self.name, demand.gpus, demand.whole, demand.vram_mib, demand.ram_mib)


def gpu_share(demand: Demand) -> float:
    """Whole GPUs a demand takes (a shared claim: its share of an 80 GiB device)."""
    return demand.gpus if demand.whole else demand.gpus * min(1.0, demand.vram_mib / (80 * 1024))


#: by weight: the first is given up last
PREFERENCES: tuple[Preference, ...] = (SoftAntiAffinity(), SaveCpuRichHosts(), KeepCpusPerGpu(),
                                        SpareLeanHostsHeavyMemory())


def tiers(ctx: Context, demand: Demand, firm: bool = False) -> list[tuple[Preference, ...]]:
    """The preferences honoured in each search tier, most honoured first. ``firm``: the fresh pass's first
    round, where the tiers that give up a firm preference are left out."""
    wanted = tuple([p for p in PREFERENCES if p.applies(ctx, demand)])
    out = _TIERS.get((wanted, firm))
    if out is None:
        out = [tuple(p for p, k in zip(wanted, keep) if k) for keep in product((True, False), repeat=len(wanted))]
        if firm:
            out = [t for t in out if all(p in t for p in wanted if p.firm)]
        _TIERS[wanted, firm] = out
    return out


#: the tiers of each set of applying preferences, in either round (at most 2^(len(PREFERENCES)+1) lists)
_TIERS: dict[tuple, list[tuple[Preference, ...]]] = {}


#: the preferences whose ``applies`` is asked for every search
_LIVE = tuple(p for p in PREFERENCES if p.live)


class Tiers:
    """A run's tiers (``tiers``), each as (the preferences honoured, those of them that avoid a set of hosts,
    their per-host checks, the checks' keys), remembered by what they depend on: what the replica asks (see
    ``Preference``), the round, and whether each ``live`` preference applies. The checks are made once per
    ``skips_key`` and read each host's state as it is when asked. Worked out for every search (each preference
    asked whether it applies, for its checks' key, and for avoided hosts it has none of), they cost 1.9 % of the
    2,000-host process bench's placement instructions (bench/instructions.py)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._checks: dict[tuple, Callable[[str], bool] | None] = {}
        self._known: dict[tuple, list[tuple]] = {}

    def of(self, demand: Demand, firm: bool) -> list[tuple]:
        ctx = self.ctx
        # what preferences read of a replica (``Preference``), the round, the live ones' answers
        key = (demand.gpus, demand.vram_mib, demand.cpus, demand.ram_mib, demand.spread_hosts, firm,
               *[p.applies(ctx, demand) for p in _LIVE])
        got = self._known.get(key)
        if got is None:
            got = self._known[key] = [self._tier(honoured, demand) for honoured in tiers(ctx, demand, firm)]
        return got

    def _tier(self, honoured: tuple[Preference, ...], demand: Demand) -> tuple:
        made, checks, keys = self._checks, [], []
        for pref in honoured:
            k = pref.skips_key(demand)
            check = made.get(k, made)
            if check is made:  # equal keys, equal checks
                check = made[k] = pref.skips(self.ctx, demand)
            if check is not None:
                checks.append(check)
                keys.append(k)
        avoiding = tuple(p for p in honoured if type(p).avoided is not Preference.avoided)
        return honoured, avoiding, tuple(checks), tuple(keys)
