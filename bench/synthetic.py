"""Seeded synthetic fleets and demands for the benchmarks (plain data, no files)."""
from __future__ import annotations

import random

from inventory.fleet import Device, DeviceGroup, Fleet, Host, SshTarget
from stack.placement import Demand

SSH = SshTarget("gpufleet", 22, None, None)
VENDORS = [("nvidia", "cuda", 0.60), ("amd", "rocm", 0.25), ("ascend", "cann", 0.15)]
SIZES_GIB = [24, 48, 80, 141]


def synthetic_fleet(n_hosts: int, seed: int, devices: int = 8) -> Fleet:
    rnd = random.Random(seed)
    hosts = []
    for i in range(n_hosts):
        vendor = rnd.choices([v for v, _, _ in VENDORS], [w for _, _, w in VENDORS])[0]
        gib = rnd.choice(SIZES_GIB)
        group = DeviceGroup(vendor, f"{vendor}-{gib}g", gib * 1024, tuple(Device(j) for j in range(devices)))
        hosts.append(Host(f"host-{i:05d}", f"127.1.{i // 250}.{i % 250 + 1}", SSH,
                          (("zone", "abc"[i % 3]),), "active", 40000, 40063, "/models", (group,)))
    return Fleet(tuple(hosts), "synthetic")


def random_demand(rnd: random.Random, deployment: str, replica: int) -> Demand:
    """1-8 GPUs, mostly small; about half of the 1-GPU claims share a device."""
    fw = rnd.choices([f for _, f, _ in VENDORS], [w for _, _, w in VENDORS])[0]
    gpus = rnd.choices([1, 2, 4, 8], [0.70, 0.15, 0.10, 0.05])[0]
    if gpus == 1 and rnd.random() < 0.5:
        vram = rnd.choice([4, 8, 12, 16, 20]) * 1024
        return Demand(deployment, replica, fw, 1, vram, vram)
    return Demand(deployment, replica, fw, gpus, None, rnd.choice([0, 0, 0, 40 * 1024]))


def synthetic_demands(n_replicas: int, seed: int) -> list[Demand]:
    """Deployments of 1-4 replicas each, same shape within a deployment."""
    rnd = random.Random(seed)
    out: list[Demand] = []
    i = 0
    while len(out) < n_replicas:
        shape = random_demand(rnd, f"dep-{i:05d}", 0)
        for r in range(min(rnd.randint(1, 4), n_replicas - len(out))):
            out.append(Demand(shape.deployment, r, shape.framework, shape.gpus, shape.vram_mib, shape.min_vram_mib))
        i += 1
    return out
