"""What each accelerator vendor means to a container: framework, devices, visibility variables.

The framework mapping is GPUStack's.  ``visible_env`` is what the inference engine inside
the container reads to pick its devices; ``runtime_env`` is what the vendor's container
runtime reads to expose devices (set only where the devices are handed over that way).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Ascend containers need these besides /dev/davinciN (what Ascend's docker runtime mounts)
ASCEND_CONTROL_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
ASCEND_DRIVER_MOUNTS = ("/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi",
                        "/etc/ascend_install.info")


@dataclass(frozen=True)
class DeviceNode:
    host_path: str
    container_path: str
    permissions: str = "rwm"


@dataclass(frozen=True)
class DeviceRequest:
    """Docker's --gpus: the NVIDIA container toolkit picks these devices."""

    driver: str
    device_ids: tuple[str, ...]
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Exposure:
    """How one replica's devices reach its container, and what the engine inside is told."""

    nodes: tuple[DeviceNode, ...] = ()
    requests: tuple[DeviceRequest, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    #: host folders mounted read-only (the Ascend driver)
    mounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vendor:
    name: str
    framework: str
    #: how devices reach the container: "nvidia" (device request), "kfd" (AMD/Hygon device nodes),
    #: "davinci" (Ascend device nodes + driver mounts), "runtime" (vendor runtime via runtime_env)
    exposure: str
    visible_env: tuple[str, ...]
    runtime_env: str | None = None


    def expose(self, gpus: tuple[int, ...], uuids: tuple[str | None, ...]) -> Exposure:
        """Devices, requests, variables and mounts for a replica holding host devices ``gpus``.

        Where devices are handed over one by one (NVIDIA device requests, AMD/Hygon and Ascend
        device nodes) or restricted by the vendor runtime's variable, the container numbers them
        from 0; where the vendor's runtime exposes every device, the engine is told host indices.
        """
        got = _EXPOSURES[self.exposure](gpus, uuids)
        restricted = self.exposure != "runtime" or self.runtime_env is not None
        local = ",".join(str(i) for i in range(len(gpus)))
        host_ids = ",".join(str(i) for i in gpus)
        env = dict(got.env)
        if self.runtime_env:
            env[self.runtime_env] = host_ids
        for name in self.visible_env:
            env[name] = local if restricted else host_ids
        return Exposure(got.nodes, got.requests, tuple(sorted(env.items())), got.mounts)


def _nvidia(gpus, uuids) -> Exposure:
    # UUIDs survive re-enumeration after a reboot or a GPU swap; indices are the fallback
    ids = tuple(uuids) if uuids and all(uuids) else tuple(str(i) for i in gpus)
    return Exposure(requests=(DeviceRequest("nvidia", ids, ("gpu",)),))


def _kfd(gpus, uuids) -> Exposure:
    nodes = [DeviceNode("/dev/kfd", "/dev/kfd")]
    for i in gpus:
        nodes += [DeviceNode(f"/dev/dri/card{i}", f"/dev/dri/card{i}"),
                  DeviceNode(f"/dev/dri/renderD{128 + i}", f"/dev/dri/renderD{128 + i}")]
    return Exposure(nodes=tuple(nodes))


def _davinci(gpus, uuids) -> Exposure:
    nodes = [DeviceNode(f"/dev/davinci{i}", f"/dev/davinci{i}") for i in gpus]
    nodes += [DeviceNode(p, p) for p in ASCEND_CONTROL_DEVICES]
    return Exposure(nodes=tuple(nodes), mounts=ASCEND_DRIVER_MOUNTS)


def _runtime(gpus, uuids) -> Exposure:
    return Exposure()


VENDORS: dict[str, Vendor] = {v.name: v for v in (
    Vendor("nvidia", "cuda", "nvidia", ("CUDA_VISIBLE_DEVICES",)),
    Vendor("amd", "rocm", "kfd", ("HIP_VISIBLE_DEVICES",)),
    Vendor("ascend", "cann", "davinci", ("ASCEND_RT_VISIBLE_DEVICES",)),
    Vendor("hygon", "dtk", "kfd", ("HIP_VISIBLE_DEVICES",)),
    Vendor("mthreads", "musa", "runtime", ("MUSA_VISIBLE_DEVICES",), "MTHREADS_VISIBLE_DEVICES"),
    # no documented runtime variable: the host's default runtime must be the vendor's own
    Vendor("iluvatar", "corex", "runtime", ("CUDA_VISIBLE_DEVICES",)),
    Vendor("metax", "maca", "runtime", ("CUDA_VISIBLE_DEVICES",)),
    Vendor("cambricon", "neuware", "runtime", ("MLU_VISIBLE_DEVICES",), "CAMBRICON_VISIBLE_DEVICES"),
    Vendor("thead", "hggc", "runtime", ("CUDA_VISIBLE_DEVICES",)),
)}

#: how devices reach a container, by ``Vendor.exposure``
_EXPOSURES = {"nvidia": _nvidia, "kfd": _kfd, "davinci": _davinci, "runtime": _runtime}

VENDOR_NAMES: tuple[str, ...] = tuple(VENDORS)
#: the pydantic type of a vendor field, written once for the inventory and the stack file
VendorName = Literal[VENDOR_NAMES]  # type: ignore[valid-type]
FRAMEWORK_VENDORS: dict[str, tuple[str, ...]] = {}
for _v in VENDORS.values():
    FRAMEWORK_VENDORS.setdefault(_v.framework, ())
    FRAMEWORK_VENDORS[_v.framework] += (_v.name,)
