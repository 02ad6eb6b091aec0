"""What each accelerator vendor means to a container: framework, devices, visibility variables.

The framework mapping is GPUStack's.  ``visible_env`` is what the inference engine inside
the container reads to pick its devices; ``runtime_env`` is what the vendor's container
runtime reads to expose devices (set only where the devices are handed over that way).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Vendor:
    name: str
    framework: str
    #: how devices reach the container: "nvidia" (device request), "kfd" (AMD/Hygon device nodes),
    #: "davinci" (Ascend device nodes + driver mounts), "runtime" (vendor runtime via runtime_env)
    exposure: str
    visible_env: tuple[str, ...]
    runtime_env: str | None = None


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

VENDOR_NAMES: tuple[str, ...] = tuple(VENDORS)
#: the pydantic type of a vendor field, written once for the inventory and the stack file
VendorName = Literal[VENDOR_NAMES]  # type: ignore[valid-type]
FRAMEWORK_VENDORS: dict[str, tuple[str, ...]] = {}
for _v in VENDORS.values():
    FRAMEWORK_VENDORS.setdefault(_v.framework, ())
    FRAMEWORK_VENDORS[_v.framework] += (_v.name,)

#: Ascend containers need these besides /dev/davinciN (what Ascend's docker runtime mounts)
ASCEND_CONTROL_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
ASCEND_DRIVER_MOUNTS = ("/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi",
                        "/etc/ascend_install.info")
