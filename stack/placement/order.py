"""The fresh pass's order: most constrained first, then biggest first, asked once per run of replicas alike.

Where replicas ask CPUs or memory, "biggest" weighs what a replica asks in GPUs' worth (``by_size``), and the
preferences weigh hosts by the plan's CPUs and memory per GPU (``plan_ratios``). Read by the engine's ``_place``.
"""
from __future__ import annotations

import zlib
from dataclasses import fields
from operator import attrgetter
from typing import Callable

from inventory.fleet import Fleet

from .filters import LABELS
from .index import CandidateIndex
from .model import Demand
from .preferences import gpu_share


#: every field of a demand but its replica number
_BUT_REPLICA = attrgetter(*(f.name for f in fields(Demand) if f.name != "replica" and f.init))


def sorted_by_runs(demands: list[Demand], key: Callable[[Demand], tuple]) -> list[Demand]:
    """``demands``, given in (deployment, replica) order, sorted by ``key`` and then the replica number: the
    key is asked once per run of consecutive demands alike but for their number (the replicas of a
    deployment), and the runs are sorted stably. The same order as sorting every demand by ``key`` plus its
    number, as the fresh pass did: runs with equal keys are of one deployment (the keys hold its name) and
    follow each other in replica order. On the 2,000-host bench, 9,145 replicas make 3,604 runs: the sort
    had been half of what a plan does before its first search."""
    runs: list[tuple[tuple, list[Demand]]] = []
    last = None
    for d in demands:
        alike = _BUT_REPLICA(d)
        if alike != last:
            runs.append((key(d), [d]))
            last = alike
        else:
            runs[-1][1].append(d)
    runs.sort(key=lambda run: run[0])
    return [d for _, run in runs for d in run]


def biggest_first(d: Demand) -> tuple:
    return (-d.gpus, 0 if d.whole else 1, -(d.vram_mib or 0), -d.min_vram_mib, -d.cpus, -d.ram_mib,
            d.deployment, d.replica)


def capacity_per_gpu(fleet: Fleet) -> tuple[float | None, float | None]:
    """Allocatable CPUs and MiB of memory per GPU over the active GPU hosts that declare them (None: none do)."""
    out = []
    for have in (lambda h: h.allocatable_cpus, lambda h: h.allocatable_ram_mib):
        total = gpus = 0
        for h in fleet.hosts:
            n = sum(len(g.devices) for g in h.groups)
            if h.active and n and have(h) is not None:
                total += have(h)
                gpus += n
        out.append(total / gpus if gpus and total > 0 else None)
    return out[0], out[1]


def by_size(per_gpu: tuple[float | None, float | None], bins: dict[str, list[Demand]] | None = None):
    """The fresh pass's order when replicas ask CPUs or memory: multi-GPU replicas first (most GPUs first),
    then every one-GPU replica, whole or shared, by the sum of what it asks in GPUs' worth (its GPU share,
    its CPUs and memory over the fleet's per GPU), then CPU-only ones. GPU-first (all whole replicas
    before any shared one) filled the 8-GPU hosts with whole replicas and left the shared ones, which
    ask more CPUs per GPU, GPUs without CPUs beside them. Vector bin packing's first-fit-decreasing by
    the sum of normalised sizes (Panigrahy et al., "Heuristics for Vector Bin Packing", 2011); on
    Alibaba's openb trace 93.9 % -> 95.6 % of GPUs allocated in one plan (bench/placement.py --openb),
    the synthetic CPU-and-memory workload within 0.1 point.

    With ``bins`` (stack.placement.packing), a shared claim goes with the claims a dry run put on its device,
    ranked by what they ask together, largest first among them: best fit then pairs them as the dry run did."""
    cpus, ram = per_gpu

    def asks(d: Demand) -> float:
        return gpu_share(d) + (d.cpus / cpus if cpus else 0) + (d.ram_mib / ram if ram else 0)

    together: dict[int, float] = {}

    def key(d: Demand) -> tuple:
        b = bins.get(d.key) if bins else None
        if b is None:
            return (-d.gpus if d.gpus > 1 else 0, 0 if d.gpus else 1, -asks(d), "") + biggest_first(d)
        got = together.get(id(b))
        if got is None:
            got = together[id(b)] = sum(asks(x) for x in b)
        return (0, 0, -got, b[0].key) + biggest_first(d)

    return key


#: how much a perturbed order (``perturbed``) may weigh what a replica asks more or less: a quarter either way
PERTURBATION = 0.5


