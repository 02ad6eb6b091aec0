"""Alibaba's openb GPU cluster trace (cluster-trace-gpu-v2023) as a fleet and demands for the bench.

The trace is not copied here (its repository states no licence): clone it and point the bench at it,

    git clone --depth 1 https://github.com/alibaba/clusterdata
    .venv/bin/python bench/placement.py --openb clusterdata/cluster-trace-gpu-v2023

It is the workload of the FGD paper (Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing
Workloads with Fragmentation Gradient Descent", USENIX ATC '23): 1,213 GPU hosts of a production
cluster (6,212 GPUs of 7 models, their CPUs and memory) and 8,152 tasks (``openb_pod_list_default``):
1,088 CPU-only, 3,078 sharing one GPU (``gpu_milli`` thousandths of it), the rest whole GPUs (1-8),
each with the CPUs and memory it asks.

How it maps onto gpufleet: a host is a ``Host`` with its CPUs and memory (nothing reserved: the trace
lists what is allocatable) and one NVIDIA device group of its model; a task is one replica of its own
deployment. A shared task asks a share of a device, so every device is given the same size
(``DEVICE_MIB``) and a share of ``gpu_milli`` thousandths is a claim of that many thousandths of it;
VRAM sizes are not in the trace (G1-G3 are undisclosed models). ``gpu_spec`` (a model constraint,
``V100M16|V100M32``: any of these) is ``gpu_model`` with one glob per alternative; it is empty in the
default task list and set on 5-33 % of the tasks of the ``gpuspec`` lists. Arrival order is
``creation_time``. The other task lists beside it (more sharing, more multi-GPU, more CPU-only tasks, model
constraints: the paper's sensitivity runs) load the same way.
"""
from __future__ import annotations

import csv
from pathlib import Path

from inventory.fleet import Device, DeviceGroup, Fleet, Host
from stack.placement import Demand

from .synthetic import SSH

#: every device's size: 1000 thousandths of a GPU, 32 MiB each
DEVICE_MIB = 32_000
NODES = "csv/openb_node_list_gpu_node.csv"
TASKS = "csv/openb_pod_list_default.csv"


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path}: not found; --openb wants the cluster-trace-gpu-v2023 folder of a clone of "
                         "https://github.com/alibaba/clusterdata")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def openb_fleet(folder: Path) -> Fleet:
    hosts = []
    for i, row in enumerate(_rows(folder / NODES)):
        n = int(row["gpu"])
        groups = (DeviceGroup("nvidia", row["model"], DEVICE_MIB, tuple(Device(j) for j in range(n))),) if n else ()
        hosts.append(Host(row["sn"], f"127.3.{i // 250}.{i % 250 + 1}", SSH, (), "active", 40000, 40999, "/models",
                          groups, cpus=int(row["cpu_milli"]) // 1000, ram_mib=int(row["memory_mib"])))
    return Fleet(tuple(hosts), "openb")


def openb_demands(folder: Path, tasks: str = TASKS) -> list[Demand]:
    """The tasks in arrival order: creation_time, else (the multigpu lists have no times) the file's order."""
    rows = sorted(_rows(folder / tasks), key=lambda r: int(r.get("creation_time") or 0))
    out = []
    for row in rows:
        gpus, milli = int(row["num_gpu"]), int(row["gpu_milli"] or 0)
        cpus, ram = int(row["cpu_milli"]) / 1000, int(row["memory_mib"])
        specs = tuple(s for s in (row.get("gpu_spec") or "").split("|") if s)
        model = None if not specs else specs[0] if len(specs) == 1 else specs
        if gpus == 0:
            out.append(Demand(row["name"], 0, "cpu", 0, cpus=cpus, ram_mib=ram))
        elif gpus == 1 and 0 < milli < 1000:
            vram = milli * DEVICE_MIB // 1000
            out.append(Demand(row["name"], 0, "cuda", 1, vram, vram, gpu_model=model, cpus=cpus, ram_mib=ram))
        else:
            out.append(Demand(row["name"], 0, "cuda", gpus, None, 0, gpu_model=model, cpus=cpus, ram_mib=ram))
    return out
