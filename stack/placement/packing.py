"""Shared claims grouped by the device they would share: a best-fit-decreasing dry run per device size.

The fresh pass orders one-GPU replicas by all they ask (GPU share, CPUs, memory: order.by_size). That order
is good for CPUs and memory, but it hands shared claims to best fit out of size order, and best fit out of size
order pairs badly: on Alibaba's openb trace, three 32 % shares filled one device while 124 65 % shares sat alone
beside 35 % gaps, and 75 59 % shares were left with no device at all. The dry run below packs a plan's shared
claims the way bin packing's best-fit-decreasing does, per device size and per set of static selectors; the
engine's second order (``by_device``) then places the claims of one dry-run device together, ranked by all
they ask together, as if they were one replica asking one whole device.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from typing import Callable, Iterable

from .model import Demand


def device_bins(demands: Iterable[Demand], device_mib: Callable[[Demand], int | None]) -> dict[str, list[Demand]]:
    """For each one-GPU shared claim (by key), the claims a best-fit-decreasing dry run puts on one device with
    it, itself included, largest first (the same list object for all of them). ``device_mib``: the device size
    a claim would most likely land on (None: no device holds it). Pinned claims (manual GPU selection) are
    left out: their devices are chosen for them."""
    by_size: dict[tuple, list[Demand]] = {}
    for d in demands:
        if d.gpus == 1 and not d.whole and d.manual is None:
            size = device_mib(d)
            if size is not None and d.vram_mib <= size:
                by_size.setdefault((size, d.framework, d.labels, d.vendor, d.gpu_model), []).append(d)
    out: dict[str, list[Demand]] = {}
    for (size, *_), claims in by_size.items():
        claims.sort(key=lambda d: (-d.vram_mib, d.deployment, d.replica))
        free: list[tuple[int, int]] = []  # (free MiB, bin) of bins with room, sorted: best fit by bisection
        members: list[list[Demand]] = []
        for d in claims:
            k = bisect_left(free, (d.vram_mib, -1))
            if k < len(free):
                room, b = free.pop(k)
            else:
                room, b = size, len(members)
                members.append([])
            members[b].append(d)
            room -= d.vram_mib
            if room > 0:
                insort(free, (room, b))
        for m in members:
            for d in m:
                out[d.key] = m
    return out
