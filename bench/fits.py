"""Nothing left over that could be placed: small random instances with CPUs, memory, selectors and spread: hosts,
against a MILP of the most replicas any placement places (HiGHS through scipy).

``bench/placement.py --exact`` compares with the optimum on one device size and no CPUs or memory; here hosts mix
vendors, card models, device sizes, CPUs, memory and port ranges, and replicas ask shared or whole GPUs or none,
with labels, GPU models and spread: hosts. Where the MILP places every replica, gpufleet must too: an instance
where it leaves one over names a way the search and its repairs miss (this module found six, now fixed in
stack/placement/, and the few it still reports).
"""
from __future__ import annotations

import random

from inventory.fleet import Device, DeviceGroup, Fleet, Host
from stack.placement import Demand, place
from stack.placement.filters import STATIC

from bench.quiet import quiet

_CARDS = (("nvidia", "H100"), ("nvidia", "L40S"), ("amd", "MI300X"))


def small_instance(seed: int, large: bool = False) -> tuple[Fleet, list[Demand]]:
    """2-5 hosts, 2-7 deployments of 1-3 replicas asking up to 4 GPUs; ``large``: 3-8 hosts (some keeping CPUs
    and memory for the system, some with 4 ports), 3-8 deployments asking up to 8 GPUs, GPU-model lists. About
    a tenth of the instances ask no more than the fleet holds in every dimension a placement must respect."""
    r = random.Random(seed)
    hosts = []
    for i in range(r.randint(3, 8) if large else r.randint(2, 5)):
        vendor, model = r.choice(_CARDS)
        groups = (DeviceGroup(vendor, model, r.choice([24, 48, 80]) * 1024,
                              tuple(Device(j) for j in range(r.choice([1, 2, 4, 8])))),) if r.random() < 0.85 else ()
        zone = r.choice("ab")
        if large:
            ports = r.choice([3, 5, 63])
            cpus, ram = r.choice([16, 32, 64, None]), r.choice([64, 256, None])
            reserved = (r.choice([0, 2]), r.choice([0, 8]) * 1024)
        else:
            cpus, ram = r.choice([16, 32, 64, None]), r.choice([64, 256, None])
            ports, reserved = r.choice([5, 63]), (0, 0)
        hosts.append(Host(f"h{i}", f"127.4.0.{i + 1}", None, (("zone", zone),), "active", 40000, 40000 + ports, "/m",
                          groups, cpus=cpus, ram_mib=None if ram is None else ram * 1024,
                          reserved_cpus=reserved[0], reserved_ram_mib=reserved[1]))
    demands = []
    for k in range(r.randint(3, 8) if large else r.randint(2, 7)):
        framework = r.choice(["cuda", "cuda", "rocm"])
        gpus = r.choice([0, 1, 1, 1, 2, 4, 8] if large else [0, 1, 1, 1, 2, 4])
        vram = None if r.random() < 0.5 else r.choice([8, 12, 16, 20, 24, 40] if large else [8, 16, 24, 40]) * 1024
        spread = r.random() < (0.25 if large else 0.2)
        labels = (("zone", r.choice("ab")),) if r.random() < 0.2 else ()
        models = [None, None, None, "*H100*", "*L40S*"] + ([("*H100*", "*MI300X*")] if large else [])
        model = r.choice(models) if gpus else None
        cpus = r.choice([0, 1, 2, 4, 8, 16] if large else [0, 2, 4, 8, 16])
        ram = r.choice([0, 8, 16, 32, 64] if large else [0, 8, 32, 64]) * 1024
        for replica in range(r.choice([1, 1, 2, 3])):
            demands.append(Demand(f"d{k}", replica, framework if gpus else "cpu", gpus, vram if gpus else None,
                                  (vram or 0) if gpus else 0, labels, None, model, None, spread_hosts=spread,
                                  cpus=cpus, ram_mib=ram))
    return Fleet(tuple(hosts), "fits"), demands


