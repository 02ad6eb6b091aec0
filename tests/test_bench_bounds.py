"""The bench's device-packing bound (bench/bounds.py): exact on instances small enough to work out by hand,
never below what the placement engine allocates, and tighter than the pooled-VRAM LP where shares cannot pair."""
from __future__ import annotations

import random

import pytest

pytest.importorskip("scipy", reason="the bench's bounds need scipy (a test extra; .ci/run installs it)")

from bench.bounds import device_packing_bound  # noqa: E402
from bench.placement import gpu_equivalents, relaxation  # noqa: E402
from stack.placement import Demand, place  # noqa: E402

from .fleets import fleet, gpus, host  # noqa: E402


def shared(dep: str, gib: int, framework: str = "cuda", n: int = 1) -> Demand:
    return Demand(dep, 0, framework, n, gib * 1024, gib * 1024)


def whole(dep: str, n: int = 1, framework: str = "cuda", min_gib: int = 0) -> Demand:
    return Demand(dep, 0, framework, n, None, min_gib * 1024)


def test_three_shares_of_60_percent_fill_two_devices_only_to_1_2():
    """Pooled VRAM says 1.8 of 2 devices; no placement puts two 60 % shares on one device."""
    f = fleet(host("a", gpus("nvidia", "X", 100, 2), cpus=64, ram_gib=512))
    demands = [shared(f"s{i}", 60) for i in range(3)]
    assert device_packing_bound(f, demands)["bound"] == pytest.approx(1.2)
    assert relaxation(f, demands)["lp"] == pytest.approx(1.8)
    assert gpu_equivalents(f, place(f, demands)) == pytest.approx(1.2)


def test_a_share_that_pairs_beats_one_that_cannot():
    """Two devices; shares 81, 47, 47, 32: the best is {81} {47, 47} (1.75) or {81} {47, 32} (1.28) -> 1.75."""
    f = fleet(host("a", gpus("nvidia", "X", 100, 2)))
    demands = [shared("a", 81), shared("b", 47), shared("c", 47), shared("d", 32)]
    assert device_packing_bound(f, demands)["bound"] == pytest.approx(1.75)


def test_whole_claims_need_devices_of_their_framework_and_size():
    f = fleet(host("n", gpus("nvidia", "L4", 24, 2)), host("m", gpus("amd", "MI300X", 192, 1)))
    demands = [whole("big", 1, min_gib=40), whole("amd", 2, framework="rocm"), shared("s", 12, "rocm")]
    # nothing NVIDIA is 40 GiB; the AMD pair cannot fit one device; the share gets the MI300X: 12/192
    assert device_packing_bound(f, demands)["bound"] == pytest.approx(12 / 192)


def test_never_below_what_the_engine_allocates():
    rnd = random.Random(20261202)
    for _ in range(25):
        hosts = [host(f"h{i}", gpus("nvidia", f"G{gib}", gib, rnd.choice([1, 2, 4])))
                 for i, gib in enumerate(rnd.choice([24, 48, 80]) for _ in range(rnd.randint(1, 4)))]
        f = fleet(*hosts)
        demands = []
        for i in range(rnd.randint(1, 14)):
            if rnd.random() < 0.6:
                demands.append(shared(f"s{i}", rnd.choice([8, 12, 20, 30, 40]), n=rnd.choice([1, 1, 2])))
            else:
                demands.append(whole(f"w{i}", rnd.choice([1, 2, 4]), min_gib=rnd.choice([0, 0, 40])))
        got = gpu_equivalents(f, place(f, demands))
        bound = device_packing_bound(f, demands)
        assert bound["proven_optimal"]
        assert got <= bound["bound"] + 1e-6, (got, bound)
