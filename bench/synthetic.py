"""Seeded synthetic fleets and demands for the benchmarks (plain data, no files)."""
from __future__ import annotations

import random
from dataclasses import replace

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


# ---------------------------------------------------------------- CPUs and memory as resources
#: (devices, VRAM GiB, CPUs, RAM GiB, weight): servers as sold, some GPU-dense and CPU-poor
HOST_KINDS = [(8, 80, 112, 1024, 0.30), (8, 80, 64, 512, 0.15), (4, 48, 32, 256, 0.20), (8, 24, 48, 384, 0.10),
              (4, 80, 96, 768, 0.15), (8, 141, 192, 2048, 0.10)]


def resource_fleet(n_hosts: int, seed: int, cpu_only: float = 0.08) -> Fleet:
    """NVIDIA hosts of several kinds with CPUs and memory (2 CPUs and 16 GiB reserved), plus CPU-only hosts."""
    rnd = random.Random(seed)
    hosts = []
    for i in range(n_hosts):
        name, address = f"host-{i:05d}", f"127.2.{i // 250}.{i % 250 + 1}"
        if rnd.random() < cpu_only:
            hosts.append(Host(name, address, SSH, (("zone", "abc"[i % 3]),), "active", 40000, 40063, "/models",
                              (), cpus=64, ram_mib=256 * 1024, reserved_cpus=2, reserved_ram_mib=16 * 1024))
            continue
        n, gib, cpus, ram, _ = rnd.choices(HOST_KINDS, [k[-1] for k in HOST_KINDS])[0]
        group = DeviceGroup("nvidia", f"gpu-{gib}g", gib * 1024, tuple(Device(j) for j in range(n)))
        hosts.append(Host(name, address, SSH, (("zone", "abc"[i % 3]),), "active", 40000, 40063, "/models",
                          (group,), cpus=cpus, ram_mib=ram * 1024, reserved_cpus=2, reserved_ram_mib=16 * 1024))
    return Fleet(tuple(hosts), "synthetic-resources")


def resource_demands(fleet: Fleet, seed: int, load: float = 1.0) -> list[Demand]:
    """Replicas asking ``load`` times the fleet's GPUs (in whole-GPU equivalents), in arrival order:
    whole and fractional claims with the CPUs and memory engines ask for, and CPU-only replicas
    (embedders, routers) worth about an eighth of the replicas."""
    rnd = random.Random(seed)
    gpus = sum(len(g.devices) for h in fleet.hosts for g in h.groups)
    out: list[Demand] = []
    asked, i = 0.0, 0
    while asked < load * gpus:
        dep = f"dep-{i:05d}"
        kind = rnd.random()
        if kind < 0.12:  # CPU-only
            shape = Demand(dep, 0, "cpu", 0, cpus=rnd.choice([2, 4, 8, 16]), ram_mib=rnd.choice([8, 16, 32, 64]) * 1024)
            eq = 0.0
        elif kind < 0.50:  # a shared slice of one GPU
            vram = rnd.choice([8, 10, 16, 20, 24, 40]) * 1024
            shape = Demand(dep, 0, "cuda", 1, vram, vram, cpus=rnd.choice([2, 4, 6]),
                           ram_mib=rnd.choice([16, 32, 48]) * 1024)
            eq = vram / (80 * 1024)
        else:  # whole GPUs
            n = rnd.choices([1, 2, 4, 8], [0.5, 0.25, 0.17, 0.08])[0]
            shape = Demand(dep, 0, "cuda", n, None, rnd.choice([0, 0, 40 * 1024]),
                           cpus=n * rnd.choice([4, 8, 12, 16]), ram_mib=n * rnd.choice([32, 64, 96]) * 1024)
            eq = float(n)
        for r in range(rnd.randint(1, 4)):
            out.append(Demand(dep, r, shape.framework, shape.gpus, shape.vram_mib, shape.min_vram_mib,
                              cpus=shape.cpus, ram_mib=shape.ram_mib))
            asked += eq
        i += 1
    return out


#: the process bench's vendors: (vendor, its framework, share of GPU hosts and of GPU deployments)
MIXED_VENDORS = (("nvidia", "cuda", 0.7), ("amd", "rocm", 0.2), ("ascend", "cann", 0.1))


def mixed_vendors(fleet: Fleet, demands: list[Demand], seed: int) -> tuple[Fleet, list[Demand]]:
    """``resource_fleet`` and ``resource_demands`` over three vendors, as a mixed fleet is: each GPU host's cards
    and each GPU deployment's framework drawn from MIXED_VENDORS (Ascend NPUs taken whole: shared claims stay
    on NVIDIA and AMD). The same hosts, sizes and asks otherwise."""
    weights = [w for _, _, w in MIXED_VENDORS]
    hosts = []
    for h in fleet.hosts:
        if not h.groups:
            hosts.append(h)
            continue
        vendor = random.Random(f"{seed}:{h.name}").choices([v for v, _, _ in MIXED_VENDORS], weights)[0]
        g = h.groups[0]
        group = DeviceGroup(vendor, f"{vendor}-{g.vram_mib // 1024}g", g.vram_mib, g.devices)
        hosts.append(replace(h, groups=(group,)))
    frameworks: dict[str, str] = {}
    out = []
    for d in demands:
        if d.gpus and d.deployment not in frameworks:
            r = random.Random(f"{seed}:{d.deployment}")
            choices = MIXED_VENDORS if d.whole else MIXED_VENDORS[:2]
            frameworks[d.deployment] = r.choices([f for _, f, _ in choices], [w for _, _, w in choices])[0]
        out.append(replace(d, framework=frameworks[d.deployment]) if d.gpus else d)
    return Fleet(tuple(hosts), fleet.file), out


def selector_demands(n_replicas: int, seed: int) -> list[Demand]:
    """synthetic_demands where a fifth of the deployments name a device size (gpu_model glob) and a
    tenth a zone label: flexible replicas can take what constrained ones need."""
    rnd = random.Random(seed)
    out = []
    for d in synthetic_demands(n_replicas, seed):
        r = random.Random(f"{seed}:{d.deployment}")  # not hash(): str hashes differ per process
        model = f"*-{r.choice(SIZES_GIB)}g" if r.random() < 0.2 else None
        labels = (("zone", r.choice("abc")),) if r.random() < 0.1 else ()
        out.append(Demand(d.deployment, d.replica, d.framework, d.gpus, d.vram_mib, d.min_vram_mib, labels,
                          None, model))
    rnd.shuffle(out)
    return out