def most_placeable(fleet: Fleet, demands: list[Demand], seconds: float = 20,
                   vram_at_least: int | None = None) -> int | None:
    """The most of ``demands`` any placement places, by MILP: a replica on one device group (or host, needing no
    GPU) its static filters accept, its GPUs on that group's devices; a device taken whole by one replica or
    shared within its VRAM; each host's CPUs, memory (less what it keeps) and ports; spread: hosts one replica
    of a deployment per host. Manual GPU selection is left out (these instances have none). ``vram_at_least``:
    only placements that take at least that many MiB of VRAM (a device taken whole counted whole), as gpufleet
    takes VRAM first when not all fit. None: no answer in time, or no placement takes ``vram_at_least``."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    slots = [(h, g) for h in fleet.hosts for g in (None, *h.groups)]
    cols: dict[tuple, int] = {}
    where: dict[int, list[int]] = {}  # replica -> the slots it may use
    for r, d in enumerate(demands):
        for si, (h, g) in enumerate(slots):
            if (g is None) != (d.gpus == 0):
                continue
            if all(f(h, g, d) for f in STATIC if g is not None or not f.gpu_only):
                where.setdefault(r, []).append(si)
                cols[("y", r, si)] = len(cols)
                for dev in (g.devices if g is not None else ()):
                    cols[("x", r, si, dev.index)] = len(cols)
    for si, (h, g) in enumerate(slots):
        for dev in (g.devices if g is not None else ()):
            cols[("z", si, dev.index)] = len(cols)  # the device is taken whole
    if not cols:
        return 0
    rows: list[tuple[dict, float, float]] = []
    for r, d in enumerate(demands):
        if r in where:
            rows.append(({cols[("y", r, si)]: 1 for si in where[r]}, 0, 1))
        for si in where.get(r, ()):
            g = slots[si][1]
            if g is not None:  # its GPUs on the group's devices, one each
                row = {cols[("x", r, si, dev.index)]: 1 for dev in g.devices}
                row[cols[("y", r, si)]] = -d.gpus
                rows.append((row, 0, 0))
    for si, (h, g) in enumerate(slots):
        for dev in (g.devices if g is not None else ()):
            on = [(r, d) for r, d in enumerate(demands) if ("x", r, si, dev.index) in cols]
            whole = {cols[("x", r, si, dev.index)]: 1 for r, d in on if d.whole}
            whole[cols[("z", si, dev.index)]] = -1
            rows.append((whole, 0, 0))
            shared = {cols[("x", r, si, dev.index)]: d.vram_mib for r, d in on if not d.whole}
            shared[cols[("z", si, dev.index)]] = g.vram_mib
            rows.append((shared, 0, g.vram_mib))
    for h in fleet.hosts:
        ys = [(r, cols[("y", r, si)]) for r in where for si in where[r] if slots[si][0] is h]
        if h.cpus is not None:
            rows.append(({c: demands[r].cpus for r, c in ys}, -np.inf, h.cpus - h.reserved_cpus))
        if h.ram_mib is not None:
            rows.append(({c: demands[r].ram_mib for r, c in ys}, -np.inf, h.ram_mib - h.reserved_ram_mib))
        rows.append(({c: 1 for _, c in ys}, 0, h.port_end - h.port_start + 1))
        spread: dict[str, dict] = {}
        for r, c in ys:
            if demands[r].spread_hosts:
                spread.setdefault(demands[r].deployment, {})[c] = 1
        rows.extend((row, 0, 1) for row in spread.values())
    if vram_at_least is not None:
        taken: dict[int, float] = {}
        for key, j in cols.items():
            if key[0] == "x":
                d, g = demands[key[1]], slots[key[2]][1]
                taken[j] = g.vram_mib if d.whole else d.vram_mib
        rows.append((taken, vram_at_least, np.inf))
    a = lil_matrix((len(rows), len(cols)))
    for i, (row, _, _) in enumerate(rows):
        for j, v in row.items():
            a[i, j] = v
    objective = np.zeros(len(cols))
    for key, j in cols.items():
        if key[0] == "y":
            objective[j] = -1
    res = quiet(milp, objective,
                constraints=LinearConstraint(a.tocsr(), [lo for _, lo, _ in rows], [hi for _, _, hi in rows]),
                integrality=np.ones(len(cols)), bounds=Bounds(0, 1), options={"time_limit": seconds})
    return None if res.x is None else round(-res.fun)


def fits(count: int, seed: int = 0, large: bool = False) -> dict:
    """``count`` instances from ``seed`` on: how many the MILP places all of, and in how many of those gpufleet
    leaves replicas over, with each strategy (with their seeds, to replay: ``small_instance(seed)``)."""
    all_fit, short = 0, {"binpack": [], "spread": []}
    for s in range(seed, seed + count):
        fleet, demands = small_instance(s, large)
        most = most_placeable(fleet, demands)
        if most != len(demands):
            continue
        all_fit += 1
        for strategy, missed in short.items():
            placed = len(place(fleet, demands, strategy=strategy).assignments)
            if placed < most:
                missed.append({"seed": s, "placed": placed, "replicas": most})
    return {"instances": count, "seed": seed, "large": large, "all_fit": all_fit,
            **{f"left_over_where_all_fit_{k}": len(v) for k, v in short.items()},
            **{f"short_{k}": v for k, v in short.items()}}


def small_plans(sizes: tuple[int, ...] = (4, 6, 8), seeds: int = 29, seconds: float = 20) -> dict:
    """Plans of bench/synthetic.py's CPU-and-memory workload on a few hosts (seeds 1..``seeds``, loads 0.9, 1.0 and
    1.3: most leave replicas over), against two MILP optima: the most replicas any placement places, and the most
    a placement taking no less VRAM than gpufleet's places (when not all fit, gpufleet takes VRAM first: the
    give-way and the searches by chains add replicas only where no VRAM is given up, but for a half-percent slack;
    the first exact search may move a whole replica to a smaller device). The second is
    what the engine could still reach without giving up VRAM; the first less the second is what that rule costs.
    """
    from bench.synthetic import resource_demands, resource_fleet

    out = []
    for n in sizes:
        row = {"hosts": n, "plans": 0, "placed": 0, "most_placeable": 0, "most_placeable_keeping_vram": 0,
               "at_most_placeable": 0, "at_most_keeping_vram": 0, "unsolved": 0, "short_keeping_vram": []}
        for seed in range(1, seeds + 1):
            fleet = resource_fleet(n, seed)
            for load in (0.9, 1.0, 1.3):
                demands = resource_demands(fleet, seed + 1, load)
                p = place(fleet, demands)
                vram = sum(a.vram_mib * len(a.gpus) for a in p.assignments)
                most = most_placeable(fleet, demands, seconds)
                keeping = most_placeable(fleet, demands, seconds, vram_at_least=vram)
                row["plans"] += 1
                if most is None or keeping is None:
                    row["unsolved"] += 1
                    continue
                placed = len(p.assignments)
                row["placed"] += placed
                row["most_placeable"] += most
                row["most_placeable_keeping_vram"] += keeping
                row["at_most_placeable"] += placed == most
                row["at_most_keeping_vram"] += placed == keeping
                if placed < keeping:
                    row["short_keeping_vram"].append({"seed": seed, "load": load, "placed": placed, "most": keeping})
        out.append(row)
    return {"sizes": list(sizes), "seeds": seeds, "by_size": out}
