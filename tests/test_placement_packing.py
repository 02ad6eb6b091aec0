"""Shared claims paired on devices: the dry run that groups them, and the engine's second order that uses it."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.placement import Demand, place
from stack.placement.engine import _best_order, _place, _Run
from stack.placement.packing import device_bins

from .fleets import fleet, gpus, host
from .test_placement_properties import check_invariants, demand_sets, fleets

GIB = 1024


def share(dep: str, gib: int, cpus: float = 1, **kw) -> Demand:
    return Demand(dep, 0, "cuda", 1, gib * GIB, gib * GIB, cpus=cpus, **kw)


def test_the_dry_run_pairs_shares_as_best_fit_decreasing_does():
    claims = [share("a", 81), share("b", 65), share("c", 47), share("d", 47), share("e", 32), share("f", 16),
              share("g", 100)]
    bins = device_bins(claims, lambda d: 100 * GIB)
    together = {tuple(sorted(x.deployment for x in b)) for b in bins.values()}
    assert together == {("a", "f"), ("b", "e"), ("c", "d"), ("g",)}
    assert [x.deployment for x in bins["b/0"]] == ["b", "e"]  # largest first: the leader is placed first
    assert bins["b/0"] is bins["e/0"]


def test_the_dry_run_keeps_selectors_and_device_sizes_apart_and_leaves_pinned_claims_out():
    amd = Demand("amd", 0, "rocm", 1, 40 * GIB, 40 * GIB)
    pinned = Demand("pin", 0, "cuda", 1, 40 * GIB, 40 * GIB, manual=(("h", 0),))
    h100 = share("h100", 40, gpu_model="*H100*")
    claims = [share("x", 40), share("y", 40), amd, pinned, h100, share("big", 90), Demand("w", 0, "cuda", 1)]
    bins = device_bins(claims, lambda d: 80 * GIB)
    assert set(bins) == {"x/0", "y/0", "amd/0", "h100/0"}  # 90 GiB fits no 80 GiB device; whole: not shared
    assert [x.deployment for x in bins["x/0"]] == ["x", "y"]
    assert [x.deployment for x in bins["amd/0"]] == ["amd"] and [x.deployment for x in bins["h100/0"]] == ["h100"]


def _small_case():
    """Found by a seeded search (seed 10982 of the generator in the test below): the order by all a replica asks,
    repair and all, leaves a 37 GiB share over with the free VRAM in gaps too small for it; the device order
    pairs 59 + 37 twice, 65 + 32 and three 32s, and fits every replica. (The first case found this way, with
    ten replicas, the repair now places: its moved replica may make room for itself in turn.)"""
    f = fleet(host("h0", gpus("nvidia", "X", 100, 4), cpus=32, ram_gib=256),
              host("h1", gpus("nvidia", "X", 100, 2), cpus=8, ram_gib=256),
              host("h2", gpus("nvidia", "X", 100, 2), cpus=16, ram_gib=256))
    whole = [Demand(name, 0, "cuda", 1, None, 0, cpus=cpus) for name, cpus in (("w03", 4), ("w08", 4), ("w09", 2))]
    demands = [share("s00", 81, 2), share("s01", 37, 1), share("s02", 32, 2), whole[0], share("s04", 32, 2),
               share("s05", 65, 2), share("s06", 32, 2), share("s07", 59, 1), whole[1], whole[2],
               share("s10", 59, 2), share("s11", 37, 1), share("s12", 32, 2)]
    return f, demands


def test_a_plan_that_nearly_fits_is_tried_device_by_device_too():
    f, demands = _small_case()
    first = _place(f, demands)
    assert [d.deployment for d, _ in first._failed] == ["s11"]  # the first order alone leaves one over
    assert first.wants_device_order()
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    for dev in {(a.host, a.gpus) for a in p.assignments}:  # and nothing is over a device or a host
        assert sum(a.vram_mib for a in p.assignments if (a.host, a.gpus) == dev) <= 100 * GIB
    for h, cpus in (("h0", 32), ("h1", 8), ("h2", 16)):
        assert sum(d.cpus for d in demands for a in p.assignments if a.key == d.key and a.host == h) <= cpus


def _random_case(rnd: random.Random):
    f = fleet(*(host(f"h{i}", gpus("nvidia", "X", 100, rnd.choice([1, 2, 4])), cpus=rnd.choice([8, 16, 32]),
                     ram_gib=256) for i in range(rnd.randint(1, 3))))
    devices = sum(len(g.devices) for h in f.hosts for g in h.groups)
    demands, asked, i = [], 0.0, 0
    while asked < devices * rnd.uniform(0.9, 1.05):
        if rnd.random() < 0.2:
            demands.append(Demand(f"w{i:02d}", 0, "cuda", 1, None, 0, cpus=rnd.choice([1, 2, 4])))
            asked += 1
        else:
            gib = rnd.choice([81, 65, 59, 47, 37, 32])
            demands.append(share(f"s{i:02d}", gib, rnd.choice([1, 2, 4])))
            asked += gib / 100
        i += 1
    return f, demands


def test_the_second_order_never_costs_replicas_or_gpus(monkeypatch):
    """place() keeps the device order only when it is no worse in both: on random fleets asked about as much
    as they hold, it never places fewer replicas or GPUs than the first order alone. The dry-run check
    (``pairing_makes_room``) is forced here so that every plan with a shared claim left over beside free VRAM
    tries both orders: the choice between them is what is under test. (Where the device order wins is rare on
    these fleets since the repair's chains: 3 of 20,000; ``_small_case`` is one.)"""
    monkeypatch.setattr(_Run, "pairing_makes_room", lambda self: True)
    rnd = random.Random(20261202)
    tried = 0
    for _ in range(400):
        f, demands = _random_case(rnd)
        first = _place(f, demands)
        final = _best_order(f, demands)  # (what place() hands on to the give-way step)
        got = final.gpus_allocated()
        assert len(final.placed) >= len(first.placed)
        assert got >= first.gpus_allocated() - 1e-9
        tried += first.wants_device_order()
    assert tried >= 5, tried  # the property was exercised where it matters


def test_the_second_order_is_not_made_where_pairing_cannot_make_room():
    """The dry run needs more devices for the plan's shared claims than the first run holds with them: the
    second order could only choose which claim is left over, so it is not made (on 400 random fleets it was
    made on 1, where 9 have a shared claim left over beside free VRAM). Without the check it would be."""
    rnd = random.Random(20261202)
    made = fragmented = 0
    for _ in range(400):
        f, demands = _random_case(rnd)
        first = _place(f, demands)
        made += first.wants_device_order()
        with pytest.MonkeyPatch.context() as m:
            m.setattr(_Run, "pairing_makes_room", lambda self: True)
            fragmented += first.wants_device_order()
    assert made < fragmented, (made, fragmented)
    f, demands = _small_case()
    assert _place(f, demands).pairing_makes_room()  # where it makes room, it is made (see above)


@settings(max_examples=200, deadline=None)
@given(f=fleets(), demands=demand_sets(), strategy=st.sampled_from(["binpack", "spread"]))
def test_the_device_order_keeps_every_rule(f, demands, strategy):
    """place() runs the second order only now and then; here it runs on every random fleet, and its plan must
    keep every rule the first order's does (no device, host or port over, selectors, spread: hosts)."""
    check_invariants(f, demands, _place(f, demands, strategy=strategy, by_device=True).finish(demands, None))


def test_an_explanation_says_when_the_vram_is_there_but_split_over_devices():
    """Two 60 GiB shares on two 100 GiB devices leave 80 GiB free, 40 on each: a 50 GiB share fits on neither.
    The operator is told that packing, not capacity, is what it lacks; a host whose devices are full is not
    counted, and a whole-GPU claim gets no such hint."""
    f = fleet(host("a", gpus("nvidia", "X", 100, 2)), host("b", gpus("nvidia", "X", 100, 1)))
    demands = [share("s1", 60), share("s2", 60), share("s3", 90), share("late", 50)]
    p = place(f, demands)
    (u,) = p.unplaced
    assert u.key == "late/0"
    assert u.message.endswith("free VRAM: 2 hosts lack 1 device with 50 GiB free; 1 of those hosts has that much "
                              "VRAM free, split over devices"), u.message
    (w,) = place(f, demands[:3] + [Demand("w", 0, "cuda", 1)]).unplaced
    assert "split over devices" not in w.message, w.message
