"""What searches remember about the index's lists (walks.Walks) is always still true.

A search may answer from what an earlier walk of the same list learnt only while nothing that answer
depends on changed: the list itself, and the GPUs, CPUs and memory of every host in its class. These
tests change hosts between searches the ways a plan does (a GPU replica, a replica that needs no GPU,
one taken back) and compare every remembered answer with a fresh walk. That covers the classes binpack
bounds as empty because the walks know nothing there fits (``HostsLacking.exhausted``): a stale "nothing
left" would skip a class the fresh search finds a host in (both tests below fail without its checks).
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stack.placement import Demand
from stack.placement.walks import HostsLacking, Walks
from stack.placement.index import CandidateIndex
from stack.placement.rankers import RANKERS
from stack.placement.state import FleetState, choose_devices

from .fleets import fleet, gpus, host

BINPACK = RANKERS["binpack"]


def _search(index, state, demand, walks, avoid=frozenset(), checks=(), key=()):
    hosts = HostsLacking(set(avoid), state, demand, checks, walks, key)
    hosts.budget = 10 ** 9  # a fresh walk never gives up here: both answers are complete
    gs = index.best(demand, BINPACK, hosts)
    return None if gs is None else (gs.host.name, gs.gidx)


def test_a_host_whose_cpus_are_taken_and_given_back_is_searched_again():
    f = fleet(host("a", gpus("nvidia", "H100", 80, 2), cpus=16), host("b", gpus("nvidia", "H100", 80, 2), cpus=16))
    gpu = Demand("g", 0, "cuda", 1, None, cpus=8)
    state = FleetState(f)
    index = CandidateIndex(state, [gpu])
    walks = Walks(index)
    assert _search(index, state, gpu, walks) == ("a", 0)
    assert _search(index, state, gpu, walks) == ("a", 0)  # answered from what the first walk learnt
    embedder = Demand("e", 0, "cpu", 0, cpus=12)
    state.claim(None, [], embedder, "a")  # a replica that needs no GPU: a keeps 4 CPUs and both GPUs
    assert _search(index, state, gpu, walks) == ("b", 0)
    state.release(None, [], embedder, "a", 40000)
    assert _search(index, state, gpu, walks) == ("a", 0)


def test_a_remembered_preference_answer_follows_the_host():
    """A preference's per-host check (here: skip hosts with more than 8 CPUs free) is remembered with
    the ask; once the host changes, it is asked again."""
    f = fleet(host("a", gpus("nvidia", "H100", 80, 2), cpus=16), host("b", gpus("nvidia", "H100", 80, 4), cpus=6))
    gpu = Demand("g", 0, "cuda", 1, None, cpus=2)
    state = FleetState(f)
    index = CandidateIndex(state, [gpu])
    walks = Walks(index)
    lean = (lambda h: state.cpu_free[h] > 8,)
    assert _search(index, state, gpu, walks, checks=lean, key=("lean",)) == ("b", 0)
    state.claim(None, [], Demand("e", 0, "cpu", 0, cpus=10), "a")  # a has 6 free now: no longer skipped
    assert _search(index, state, gpu, walks, checks=lean, key=("lean",)) == ("a", 0)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_remembered_answers_equal_fresh_walks(data):
    n = data.draw(st.integers(2, 6))
    sizes = [data.draw(st.sampled_from([1, 2, 4, 8])) for _ in range(n)]
    cpus = [data.draw(st.sampled_from([4, 8, 16, 32])) for _ in range(n)]
    zones = [data.draw(st.sampled_from("ab")) for _ in range(n)]
    f = fleet(*(host(f"h{i}", gpus("nvidia", "H100", 80, sizes[i]), cpus=cpus[i], ram_gib=256,
                     labels={"zone": zones[i]}) for i in range(n)))
    state = FleetState(f)
    # asks selecting a zone split the index's classes by zone; the others search the classes merged back
    asks = [Demand("g", 0, "cuda", g, v, min_vram_mib=v or 0, cpus=c, ram_mib=r, labels=labels)
            for g in (1, 2) for v in (None, 20 * 1024) for c in (2, 6) for r in (0, 64 * 1024)
            for labels in ((), (("zone", "a"),))]
    index = CandidateIndex(state, asks)
    walks = Walks(index)
    placed: list[tuple] = []  # (group state, positions, demand, host)
    for step in range(data.draw(st.integers(1, 40))):
        op = data.draw(st.sampled_from(["search", "search", "gpu", "cpu", "release"]))
        if op == "search":
            demand = data.draw(st.sampled_from(asks))
            avoid = {f"h{i}" for i in range(n) if data.draw(st.booleans(), label=f"avoid h{i}")} \
                if data.draw(st.booleans()) else set()
            limit = data.draw(st.sampled_from([None, 6, 12]))
            checks, key = ((lambda h, x=limit: (state.cpu_free[h] or 0) > x,), ("more than", limit)) \
                if limit is not None else ((), ())
            remembered = _search(index, state, demand, walks, avoid, checks, key)
            fresh = _search(index, state, demand, None, avoid, checks, key)
            assert remembered == fresh, (step, demand, avoid, limit)
        elif op == "gpu":
            demand = data.draw(st.sampled_from(asks))
            gs = state.groups[data.draw(st.integers(0, n - 1))]
            at = choose_devices(gs, demand)
            if at is not None and state.host_fits(gs.host.name, demand):
                state.claim(gs, at, demand, gs.host.name)
                index.refresh(gs)
                placed.append((gs, at, demand, gs.host.name))
        elif op == "cpu":
            name = f"h{data.draw(st.integers(0, n - 1))}"
            demand = Demand("e", step, "cpu", 0, cpus=data.draw(st.sampled_from([1, 3, 5, 12, 24])))
            if state.host_fits(name, demand):
                state.claim(None, [], demand, name)
                placed.append((None, [], demand, name))
        elif placed:
            gs, at, demand, name = placed.pop(data.draw(st.integers(0, len(placed) - 1)))
            state.release(gs, at, demand, name, 40000)
            if gs is not None:
                index.refresh(gs)
