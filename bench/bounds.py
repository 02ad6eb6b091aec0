"""An upper bound on the GPUs any placement can allocate, from how claims fill devices.

The bench's ``lp_bound`` (bench/placement.py ``relaxation``) keeps each host's CPUs and memory but pools
its devices' VRAM, so a 0.81 share and a 0.47 share "fit" in 1.28 devices. On a trace where most shared
claims cannot pair (81 % shares beside 32-65 % ones), that bound says everything asked can be allocated when
no placement can come near it. This bound keeps the devices whole and relaxes everything else:

- devices are pooled per (framework, device size) class, across hosts: host locality, CPUs, memory, ports,
  labels and model selectors are dropped (each only removes placements, so the optimum can only be lower);
- a whole claim of g GPUs takes g devices of a class at least its ``min_vram`` big;
- a shared claim's slices (one per GPU) are packed onto devices by *patterns*: every multiset of slice
  sizes that fits one device of the class (the Gilmore-Gomory cutting-stock model). A slice counts its
  share of the device it is on, as ``gpu_equivalents`` counts it; slices of one claim may be split
  (a relaxation too).

The model is solved as a MILP with HiGHS for a bounded time; its proven dual bound (never below the true
optimum of the model, so never below what any placement allocates) is reported. Where the patterns would be
too many to enumerate, the bound is None and the bench says so.
"""
from __future__ import annotations

from inventory.fleet import Fleet
from stack.placement import Demand

from bench.quiet import quiet

#: enumerating more patterns than this, the bound is not computed
MAX_PATTERNS = 200_000


def _patterns(sizes: list[int], counts: list[int], capacity: int, limit: int) -> list[tuple[int, ...]] | None:
    """Every non-empty multiset of ``sizes`` (at most ``counts`` of each) summing to at most ``capacity``."""
    out: list[tuple[int, ...]] = []
    cur: list[int] = []

    def walk(i: int, left: int) -> bool:
        if i == len(sizes):
            if any(cur):
                out.append(tuple(cur))
            return len(out) <= limit
        for k in range(min(counts[i], left // sizes[i]) + 1):
            cur.append(k)
            ok = walk(i + 1, left - k * sizes[i])
            cur.pop()
            if not ok:
                return False
        return True

    return out if walk(0, capacity) else None


def device_packing_bound(fleet: Fleet, demands: list[Demand], seconds: float = 30.0) -> dict:
    """``{"bound": GPU equivalents or None, "patterns": n, "proven_optimal": bool}``; see the module doc."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    classes: dict[tuple[str, int], int] = {}  # (framework, device MiB) -> active devices
    for h in fleet.hosts:
        if h.active:
            for g in h.groups:
                key = (g.framework, g.vram_mib)
                classes[key] = classes.get(key, 0) + len(g.devices)
    whole: dict[tuple, int] = {}  # (framework, gpus, min MiB) -> claims
    slices: dict[tuple, int] = {}  # (framework, slice MiB) -> slices
    for d in demands:
        if not d.gpus:
            continue
        if d.whole:
            key = (d.framework, d.gpus, d.min_vram_mib)
            whole[key] = whole.get(key, 0) + 1
        else:
            key = (d.framework, d.vram_mib)
            slices[key] = slices.get(key, 0) + d.gpus
    wkeys, skeys, ckeys = sorted(whole), sorted(slices), sorted(classes)
    cols: list[tuple] = []  # ("w", whole key, class) | ("p", pattern over skeys, class)
    gain: list[float] = []
    for wk in wkeys:
        fw, g, mv = wk
        for ck in ckeys:
            if ck[0] == fw and ck[1] >= mv:
                cols.append(("w", wk, ck))
                gain.append(g)
    n_patterns = 0
    for ck in ckeys:
        mine = [(i, sk) for i, sk in enumerate(skeys) if sk[0] == ck[0] and sk[1] <= ck[1]]
        if not mine:
            continue
        pats = _patterns([sk[1] for _, sk in mine], [slices[sk] for _, sk in mine], ck[1], MAX_PATTERNS - n_patterns)
        if pats is None:
            return {"bound": None, "patterns": f"over {MAX_PATTERNS}", "proven_optimal": False}
        n_patterns += len(pats)
        for p in pats:
            cols.append(("p", tuple((i, k) for (i, _), k in zip(mine, p) if k), ck))
            gain.append(sum(k * sk[1] for (_, sk), k in zip(mine, p)) / ck[1])
    if not cols:
        return {"bound": 0.0, "patterns": 0, "proven_optimal": True}
    rows_w = {wk: r for r, wk in enumerate(wkeys)}
    rows_s = {i: len(wkeys) + i for i in range(len(skeys))}
    rows_c = {ck: len(wkeys) + len(skeys) + r for r, ck in enumerate(ckeys)}
    a = lil_matrix((len(wkeys) + len(skeys) + len(ckeys), len(cols)))
    for j, (kind, what, ck) in enumerate(cols):
        if kind == "w":
            a[rows_w[what], j] = 1
            a[rows_c[ck], j] = what[1]
        else:
            for i, k in what:
                a[rows_s[i], j] = k
            a[rows_c[ck], j] = 1
    hi = [whole[wk] for wk in wkeys] + [slices[sk] for sk in skeys] + [classes[ck] for ck in ckeys]
    res = quiet(milp, -np.array(gain), constraints=LinearConstraint(a.tocsr(), 0, np.array(hi, dtype=float)),
                integrality=np.ones(len(cols)), bounds=Bounds(0, np.inf),
                options={"time_limit": seconds, "disp": False})
    bound = -res.mip_dual_bound if res.mip_dual_bound is not None else None
    return {"bound": bound, "patterns": n_patterns, "proven_optimal": res.status == 0}
