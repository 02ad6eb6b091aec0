"""The bench's MILP of the most replicas placeable (bench/fits.py): right on instances small enough to count by
hand, and never below what the placement engine places."""
from __future__ import annotations

import pytest

pytest.importorskip("scipy", reason="the bench's MILP needs scipy (a test extra; .ci/run installs it)")

from bench.fits import most_placeable, small_instance  # noqa: E402
from stack.placement import Demand, place  # noqa: E402

from .fleets import cpu_only, fleet, gpus, host  # noqa: E402


def test_each_limit_a_placement_keeps_is_one_the_milp_keeps():
    one = fleet(host("a", gpus("nvidia", "H100", 80, 2), cpus=16, ram_gib=64, ports=(40000, 40002)))
    slices = [Demand("s", r, "cuda", 1, 40 * 1024, 40 * 1024) for r in range(5)]
    assert most_placeable(one, slices) == 3  # four 40 GiB slices fit two 80 GiB devices; three ports
    wholes = [Demand("w", r, "cuda", 1, None) for r in range(2)] + [Demand("s", 0, "cuda", 1, 8 * 1024, 8 * 1024)]
    assert most_placeable(one, wholes) == 2  # a whole device is no one else's
    cpus = [Demand("c", r, "cuda", 1, 8 * 1024, 8 * 1024, cpus=6) for r in range(3)]
    assert most_placeable(one, cpus) == 2  # 16 CPUs
    ram = [Demand("m", r, "cpu", 0, ram_mib=40 * 1024) for r in range(2)]
    assert most_placeable(one, ram) == 1  # 64 GiB
    two = fleet(host("a", gpus("nvidia", "H100", 80, 2)), host("b", gpus("nvidia", "H100", 80, 2)), cpu_only("c"))
    spread = [Demand("sp", r, "cuda", 1, None, spread_hosts=True) for r in range(3)]
    assert most_placeable(two, spread) == 2  # one per host, and c has no GPU
    amd = [Demand("r", 0, "rocm", 1, None), Demand("h", 0, "cuda", 1, None, gpu_model="*A100*")]
    assert most_placeable(two, amd) == 0  # selectors


def test_keeping_vram_the_milp_counts_a_whole_device_whole():
    """One 80 GiB device: two 20 GiB slices are the most replicas (40 GiB taken). A placement asked to take more
    than 40 GiB holds only the whole card, counted at its 80 GiB; past 80 GiB no placement qualifies (None)."""
    one = fleet(host("a", gpus("nvidia", "H100", 80, 1), cpus=16, ram_gib=64))
    demands = [Demand("card", 0, "cuda", 1, None), *[Demand("s", r, "cuda", 1, 20 * 1024, 20 * 1024) for r in range(2)]]
    assert most_placeable(one, demands) == 2
    assert most_placeable(one, demands, vram_at_least=40 * 1024) == 2
    assert most_placeable(one, demands, vram_at_least=41 * 1024) == 1
    assert most_placeable(one, demands, vram_at_least=80 * 1024) == 1
    assert most_placeable(one, demands, vram_at_least=81 * 1024) is None  # nothing takes more than the device


@pytest.mark.parametrize("seed", range(40))
def test_gpufleet_never_places_more_than_the_milp(seed):
    f, demands = small_instance(seed)
    assert len(place(f, demands).assignments) <= most_placeable(f, demands)
