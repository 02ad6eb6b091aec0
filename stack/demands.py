"""Workloads -> one placement Demand per replica (plain data for the placement engine)."""
from __future__ import annotations

from .placement.model import Demand
from .workloads import Workload


def demands_for(workloads: list[Workload]) -> list[Demand]:
    out = []
    for w in workloads:
        r = w.spec.resources
        if w.fit is not None:  # sized from the model: whole GPUs of at least the estimated size
            gpus, vram, min_vram = w.fit.gpus, None, w.fit.min_vram_mib
        else:
            whole = r.vram == "whole"
            gpus, vram = r.gpus, None if whole else int(r.vram)
            min_vram = (r.min_vram or 0) if whole else int(r.vram)
        model = w.spec.selectors.gpu_model
        if isinstance(model, list):
            model = model[0] if len(model) == 1 else tuple(model)
        # the same for every replica: worked out once per deployment (a stack can list thousands of replicas)
        vram = vram if gpus else None
        labels = tuple(sorted(w.spec.selectors.labels.items()))
        vendor, spread, cpus, ram = w.spec.selectors.vendor, w.spec.spread == "hosts", r.cpus or 0, r.ram or 0
        for replica in range(w.spec.replicas):
            # positional, in Demand's field order: keywords cost a tenth of building the list
            out.append(Demand(w.name, replica, w.framework, gpus, vram, min_vram, labels, vendor, model, w.manual,
                              spread, cpus, ram))
    return out
