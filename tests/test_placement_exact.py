"""The exact search of a small plan that leaves replicas over (stack.placement.exact): it places what some
placement would hold, only ever adds replicas, and leaves alone what it may not touch."""
from __future__ import annotations

import pytest

import stack.placement.engine as engine
import stack.placement.exact as exact
from bench.fits import small_instance
from stack.lock import read_lock, render_lock
from stack.placement import Demand, place

from .conftest import exact_search_off, no_ruin_and_recreate
from .fleets import fleet, gpus, host
from .test_placement_properties import check_invariants, reordered

GIB = 1024


@pytest.fixture(autouse=True)
def _one_order(monkeypatch):
    """What each search does in the first order alone: the runs in other orders after them (``engine.OTHER_RUNS``)
    and the ruin and recreate after those would also place some of what they are there to place
    (tests/test_placement_restarts.py, tests/test_placement_recreate.py)."""
    monkeypatch.setattr(engine, "OTHER_RUNS", ())
    monkeypatch.setattr(engine, "ruin_and_recreate", no_ruin_and_recreate)


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


def _small_plans():
    """Small fleets of bench/fits.py (2-8 hosts) and of bench/synthetic.py's CPU-and-memory workload (4 hosts)."""
    from bench.synthetic import resource_demands, resource_fleet

    cases = [small_instance(seed, large) for seed in range(100) for large in (False, True)]
    for seed in range(1, 16):
        f = resource_fleet(4, seed)
        cases += [(f, resource_demands(f, seed + 1, load)) for load in (0.9, 1.0, 1.3)]
    return cases


def _vram(p) -> int:
    """VRAM a plan takes, a device taken whole counted whole (what the plan takes first when not all fit)."""
    return sum(a.vram_mib * len(a.gpus) for a in p.assignments)


def heuristics_taken(monkeypatch, f, demands) -> tuple[int, float]:
    """The VRAM and GPUs the first run's heuristics take, before the exact searches (engine.place's floor, less
    ``exact.RUN_SLACK``, is what a small plan keeps): read where ``place_more`` is first called."""
    seen = []
    real = engine.place_more

    def spy(run, by_key, least_vram=None):
        if not seen:
            seen.append((run.vram_taken(), run.gpus_allocated()))
        return real(run, by_key, least_vram)

    with monkeypatch.context() as m:
        m.setattr(engine, "place_more", spy)
        place(f, demands)
    return seen[0]


def test_the_search_only_ever_adds_replicas(monkeypatch):
    """Every replica the heuristics place is placed with the first search too (moved at most), and on some of the
    plans the search places more (else this shows nothing). The search by chains is off here: it may leave a
    replica over (below)."""
    monkeypatch.setattr(exact, "CHAIN_ITEMS", 0)
    more = 0
    for f, demands in _small_plans():
        before = {a.key for a in _without_the_search(f, demands).assignments}
        p = place(f, demands)
        check_invariants(f, demands, p)
        after = {a.key for a in p.assignments}
        assert before <= after
        more += after > before
    assert more >= 3


def _with_off(monkeypatch, step: str, f, demands):
    """The plan with the search ``step`` turns off (set to 0): ``CHAIN_ITEMS`` the chains, whole plan and pairs;
    ``PAIRS_NODES`` the pairs alone."""
    with monkeypatch.context() as m:
        m.setattr(exact, step, 0)
        return place(f, demands)


def _more_never_fewer(monkeypatch, step: str) -> int:
    """Each of the small plans with the search ``step`` turns off (set to 0) against the plan with it: never fewer
    replicas placed, never less VRAM taken, but down to the heuristics' plan's less ``exact.RUN_SLACK``, what is
    placed fits (the invariants), and a replica the search leaves over that had a place says so. Returns on how
    many plans the search placed more."""
    more = 0
    for f, demands in _small_plans():
        before = _with_off(monkeypatch, step, f, demands)
        p = place(f, demands)
        check_invariants(f, demands, p)
        assert len(p.assignments) >= len(before.assignments)
        floor = (1 - exact.RUN_SLACK) * heuristics_taken(monkeypatch, f, demands)[0]
        assert _vram(p) >= min(_vram(before), floor)
        more += len(p.assignments) > len(before.assignments)
        left = {a.key for a in before.assignments} - {a.key for a in p.assignments}
        for u in p.unplaced:
            if u.key in left:
                assert "left it so that this plan places" in u.message and "taking no less VRAM" in u.message
    return more