def perturbed(key: Callable[[Demand], tuple], salt: int) -> Callable[[Demand], tuple]:
    """``key`` (``by_size``'s without bins, or ``biggest_first``) with what a replica asks (its third field)
    weighed by a factor from 0.75 to 1.25 drawn from ``salt`` and the deployment's name (CRC-32: the same in
    every process, whatever the order of the files). Replicas of one deployment keep their order; the most
    constrained still go first (the caller sorts by that before), and multi-GPU replicas before the others."""
    def weighed(d: Demand) -> tuple:
        k = key(d)
        draw = zlib.crc32(f"{salt}/{d.deployment}".encode()) / 2 ** 32
        return (k[0], k[1], k[2] * (1 + PERTURBATION * (draw - 0.5))) + k[3:]
    return weighed


class DeviceSize:
    """The device size a demand most likely lands on: the one with the most devices among the groups it may
    use (ties: the smaller); None when no group may hold it."""

    def __init__(self, index: CandidateIndex):
        self.index = index
        self.cache: dict[tuple, int | None] = {}

    def __call__(self, d: Demand) -> int | None:
        key = d.static
        if key not in self.cache:
            count: dict[int, int] = {}
            for lists in self.index.eligible(d):
                group = lists.rep.group
                count[group.vram_mib] = count.get(group.vram_mib, 0) + len(group.devices) * len(lists.members)
            self.cache[key] = min(count, key=lambda s: (-count[s], s)) if count else None
        return self.cache[key]


class Constrainedness:
    """How many device groups (hosts, for CPU-only replicas) a demand could ever use: replicas with
    few places go first, so replicas that can run anywhere never take the few devices a
    constrained deployment needs (most-constrained-first)."""

    def __init__(self, fleet: Fleet, index: CandidateIndex):
        self.fleet, self.index = fleet, index
        self.cache: dict[tuple, int] = {}
        #: active hosts by their labels: [how many, one of them] (the label filter reads nothing else)
        self._by_labels: dict[tuple, list] | None = None

    def __call__(self, d: Demand) -> int:
        if d.manual is not None:
            return len({name for name, _ in d.manual})
        key = d.static if d.gpus else ("no GPU", d.labels)  # needing no GPU: only its labels filter hosts
        got = self.cache.get(key)
        if got is None:
            if d.gpus:
                got = sum(len(lists.members) for lists in self.index.eligible(d))
            else:
                if self._by_labels is None:
                    self._by_labels = {}
                    for h in self.fleet.hosts:
                        if h.active:
                            self._by_labels.setdefault(h.labels, [0, h])[0] += 1
                got = sum(n for n, h in self._by_labels.values() if LABELS(h, None, d))
            self.cache[key] = got
        return got


#: GPU replicas to place below which a run's figures per GPU are taken over every replica of the plan
RATIO_SAMPLE = 32


def plan_ratios(fresh: list[Demand], demands: list[Demand]) -> tuple[float, float] | None:
    """The CPUs and memory per GPU a run's preferences weigh hosts by (``_ratios``): over the replicas to place,
    not the kept ones too, unless they are fewer than RATIO_SAMPLE GPU replicas, then over every replica of the plan.

    Over every replica always, replicas arriving in 20 batches with the lock (bench/placement.py) gained 0.14-0.24
    points of GPUs on 40 synthetic fleets and lost 0.2-0.6 on Alibaba's openb trace (default 95.6 -> 95.4 %,
    cpu250 93.4 -> 92.8 %). Over the replicas to place always, a deployment arriving alone (a plan per
    deployment, with the lock: `bench/placement.py --online`) set the figures by itself: its own CPUs per GPU were
    the average, no host was ever short for it, and nothing kept CPU-rich hosts for heavier ones: on the
    CPU-and-memory workload's ten fleets 93.5 % and 95.1 % of the GPUs were allocated in the end at load 1.0 and
    1.3 (lowest 88.6 %), where 20 batches allocate 97.3 % and 97.7 %; with the plan's figures 97.5 % and 97.7 %
    (lowest 95.6 %), batches unchanged. Alibaba's trace in 400 arrivals of about 20 tasks: 95.34 -> 95.45 %."""
    if sum(1 for d in fresh if d.gpus) >= RATIO_SAMPLE:
        return _ratios(fresh)
    return _ratios(demands)


def _ratios(demands: list[Demand]) -> tuple[float, float] | None:
    """CPUs and MiB of memory per GPU over the GPU replicas to place (a shared claim counts its share of an
    80 GiB device); None when none asks for CPUs or memory."""
    gpus = cpus = ram = 0.0
    for d in demands:
        if d.gpus:
            gpus += gpu_share(d)
            cpus += d.cpus
            ram += d.ram_mib
    if not gpus or not (cpus or ram):
        return None
    return cpus / gpus, ram / gpus
