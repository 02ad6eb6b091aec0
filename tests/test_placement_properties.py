"""Properties placement must always have, over random fleets and demands (hypothesis)."""
from __future__ import annotations

import fnmatch
import random
from collections import defaultdict
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.vendors import VENDORS
from stack.lock import render_lock
from stack.placement import Demand, place

from .fleets import fleet, gpus, host
from .test_placement import read_lock_from_text

GPU_KINDS = [("nvidia", "H100", 80), ("nvidia", "A100", 40), ("nvidia", "L4", 24), ("amd", "MI300X", 192),
             ("ascend", "910B", 64)]


@st.composite
def fleets(draw):
    n = draw(st.integers(1, 10))
    hosts = []
    for i in range(n):
        kinds = draw(st.lists(st.sampled_from(range(len(GPU_KINDS))), max_size=2, unique=True))
        groups = []
        for k in kinds:
            vendor, model, gib = GPU_KINDS[k]
            if any(g.vendor == vendor for g in groups):
                continue  # device indices are per vendor
            groups.append(gpus(vendor, model, gib, draw(st.integers(1, 8))))
        sized = draw(st.booleans())  # some hosts declare CPUs and memory, some do not
        hosts.append(host(f"h{i:02d}", *groups, labels={"zone": draw(st.sampled_from("ab"))},
                          state=draw(st.sampled_from(["active"] * 5 + ["cordoned"])),
                          ports=(40000, 40000 + draw(st.integers(0, 6))),
                          cpus=draw(st.sampled_from([8, 16, 64])) if sized else None,
                          ram_gib=draw(st.sampled_from([32, 128, 512])) if sized else None,
                          reserved=(draw(st.sampled_from([0, 2])), draw(st.sampled_from([0, 8]))) if sized
                          else (0, 0)))
    return fleet(*hosts)


@st.composite
def demand_sets(draw):
    out = []
    for i in range(draw(st.integers(1, 8))):
        fw = draw(st.sampled_from(["cuda", "cuda", "rocm", "cann", "cpu"]))
        n = 0 if fw == "cpu" else draw(st.integers(1, 4))
        vram = None if n == 0 or draw(st.booleans()) else draw(st.sampled_from([8, 20, 30, 50])) * 1024
        min_vram = 0 if vram is not None else draw(st.sampled_from([0, 0, 40 * 1024]))
        labels = (("zone", draw(st.sampled_from("ab"))),) if draw(st.booleans()) else ()
        model = draw(st.sampled_from([None, None, "h100", "*l4*", ("*H100*", "*L4*")])) if fw == "cuda" else None
        spread = draw(st.booleans())
        cpus = draw(st.sampled_from([0, 0, 0.5, 4, 12]))
        ram = draw(st.sampled_from([0, 0, 16, 100])) * 1024
        for r in range(draw(st.integers(1, 4))):
            out.append(Demand(f"d{i}", r, fw, n, vram, vram or min_vram, labels, None, model, None, spread,
                              cpus, ram))
    return out


def check_invariants(f, demands, p):
    by_demand = {x.key: x for x in demands}
    assert len(p.assignments) + len(p.unplaced) == len(demands)
    hosts = {h.name: h for h in f.hosts}
    per_device = defaultdict(list)
    ports = defaultdict(list)
    for a in p.assignments:
        dem = by_demand[a.key]
        h = hosts[a.host]
        assert h.active
        assert all(dict(h.labels).get(k) == v for k, v in dem.labels)
        ports[a.host].append(a.port)
        assert h.port_start <= a.port <= h.port_end
        assert len(a.gpus) == dem.gpus
        if dem.gpus == 0:
            assert a.vendor is None
            continue
        group = next(g for g in h.groups if g.vendor == a.vendor)
        assert VENDORS[a.vendor].framework == dem.framework
        assert group.vram_mib >= dem.min_vram_mib
        if dem.gpu_model:
            globs = (dem.gpu_model,) if isinstance(dem.gpu_model, str) else dem.gpu_model
            assert any(fnmatch.fnmatchcase(group.model.lower(), g.lower()) for g in globs)
        assert {dev.index for dev in group.devices} >= set(a.gpus)
        if dem.manual is not None:  # manual GPU selection: only the devices it names
            assert {(a.host, i) for i in a.gpus} <= set(dem.manual), f"{a.key} is on GPUs it did not select"
        for i in a.gpus:
            per_device[(a.host, a.vendor, i)].append((dem, group.vram_mib))
    for key, claims in per_device.items():
        wholes = [c for c in claims if c[0].vram_mib is None]
        if wholes:
            assert len(claims) == 1, f"{key} is exclusive but shared: {claims}"
        else:
            assert sum(c[0].vram_mib for c in claims) <= claims[0][1], f"{key} over-committed"
    for h, used in ports.items():
        assert len(used) == len(set(used)), f"duplicate port on {h}"
    for name, h in hosts.items():  # no host over its CPUs or memory (less what the system keeps)
        mine = [by_demand[a.key] for a in p.assignments if a.host == name]
        if h.cpus is not None:
            assert sum(d.cpus for d in mine) <= h.cpus - h.reserved_cpus + 1e-9, f"{name} over its CPUs"
        if h.ram_mib is not None:
            assert sum(d.ram_mib for d in mine) <= h.ram_mib - h.reserved_ram_mib, f"{name} over its memory"
    spread_hosts = defaultdict(list)
    for a in p.assignments:
        if by_demand[a.key].spread_hosts:
            spread_hosts[a.deployment].append(a.host)
    for dep, hs in spread_hosts.items():
        assert len(hs) == len(set(hs)), f"{dep} has spread: hosts but shares a host"
    for u in p.unplaced:
        assert sum(u.rejected.values()) == len(f.hosts)


