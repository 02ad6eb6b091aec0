"""What each accelerator vendor means to a container: framework, devices, visibility variables.

The framework mapping is GPUStack's. The variables are gpustack-runtime's
(``gpustack_runtime/envs.py``, v0.2.6: ``GPUSTACK_RUNTIME_DEPLOY_RESOURCE_KEY_MAP_RUNTIME_VISIBLE_DEVICES``
and ``..._BACKEND_VISIBLE_DEVICES``): ``runtime_env`` is what the vendor's container runtime reads
to expose devices, ``visible_env`` what the engine inside reads to pick them.

GPUStack runs its containers privileged, so they see every device and get host indices.
gpufleet's are not privileged: where devices are handed over one by one (NVIDIA device
requests, AMD/Hygon and Ascend device nodes) or restricted by the runtime variable, the
container numbers them from 0, and the engine's variables (and ``{{gpu_ids}}``) say 0..n-1;
where the vendor's runtime exposes every device (MetaX, whose runtime and engine variable are
the same), they say host indices. Ascend's variables are always positions, as gpustack-runtime's
``..._VALUE_ALIGNMENT`` makes them.
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
    #: the replica's devices as the engine inside numbers them (``{{gpu_ids}}``)
    gpu_ids: str = ""


@dataclass(frozen=True)
class DeviceRef:
    """One device of a replica: its host index and what the inventory knows about it."""

    index: int
    uuid: str | None = None
    #: AMD/Hygon: the PCI bus id (0000:c1:00.0) or render node (renderD129) the inventory recorded
    pci_bus_id: str | None = None
    render_node: str | None = None


@dataclass(frozen=True)
class Vendor:
    name: str
    framework: str
    #: how devices reach the container: "nvidia" (device request), "kfd" (AMD/Hygon device nodes),
    #: "davinci" (Ascend device nodes + driver mounts), "runtime" (vendor runtime via runtime_env)
    exposure: str
    visible_env: tuple[str, ...]
    runtime_env: str | None = None
    #: the runtime variable takes UUIDs when the inventory has them (gpustack-runtime's ..._VALUE_UUID)
    runtime_uuids: bool = False


    def expose(self, devices: tuple[DeviceRef, ...]) -> Exposure:
        """Devices, requests, variables and mounts for a replica holding ``devices``."""
        got = _EXPOSURES[self.exposure](devices)
        renumbered = self.exposure != "runtime" or (self.runtime_env is not None
                                                   and self.runtime_env not in self.visible_env)
        local = ",".join(str(i) for i in range(len(devices)))
        host_ids = ",".join(str(d.index) for d in devices)
        env = dict(got.env)
        if self.runtime_env and self.exposure == "runtime":
            uuids = [d.uuid for d in devices]
            env[self.runtime_env] = ",".join(uuids) if self.runtime_uuids and all(uuids) else host_ids  # type: ignore
        for name in self.visible_env:
            env[name] = local if renumbered or name in ALIGNED_ENV else host_ids
        return Exposure(got.nodes, got.requests, tuple(sorted(env.items())), got.mounts,
                        local if renumbered else host_ids)


#: engine variables gpustack-runtime always sets to positions (``..._VALUE_ALIGNMENT``)
ALIGNED_ENV = frozenset({"ASCEND_RT_VISIBLE_DEVICES", "NPU_VISIBLE_DEVICES"})


def _nvidia(devices) -> Exposure:
    # UUIDs survive re-enumeration after a reboot or a GPU swap; indices are the fallback
    uuids = [d.uuid for d in devices]
    ids = tuple(uuids) if uuids and all(uuids) else tuple(str(d.index) for d in devices)  # type: ignore
    return Exposure(requests=(DeviceRequest("nvidia", ids, ("gpu",)),))


def _kfd(devices) -> Exposure:
    """/dev/kfd and each GPU's render node, numbered renderD128.. inside the container.

    The host node comes from the inventory's PCI bus id (/dev/dri/by-path, stable across reboots
    and unaffected by a BMC's own card0) or render node; a count-only inventory falls back to
    renderD(128 + index), which holds where only GPUs have render nodes.
    """
    nodes = [DeviceNode("/dev/kfd", "/dev/kfd")]
    for local, d in enumerate(devices):
        if d.pci_bus_id:
            host = f"/dev/dri/by-path/pci-{d.pci_bus_id}-render"
        elif d.render_node:
            host = f"/dev/dri/{d.render_node}"
        else:
            host = f"/dev/dri/renderD{128 + d.index}"
        nodes.append(DeviceNode(host, f"/dev/dri/renderD{128 + local}"))
    return Exposure(nodes=tuple(nodes))


def _davinci(devices) -> Exposure:
    nodes = [DeviceNode(f"/dev/davinci{d.index}", f"/dev/davinci{d.index}") for d in devices]
    nodes += [DeviceNode(p, p) for p in ASCEND_CONTROL_DEVICES]
    return Exposure(nodes=tuple(nodes), mounts=ASCEND_DRIVER_MOUNTS)


def _runtime(devices) -> Exposure:
    return Exposure()


VENDORS: dict[str, Vendor] = {v.name: v for v in (
    Vendor("nvidia", "cuda", "nvidia", ("CUDA_VISIBLE_DEVICES",)),
    Vendor("amd", "rocm", "kfd", ("HIP_VISIBLE_DEVICES",)),
    Vendor("ascend", "cann", "davinci", ("ASCEND_RT_VISIBLE_DEVICES", "NPU_VISIBLE_DEVICES")),
    Vendor("hygon", "dtk", "kfd", ("HIP_VISIBLE_DEVICES",)),
    # gpustack-runtime spells Moore Threads' runtime variable METHERDS_VISIBLE_DEVICES; the MT
    # container toolkit reads MTHREADS_VISIBLE_DEVICES, which is what gpufleet sets
    Vendor("mthreads", "musa", "runtime", ("CUDA_VISIBLE_DEVICES", "MUSA_VISIBLE_DEVICES"),
           "MTHREADS_VISIBLE_DEVICES"),
    Vendor("iluvatar", "corex", "runtime", ("CUDA_VISIBLE_DEVICES",), "IX_VISIBLE_DEVICES"),
    # MetaX: the runtime and the engine read the same variable, with host indices
    Vendor("metax", "maca", "runtime", ("CUDA_VISIBLE_DEVICES",), "CUDA_VISIBLE_DEVICES"),
    Vendor("cambricon", "neuware", "runtime", ("MLU_VISIBLE_DEVICES",), "CAMBRICON_VISIBLE_DEVICES"),
    # T-Head (alibabacloud.com/devices): NVIDIA-style runtime variable, UUIDs where known
    Vendor("thead", "hggc", "runtime", ("CUDA_VISIBLE_DEVICES",), "NVIDIA_VISIBLE_DEVICES", runtime_uuids=True),
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
