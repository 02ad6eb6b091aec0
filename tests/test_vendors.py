"""Per-vendor devices and variables, as gpustack-runtime sets them and as a non-privileged container needs."""
from __future__ import annotations

import pytest

from inventory.vendors import VENDORS, DeviceRef


def _expose(vendor, *devices):
    got = VENDORS[vendor].expose(tuple(devices))
    return got, dict(got.env)


def test_nvidia_by_uuid_renumbered_from_zero():
    got, env = _expose("nvidia", DeviceRef(2, "GPU-a"), DeviceRef(3, "GPU-b"))
    assert got.requests[0].device_ids == ("GPU-a", "GPU-b")
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1"} and got.gpu_ids == "0,1"


def test_amd_render_nodes_from_pci_path_render_node_or_index():
    got, env = _expose("amd", DeviceRef(1, pci_bus_id="0000:c1:00.0"), DeviceRef(2, render_node="renderD131"),
                       DeviceRef(3))
    assert [(n.host_path, n.container_path) for n in got.nodes] == [
        ("/dev/kfd", "/dev/kfd"),
        ("/dev/dri/by-path/pci-0000:c1:00.0-render", "/dev/dri/renderD128"),
        ("/dev/dri/renderD131", "/dev/dri/renderD129"),
        ("/dev/dri/renderD131", "/dev/dri/renderD130"),
    ]
    assert env == {"HIP_VISIBLE_DEVICES": "0,1,2"} and got.gpu_ids == "0,1,2"


def test_ascend_sets_both_engine_variables_as_positions():
    got, env = _expose("ascend", DeviceRef(4), DeviceRef(5))
    assert env == {"ASCEND_RT_VISIBLE_DEVICES": "0,1", "NPU_VISIBLE_DEVICES": "0,1"}
    assert [n.host_path for n in got.nodes][:2] == ["/dev/davinci4", "/dev/davinci5"]


@pytest.mark.parametrize("vendor, runtime, engine", [
    ("iluvatar", ("IX_VISIBLE_DEVICES", "2,3"), {"CUDA_VISIBLE_DEVICES": "0,1"}),
    ("cambricon", ("CAMBRICON_VISIBLE_DEVICES", "2,3"), {"MLU_VISIBLE_DEVICES": "0,1"}),
    ("mthreads", ("MTHREADS_VISIBLE_DEVICES", "2,3"), {"CUDA_VISIBLE_DEVICES": "0,1", "MUSA_VISIBLE_DEVICES": "0,1"}),
    ("thead", ("NVIDIA_VISIBLE_DEVICES", "T-2,T-3"), {"CUDA_VISIBLE_DEVICES": "0,1"}),
])
def test_runtime_vendors_restrict_and_renumber(vendor, runtime, engine):
    got, env = _expose(vendor, DeviceRef(2, "T-2"), DeviceRef(3, "T-3"))
    assert env[runtime[0]] == runtime[1]
    assert {k: v for k, v in env.items() if k != runtime[0]} == engine
    assert got.gpu_ids == "0,1"


def test_metax_sees_every_device_so_host_indices():
    got, env = _expose("metax", DeviceRef(2), DeviceRef(3))
    assert env == {"CUDA_VISIBLE_DEVICES": "2,3"} and got.gpu_ids == "2,3"