def test_chains_place_more_replicas_and_take_no_less_vram(monkeypatch):
    """The search by chains (exact._Chains, on the whole plan and on pairs of hosts) against the first search
    alone, on the same plans (``_more_never_fewer``), more replicas on some."""
    assert _more_never_fewer(monkeypatch, "CHAIN_ITEMS") >= 3


def test_chains_move_placed_replicas_aside_for_more(monkeypatch):
    """bench/synthetic.py's 4-host fleet of seed 2 at load 0.9, 32 replicas: the heuristics place 19, the first
    search 27. Within their limits (a few choices other than the first, CHAIN_NODES steps), the chains find a
    plan of 30, a MILP's most, taking no less VRAM than the heuristics' plan less ``RUN_SLACK`` (0.3 % less than
    the first search's): a replica placed is left over for more that were, and says where it was."""
    from bench.synthetic import resource_demands, resource_fleet

    f = resource_fleet(4, 2)
    demands = resource_demands(f, 3, 0.9)
    with exact_search_off():
        assert len(place(f, demands).assignments) == 19
    first = _with_off(monkeypatch, "CHAIN_ITEMS", f, demands)
    assert len(first.assignments) == 27
    p = place(f, demands)
    check_invariants(f, demands, p)
    assert len(p.assignments) == 30
    assert _vram(p) >= (1 - exact.RUN_SLACK) * heuristics_taken(monkeypatch, f, demands)[0]
    explained = {u.key: u.message for u in p.unplaced
                 if "left it so that this plan places 3 more replicas" in u.message}
    gone = {a.key: a.host for a in first.assignments}
    assert set(explained) == set(gone) - {a.key for a in p.assignments} and explained
    for key, message in explained.items():
        assert message.split("it had a place on ")[1].split(" ")[0] == gone[key]


def test_pairs_place_more_replicas_and_take_no_less_vram(monkeypatch):
    """The search by chains on each pair of hosts (exact._by_pairs) against the chains on the whole plan alone
    (``_more_never_fewer``), more replicas on some. The bound a search starts from (``_Chains._most``) is never
    below the replicas placed in it: the plan it starts from fits."""
    bounds = []
    most = exact._Chains._most

    def recorded(search):
        bounds.append((most(search), sum(it.required for it in search.items)))
        return bounds[-1][0]

    monkeypatch.setattr(exact._Chains, "_most", recorded)
    assert _more_never_fewer(monkeypatch, "PAIRS_NODES") >= 3
    assert all(bound >= placed for bound, placed in bounds)
    assert sum(bound == placed for bound, placed in bounds) >= 10  # (searches it spares)


def test_pairs_of_hosts_reach_a_plan_the_whole_plan_search_walks_past(monkeypatch):
    """bench/synthetic.py's 4-host fleet of seed 14 at load 1.3, 63 replicas: the chains on the whole plan place
    44, keeping each replica where it is first. On pairs of hosts they place 52, taking no less VRAM than the
    heuristics' plan less ``RUN_SLACK``, and the plan is the same whatever the order of the files."""
    from bench.synthetic import resource_demands, resource_fleet

    f = resource_fleet(4, 14)
    demands = resource_demands(f, 15, 1.3)
    whole = _with_off(monkeypatch, "PAIRS_NODES", f, demands)
    assert len(whole.assignments) == 44
    p = place(f, demands)
    check_invariants(f, demands, p)
    assert len(p.assignments) == 52
    assert _vram(p) >= (1 - exact.RUN_SLACK) * heuristics_taken(monkeypatch, f, demands)[0]
    for order in range(2):
        assert render_lock("s", place(*reordered(f, demands, order))) == render_lock("s", p)


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
    """More replicas than ``ITEMS`` and ``CHAIN_ITEMS``, or searches that run out of ``NODES``, ``CHAIN_NODES`` and
    ``PAIR_NODES`` before they find better: the plan is the heuristics' (nothing half-applied)."""
    f, demands = _slices_and_a_card()
    before = _without_the_search(f, demands)
    for limits in ({"ITEMS": 3, "CHAIN_ITEMS": 3}, {"NODES": 1, "CHAIN_NODES": 1, "PAIR_NODES": 1}):
        with monkeypatch.context() as m:
            for limit, value in limits.items():
                m.setattr(exact, limit, value)
            p = place(f, demands)
        check_invariants(f, demands, p)
        assert p.assignments == before.assignments and [u.key for u in p.unplaced] == ["card/0"], limits
