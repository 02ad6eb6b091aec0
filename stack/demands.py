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
        for replica in range(w.spec.replicas):
            out.append(Demand(
                deployment=w.name, replica=replica, framework=w.framework, gpus=gpus,
                vram_mib=vram if gpus else None,
                min_vram_mib=min_vram,
                labels=tuple(sorted(w.spec.selectors.labels.items())),
                vendor=w.spec.selectors.vendor, gpu_model=model,
                manual=w.manual, spread_hosts=w.spec.spread == "hosts",
                cpus=r.cpus or 0, ram_mib=r.ram or 0,
            ))
    return out
