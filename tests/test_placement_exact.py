"""The exact search of a small plan that leaves replicas over (stack.placement.exact): it places what some
placement would hold, only ever adds replicas, and leaves alone what it may not touch."""
from __future__ import annotations

import pytest

import stack.placement.exact as exact
from bench.fits import small_instance
from stack.lock import read_lock, render_lock
from stack.placement import Demand, place

from .conftest import exact_search_off
from .fleets import fleet, gpus, host
from .test_placement_properties import check_invariants, reordered

GIB = 1024


def _without_the_search(f, demands, **kw):
    with exact_search_off():
        return place(f, demands, **kw)


def _slices_and_a_card():
    f = fleet(host("a", gpus("nvidia", "H100", 48, 4)))
    slices = [Demand("slice", r, "cuda", 2, 24 * GIB, 24 * GIB) for r in range(3)]
    return f, slices + [Demand("card", 0, "cuda", 1, None)]


def test_three_two_gpu_slices_interlace_so_a_whole_card_fits():
    """Four 48 GiB devices; three replicas of two 24 GiB slices and one of a whole device. Best fit puts two slice
    replicas on devices 0 and 1 and the third on 2 and 3: no device is left whole. Interlaced over 0, 1 and 2
    (two slices a device), they leave device 3 to the card."""
    f, demands = _slices_and_a_card()
    before = _without_the_search(f, demands)
    assert [u.key for u in before.unplaced] == ["card/0"]  # what the heuristics leave
    p = place(f, demands)
    check_invariants(f, demands, p)
    assert not p.unplaced
    by = {a.key: a.gpus for a in p.assignments}
    assert by["card/0"] == (3,)
    assert sorted(by[f"slice/{r}"] for r in range(3)) == [(0, 1), (0, 2), (1, 2)]


@pytest.mark.parametrize("seed", [7535, 8876])
@pytest.mark.parametrize("strategy", ["binpack", "spread"])
def test_the_small_instances_bench_fits_found_leave_nothing_over(seed, strategy):
    """bench/fits.py's two instances of 12,000 where a MILP places every replica and the heuristics left one over:
    7535 interlaces 2-GPU slices (as above); in 8876 a replica needing no GPU asks 64 GiB of memory, and two
    replicas asking 32 GiB each sit one on each host that has 64 GiB. The plan found is the same whatever the
    order of the hosts and replicas in the files."""
    f, demands = small_instance(seed)
    assert len(_without_the_search(f, demands, strategy=strategy).unplaced) == 1
    p = place(f, demands, strategy=strategy)
    check_invariants(f, demands, p)
    assert not p.unplaced
    for order in range(5):
        assert render_lock("s", place(*reordered(f, demands, order), strategy=strategy)) == render_lock("s", p)


def test_the_search_only_ever_adds_replicas():
    """On small fleets of bench/fits.py (2-8 hosts) and of bench/synthetic.py's CPU-and-memory workload (4 hosts),
    every replica the heuristics place is placed with the search too (moved at most), and on some of the latter
    the search places more (else this shows nothing)."""
    from bench.synthetic import resource_demands, resource_fleet

    cases = [small_instance(seed, large) for seed in range(100) for large in (False, True)]
    for seed in range(1, 16):
        f = resource_fleet(4, seed)
        cases += [(f, resource_demands(f, seed + 1, load)) for load in (1.0, 1.3)]
    more = 0
    for f, demands in cases:
        before = {a.key for a in _without_the_search(f, demands).assignments}
        p = place(f, demands)
        check_invariants(f, demands, p)
        after = {a.key for a in p.assignments}
        assert before <= after
        more += after > before
    assert more >= 3


def test_replicas_the_lock_keeps_never_move(tmp_path):
    """The slices run where the lock put them (two on devices 0-1, one on 2-3); the card arriving later could
    only fit if one moved: it stays left over, and nothing moves."""
    f, demands = _slices_and_a_card()
    slices = demands[:3]
    first = place(f, slices)
    assert sorted(a.gpus for a in first.assignments) == [(0, 1), (0, 1), (2, 3)]
    lock = tmp_path / "s.lock.yaml"
    lock.write_text(render_lock("s", first))
    p = place(f, demands, read_lock(lock))
    check_invariants(f, demands, p)
    assert sorted((a.key, a.status, a.gpus) for a in p.assignments) == \
        sorted((a.key, "kept", a.gpus) for a in first.assignments)
    assert [u.key for u in p.unplaced] == ["card/0"]


def test_a_plan_past_the_search_limits_is_left_as_the_heuristics_leave_it(monkeypatch):
    """More replicas than ``ITEMS``, or a search that runs out of ``NODES`` before it finds better: the plan is the
    heuristics' (nothing half-applied)."""
    f, demands = _slices_and_a_card()
    before = _without_the_search(f, demands)
    for limit, value in (("ITEMS", 3), ("NODES", 1)):
        with monkeypatch.context() as m:
            m.setattr(exact, limit, value)
            p = place(f, demands)
        check_invariants(f, demands, p)
        assert p.assignments == before.assignments and [u.key for u in p.unplaced] == ["card/0"], limit