@settings(max_examples=300, deadline=None)
@given(f=fleets(), demands=demand_sets(), strategy=st.sampled_from(["binpack", "spread"]))
def test_no_overcommit_and_constraints_hold(f, demands, strategy):
    check_invariants(f, demands, place(f, demands, strategy=strategy))


@settings(max_examples=300, deadline=None)
@given(f=fleets(), demands=demand_sets(), strategy=st.sampled_from(["binpack", "spread"]))
def test_the_index_driven_search_never_misses_a_place_the_filters_accept(f, demands, strategy):
    """The explanations run every filter over every host for what is left over; should they find a place,
    the search (the index's classes, and the views that merge classes split by label values for replicas
    that select no label) missed one."""
    from stack.placement.engine import _Run

    arbiter = []
    saved = _Run._place_at
    _Run._place_at = lambda self, *a: arbiter.append(a[0].key) or saved(self, *a)
    try:
        p = place(f, demands, strategy=strategy)
    finally:
        _Run._place_at = saved
    assert not arbiter
    check_invariants(f, demands, p)


@settings(max_examples=200, deadline=None)
@given(f=fleets(), demands=demand_sets(), strategy=st.sampled_from(["binpack", "spread"]))
def test_a_walk_class_by_class_explains_as_a_walk_host_by_host(f, demands, strategy):
    """The explanations' walk settles the hosts of a class a static filter turns away together (engine.walk
    with the index); asked host by host instead (without it), every filter must count the same hosts, say the
    same words and offer the same first place, on the state a plan leaves (some devices and ports taken)."""
    from stack.placement.engine import _best_order
    from stack.placement.explain import explain, walk

    run = _best_order(f, demands, strategy=strategy)
    for d in demands:
        by_class = explain(f, run.state, d, walk(f, run.state, d, run.index, {}))
        by_host = explain(f, run.state, d, walk(f, run.state, d))
        assert by_class[:3] == by_host[:3], d
        assert (by_class[3] and (by_class[3][0].name, by_class[3][1])) == \
            (by_host[3] and (by_host[3][0].name, by_host[3][1])), d


def reordered(f, demands, seed: int):
    """The same fleet and replicas, hosts and replicas in another order."""
    rnd = random.Random(seed)
    hosts, ds = list(f.hosts), list(demands)
    rnd.shuffle(hosts)
    rnd.shuffle(ds)
    return fleet(*hosts), ds


@settings(max_examples=150, deadline=None)
@given(f=fleets(), demands=demand_sets(), seed=st.integers(0, 1000), strategy=st.sampled_from(["binpack", "spread"]))
def test_same_input_in_any_order_gives_the_same_plan(f, demands, seed, strategy):
    base = place(f, demands, strategy=strategy)
    again = place(*reordered(f, demands, seed), strategy=strategy)
    assert render_lock("s", again) == render_lock("s", base)
    assert again.unplaced == base.unplaced


@settings(max_examples=200, deadline=None)
@given(f=fleets(), demands=demand_sets(), extra=demand_sets(), seed=st.integers(0, 1000),
       strategy=st.sampled_from(["binpack", "spread"]))
