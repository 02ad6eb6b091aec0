"""Feasibility filters: small named parts, each with a stable reason code.

A filter answers one question about one device group of one host (``group`` is None for a
replica that needs no GPU).  Static filters depend only on the inventory and the demand, so
the engine evaluates them once per equivalence class of groups; dynamic filters read the
current :class:`~stack.placement.state.FleetState`.  The order of ``STATIC`` and ``DYNAMIC``
is the pipeline order, and the order explanations are given in.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Optional

from inventory.fleet import DeviceGroup, Host
from inventory.sizes import format_mib

from .model import Demand

Check = Callable[[Host, Optional[DeviceGroup], Demand, object], bool]


@dataclass(frozen=True)
class Filter:
    code: str  # stable key in JSON output and tests
    check: Check
    #: how to say what the rejected hosts lack: (count, demand, rejected hosts) -> text
    explain: Callable[[int, Demand, list], str]
    gpu_only: bool = False  # skipped for replicas that need no GPU

    def __call__(self, host, group, demand, state=None) -> bool:
        return self.check(host, group, demand, state)


_SINGULAR = {"lack": "lacks", "have": "has", "run": "runs", "are": "is"}


def _hosts(n: int, verb: str = "") -> str:
    """'1 host lacks' / '7 hosts lack'."""
    if not verb:
        return f"{n} host{'s' if n != 1 else ''}"
    return f"{n} host {_SINGULAR[verb]}" if n == 1 else f"{n} hosts {verb}"


def _devices(n: int) -> str:
    return f"{n} device{'s' if n != 1 else ''}"


def _labels_ok(host: Host, group, demand: Demand, state) -> bool:
    if not demand.labels:
        return True
    have = host.label_map
    return all(have.get(k) == v for k, v in demand.labels)


def _frameworks_of(hosts: list) -> str:
    fws = sorted({g.framework for h in hosts for g in h.groups})
    if any(not h.groups for h in hosts):
        fws.append("no GPUs")
    return ", ".join(fws)


HOST_ACTIVE = Filter(
    "host_cordoned", lambda h, g, d, s: h.active,
    lambda n, d, hs: f"cordoned: {_hosts(n)}")
LABELS = Filter(
    "labels", _labels_ok,
    lambda n, d, hs: f"labels: {_hosts(n, 'lack')} {', '.join(f'{k}={v}' for k, v in d.labels)}")
FRAMEWORK = Filter(
    "framework", lambda h, g, d, s: g is not None and g.framework == d.framework,
    lambda n, d, hs: f"framework: {_hosts(n, 'have')} no {d.framework} devices ({_frameworks_of(hs)})",
    gpu_only=True)
VENDOR = Filter(
    "vendor", lambda h, g, d, s: d.vendor is None or g.vendor == d.vendor,
    lambda n, d, hs: f"vendor: {_hosts(n, 'are')} not {d.vendor}", gpu_only=True)
def model_matches(pattern: str | tuple[str, ...] | list[str], model: str) -> bool:
    """gpu_model selectors: a case-insensitive glob on the inventory's whole model name, or several globs
    any of which may match."""
    model = model.lower()
    if isinstance(pattern, str):
        return fnmatch.fnmatchcase(model, pattern.lower())
    return any(fnmatch.fnmatchcase(model, p.lower()) for p in pattern)


def _gpu_model_text(n: int, d: Demand, hs) -> str:
    globs = (d.gpu_model,) if isinstance(d.gpu_model, str) else d.gpu_model
    text = f"GPU model: {_hosts(n, 'have')} no {' or '.join(repr(g) for g in globs)}"
    for glob in globs:
        if set("*?[") & set(glob):
            continue
        # a bare name never matches a full model name ('H100' vs 'NVIDIA H100 80GB HBM3'): say so
        wider = f"*{glob}*"
        close = sorted({g.model for h in hs for g in h.groups if model_matches(wider, g.model)})
        if close:
            text += (f" (gpu_model is a glob on the whole model name; '{wider}' would match "
                     f"{', '.join(close[:3])}{'…' if len(close) > 3 else ''})")
    return text


GPU_MODEL = Filter(
    "gpu_model", lambda h, g, d, s: d.gpu_model is None or model_matches(d.gpu_model, g.model),
    _gpu_model_text, gpu_only=True)
DEVICE_COUNT = Filter(
    "device_count", lambda h, g, d, s: len(g.devices) >= d.gpus,
    lambda n, d, hs: f"device count: {_hosts(n, 'have')} fewer than {d.gpus} such devices", gpu_only=True)
VRAM_SIZE = Filter(
    "vram_size", lambda h, g, d, s: g.vram_mib >= d.min_vram_mib,
    lambda n, d, hs: f"VRAM size: {_hosts(n, 'have')} devices smaller than {format_mib(d.min_vram_mib)}",
    gpu_only=True)

#: device size before device count: when every device is too small, that is the reason to give first
STATIC: tuple[Filter, ...] = (HOST_ACTIVE, LABELS, FRAMEWORK, VENDOR, GPU_MODEL, VRAM_SIZE, DEVICE_COUNT)


def _manual_ok(h, g, d: Demand, state) -> bool:
    if d.manual is None:
        return True
    chosen = {i for (name, i) in d.manual if name == h.name}
    return g is not None and sum(1 for dev in g.devices if dev.index in chosen) >= d.gpus


def _vram_text(n: int, d: Demand, hs) -> str:
    if d.whole:
        return f"free VRAM: {_hosts(n, 'lack')} {d.gpus} unclaimed device{'s' if d.gpus != 1 else ''}"
    return f"free VRAM: {_hosts(n, 'lack')} {_devices(d.gpus)} with {format_mib(d.vram_mib)} free"


MANUAL = Filter(
    "gpu_selection", _manual_ok,
    lambda n, d, hs: f"gpu_selection: {_hosts(n)} not selected (or too few selected devices)", gpu_only=True)
FREE_PORT = Filter(
    "free_port", lambda h, g, d, s: s.has_free_port(h.name),
    lambda n, d, hs: f"ports: {_hosts(n, 'have')} no free port in range")
SPREAD = Filter(
    "spread", lambda h, g, d, s: not (d.spread_hosts and s.runs(h.name, d.deployment)),
    lambda n, d, hs: f"spread: {_hosts(n, 'run')} {d.deployment} already")
FREE_VRAM = Filter(
    "free_vram", lambda h, g, d, s: s.fits(h.name, g, d),
    _vram_text, gpu_only=True)

def _cpus(n: float) -> str:
    return f"{n:g} free CPU{'s' if n != 1 else ''}"


FREE_CPU = Filter(
    "free_cpu", lambda h, g, d, s: s.cpu_fits(h.name, d),
    lambda n, d, hs: f"cpu: {_hosts(n, 'lack')} {_cpus(d.cpus)}")
FREE_RAM = Filter(
    "free_ram", lambda h, g, d, s: s.ram_fits(h.name, d),
    lambda n, d, hs: f"memory: {_hosts(n, 'lack')} {format_mib(d.ram_mib)} of free memory")

DYNAMIC: tuple[Filter, ...] = (MANUAL, FREE_PORT, SPREAD, FREE_CPU, FREE_RAM, FREE_VRAM)
PIPELINE: tuple[Filter, ...] = STATIC + DYNAMIC


def applicable(demand: Demand, filters=PIPELINE) -> tuple[Filter, ...]:
    return filters if demand.gpus else tuple(f for f in filters if not f.gpu_only)
