"""Named hardware fixtures (GPUStack's style): small fleets built in code, no files needed."""
from __future__ import annotations

from inventory.fleet import Device, DeviceGroup, Fleet, Host, SshTarget

SSH = SshTarget("gpufleet", 22, None, None)


def host(name: str, *groups: DeviceGroup, labels: dict | None = None, state: str = "active",
         ports: tuple[int, int] = (40000, 40063), address: str | None = None, cpus: int | None = None,
         ram_gib: int | None = None, reserved: tuple[float, int] = (0, 0)) -> Host:
    return Host(name=name, address=address or f"127.0.50.{abs(hash(name)) % 250 + 1}", ssh=SSH,
                labels=tuple(sorted((labels or {}).items())), state=state, port_start=ports[0],
                port_end=ports[1], model_cache="/var/lib/gpufleet/models", groups=tuple(groups),
                cpus=cpus, ram_mib=None if ram_gib is None else ram_gib * 1024,
                reserved_cpus=reserved[0], reserved_ram_mib=reserved[1] * 1024)


def gpus(vendor: str, model: str, gib: int, count: int, uuids: bool = False) -> DeviceGroup:
    devices = tuple(Device(i, f"GPU-{model}-{i}" if uuids else None) for i in range(count))
    return DeviceGroup(vendor, model, gib * 1024, devices)


def nvidia_h100x8(name: str = "h100-a", **kw) -> Host:
    return host(name, gpus("nvidia", "H100", 80, 8), **kw)


def nvidia_a100x4(name: str = "a100-a", **kw) -> Host:
    return host(name, gpus("nvidia", "A100", 40, 4, uuids=True), **kw)


def nvidia_l4x2(name: str = "l4-a", **kw) -> Host:
    return host(name, gpus("nvidia", "L4", 24, 2), **kw)


def amd_mi300x8(name: str = "mi300-a", **kw) -> Host:
    return host(name, gpus("amd", "MI300X", 192, 8), **kw)


def ascend_910bx8(name: str = "910b-a", **kw) -> Host:
    return host(name, gpus("ascend", "Ascend910B", 64, 8), **kw)


def cpu_only(name: str = "cpu-a", **kw) -> Host:
    return host(name, **kw)


def fleet(*hosts: Host) -> Fleet:
    return Fleet(tuple(hosts), "fleet.yaml")