def test_a_still_valid_locked_replica_never_moves(f, demands, extra, seed, strategy):
    first = place(f, demands, strategy=strategy)
    prior = read_lock_from_text(render_lock("s", first))
    rnd = random.Random(seed)
    # edits that never invalidate a placed replica: drop some demands, add new ones, add a host
    kept = [x for x in demands if rnd.random() > 0.3]
    added = [replace(x, deployment="new" + x.deployment) for x in extra]
    # ... and cordon one host: only its replicas may move
    cordoned = rnd.choice(f.hosts).name
    f2 = fleet(*(replace(h, state="cordoned") if h.name == cordoned else h for h in f.hosts),
               host("zz-new", gpus("nvidia", "H100", 80, 8)))
    second = place(f2, kept + added, prior, strategy=strategy)
    check_invariants(f2, kept + added, second)
    before = first.by_key()
    for a in second.assignments:
        if a.key in before:
            b = before[a.key]
            if b.host == cordoned:
                assert (a.status, a.reason) == ("moved", "host_cordoned")
            else:
                assert (a.status, a.host, a.gpus, a.port) == ("kept", b.host, b.gpus, b.port)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.lists(st.tuples(st.sampled_from(["lowest", "take", "give_back"]), st.integers(0, 12)),
                                   max_size=60))
def test_ports_hand_out_the_lowest_free_port(width, ops):
    """Kept replicas take their ports, new ones get the lowest free port, trades and repairs give ports back:
    whatever the order, ``lowest`` is the lowest port of the range not in use (None when all are)."""
    from stack.placement.state import Ports

    start = 40000
    ports, used = Ports(start, start + width, set()), set()
    for op, k in ops:
        port = start + k
        if op == "lowest":
            free = [p for p in range(start, start + width + 1) if p not in used]
            got = ports.lowest()
            assert got == (free[0] if free else None)
            if got is not None:
                used.add(got)
        elif op == "take":
            assert ports.take(port) == (start <= port <= start + width and port not in used)
            if start <= port <= start + width:
                used.add(port)
        elif port in used:
            ports.give_back(port)
            used.discard(port)
        assert ports.free_count() == width + 1 - len(used)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 5), st.sampled_from([1, 2]),
                          st.sampled_from([0, 4]), st.booleans()), max_size=30))
def test_the_fresh_order_asked_once_per_run_of_replicas_is_the_order_of_every_replica(rows):
    """The fresh pass sorts by a key asked once per run of replicas alike but for their number; that must be
    the order of sorting each replica by the key and its number, also when replicas of one deployment differ
    (a hand-made list: the key may tie them, or part them)."""
    from stack.placement.order import biggest_first, sorted_by_runs

    demands = sorted({(dep, r): Demand(dep, r, "cuda", g, None, cpus=c, spread_hosts=s)
                      for dep, r, g, c, s in rows}.values(), key=lambda d: (d.deployment, d.replica))
    for key in (lambda d: biggest_first(d)[:-1], lambda d: (d.gpus,) + biggest_first(d)[-2:-1]):
        assert sorted_by_runs(demands, key) == sorted(demands, key=lambda d: key(d) + (d.replica,))


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 8), st.sampled_from([24576, 81920]),
       st.lists(st.tuples(st.sampled_from(["whole", "shared"]), st.integers(1, 3),
                          st.sampled_from([1024, 8192, 20480, 40960, 81920])), max_size=12),
       st.integers(1, 4), st.sampled_from([None, 1024, 8192, 20480, 40960, 81920]))
def test_the_free_vram_filters_count_agrees_with_choosing_devices(n, size, claims, gpus, vram):
    """The free-VRAM filter counts the devices a replica could take (``devices_fit``) where the engine
    chooses them (``choose_devices``): after any claims, both say the same; and a one-GPU claim takes
    the device the full best-fit order puts first (the shortcut skips the sort)."""
    from inventory.fleet import Device, DeviceGroup
    from stack.placement.state import GroupState, choose_devices, devices_fit

    gs = GroupState(0, None, 0, DeviceGroup("nvidia", "X", size, tuple(Device(i) for i in range(n))))
    for kind, g, v in claims:  # claims that fit, placed as the engine would place them
        d = Demand("c", 0, "cuda", g, None if kind == "whole" else min(v, size))
        at = choose_devices(gs, d)
        if at is not None:
            for i in at:
                gs.free[i] = 0 if d.vram_mib is None else gs.free[i] - d.vram_mib
                gs.exclusive[i] = gs.exclusive[i] or d.vram_mib is None
                gs.claims[i] += 1
    demand = Demand("d", 0, "cuda", gpus, None if vram is None else min(vram, size))
    chosen = choose_devices(gs, demand)
    assert devices_fit(gs, demand) == (chosen is not None)
    if chosen is not None and demand.vram_mib is not None:
        order = sorted((i for i in range(n) if not gs.exclusive[i] and gs.free[i] >= demand.vram_mib),
                       key=lambda i: (gs.claims[i] == 0, gs.free[i], i))
        assert chosen == sorted(order[:gpus])
