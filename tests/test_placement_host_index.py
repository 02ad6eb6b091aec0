"""The host index (index.HostIndex) answers what a scan of every host would: for a replica that needs no GPU,
the ranker's first host that is active, has the labels it asks, a free port, and the CPUs and memory it asks,
hosts without GPUs before hosts with them, skipping the hosts it avoids.

The index files each host by the CPU and memory levels it can still hold, so a search reads only the lists
that can hold its ask. The test takes and gives back replicas the ways a plan does, on hosts with and without
declared CPUs and memory, with the plan's asks and with CPUs and memory no replica of the plan asks, and compares
every answer with the scan.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stack.placement import Demand
from stack.placement.index import HostIndex
from stack.placement.rankers import RANKERS
from stack.placement.state import FleetState, needs

from .fleets import fleet, gpus, host

CPUS = st.sampled_from([None, 4, 8, 16, 32])
RAM_GIB = st.sampled_from([None, 16, 64, 128])


@st.composite
def _hosts(draw):
    made = []
    for i in range(draw(st.integers(1, 10))):
        groups = (gpus("nvidia", "L4", 24, 2),) if draw(st.booleans()) else ()
        made.append(host(f"h{i}", *groups, cpus=draw(CPUS), ram_gib=draw(RAM_GIB),
                         labels={"zone": draw(st.sampled_from("ab"))},
                         state=draw(st.sampled_from(["active", "active", "active", "cordoned"])),
                         ports=(40000, 40000 + draw(st.integers(0, 3)))))
    return fleet(*made)


ASK = st.tuples(st.sampled_from([0, 1, 2, 4, 8]), st.sampled_from([0, 4096, 16384, 65536]),
                st.sampled_from([(), (("zone", "a"),), (("zone", "b"),)]), st.booleans())


def _demand(name: str, ask: tuple, replica: int = 0) -> Demand:
    cpus, ram_mib, labels, spread = ask
    return Demand(name, replica, "cpu", 0, labels=labels, cpus=cpus, ram_mib=ram_mib, spread_hosts=spread)


def _scan(index: HostIndex, index_asks: list[Demand], state: FleetState, demand: Demand, avoid) -> str | None:
    """Every host, in the index's order, through every check the index makes (a host that cannot hold the
    plan's smallest ask is never filed, whatever is asked)."""
    least_cpu = min(needs(d.cpus, d.ram_mib)[0] for d in index_asks)
    least_ram = min(needs(d.cpus, d.ram_mib)[1] for d in index_asks)
    need_cpu, need_ram = needs(demand.cpus, demand.ram_mib)
    asked = dict(demand.labels)
    for with_gpus in (False, True):
        fits = []
        for h in state.fleet.hosts:
            cpu, ram = state.cpu_free[h.name], state.ram_free[h.name]
            if (not h.active or bool(h.groups) != with_gpus or h.name in avoid
                    or any(h.label_map.get(k) != v for k, v in asked.items())
                    or not state.has_free_port(h.name)
                    or (demand.spread_hosts and state.runs(h.name, demand.deployment))
                    or (cpu is not None and (cpu < least_cpu or cpu < need_cpu))
                    or (ram is not None and (ram < least_ram or ram < need_ram))):
                continue
            fits.append((index._rank(h.name), h.name))
        if fits:
            return min(fits)[1]
    return None


@settings(max_examples=300, deadline=None)
@given(f=_hosts(), asks=st.lists(ASK, min_size=1, max_size=4), steps=st.lists(
    st.tuples(st.integers(0, 5), st.booleans(), ASK, st.booleans()), min_size=1, max_size=25),
    ranker=st.sampled_from(["binpack", "spread"]))
def test_the_host_index_answers_what_a_scan_of_every_host_does(f, asks, steps, ranker):
    state = FleetState(f)
    plan = [_demand(f"d{i}", ask) for i, ask in enumerate(asks)]
    index = HostIndex(state, plan, RANKERS[ranker])
    state.on_change = index.refresh
    placed: list[tuple[Demand, str, int]] = []
    for n, (which, own_ask, other, give_back) in enumerate(steps):
        if give_back and placed:  # a replica taken back: its host holds more again
            demand, name, port = placed.pop(which % len(placed))
            state.release(None, [], demand, name, port)
            continue
        # one of the plan's asks, or CPUs and memory it does not ask (the index is exact for those too)
        base = plan[which % len(plan)]
        demand = _demand(base.deployment, (base.cpus, base.ram_mib, base.labels, base.spread_hosts) if own_ask
                         else (other[0], other[1], base.labels, base.spread_hosts), replica=n)
        avoid = state.hosts_running(demand.deployment) if which % 2 else frozenset()
        got = index.best(demand, avoid)
        assert got == _scan(index, plan, state, demand, avoid)
        if got is not None:
            port = state.ports[got].lowest()  # (handed out: taken)
            assert port is not None
            state.claim(None, [], demand, got)
            placed.append((demand, got, port))


def test_a_host_filed_at_a_level_no_host_had_before_is_found():
    """A search reads the lists of its levels, kept from one search to the next; a list made since (a host
    fell to a level no host was at) is read too."""
    f = fleet(host("c0", cpus=16), host("c1", cpus=16))
    small, big = _demand("small", (2, 0, (), False)), _demand("big", (8, 0, (), False))
    state = FleetState(f)
    index = HostIndex(state, [small, big], RANKERS["binpack"])
    state.on_change = index.refresh

    def place(demand: Demand) -> str:
        got = index.best(demand, frozenset())
        assert got is not None and state.ports[got].lowest() is not None
        state.claim(None, [], demand, got)
        return got

    assert place(big) == "c0"  # (a tie: the lower name)
    assert place(small) == "c0"  # the busiest host; 6 CPUs left: it now holds the small ask only
    assert place(small) == "c0"  # still the busiest, in a list the first search of a small ask did not read
    assert place(big) == "c1"
