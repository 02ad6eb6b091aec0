"""A soak of placement on random fleets bigger than the property tests' (3-150 hosts, bench/synthetic.py's
CPU-and-memory workload at loads 0.7-1.6, some fleets of mixed vendors, some its selector workload of three vendors
without CPUs or memory, some with hosts of 2-6 ports; binpack and spread), with some deployments naming a device
size (``gpu_model``), a zone label, manual GPU selection or ``spread: hosts``. Each plan must keep every invariant
(``check_invariants``: no device, host CPUs or memory over, selectors, manual selection and spread honoured, ports
unique, every left-over replica explained over every host). Then, with the lock, what a pull request does to a stack:

- edits (a fifth of the deployments dropped, a fifth of the shared ones asking half their VRAM and a tenth half as
  much again, a fifth asking half or half as much again of their CPUs and memory, manual GPU selections narrowed, a
  tenth of the deployments given a replica more; one host cordoned or taken out of the inventory, on some plans one
  left with half its CPUs and memory, one moved to another zone, one with half its port range): the second plan
  keeps every replica that asks no more, on a host that did not change, where it was (issue #10: "a demand change
  that still fits where the replica is keeps it there"; for one asking more VRAM, checked where it has its device to
  itself), and nothing it starts (a replica placed new or moved, or kept with a changed claim: its container is
  replaced in place) finds a GPU, a port, CPUs or memory taken by what the apply leaves running: departing
  containers (Pulumi creates before it deletes) and what a replica kept with a smaller claim held beyond it (the
  others on its GPUs may start before it is replaced);
- the plan made from its own lock, ``reserved`` included, must be the same plan (the Pulumi program makes it when
  it applies the lock); once the apply is done, the next plan keeps every replica, and the one after changes
  nothing at all (a second ``pulumi up`` replaces nothing);
- on some seeds the deployments split between two stacks sharing the inventory: the second stack is placed around
  what the first stack's lock holds, and the first, planned again with the second's lock, keeps every replica.
  Then the first changes (deployments resized or dropped; on some seeds a host shared by both left with half its
  CPUs and memory) beside the second's lock: nothing it starts finds a GPU, a port, CPUs or memory the second holds
  or its own apply leaves running; and the second, planned again beside the first's new lock as
  ``stack.plan.other_stacks_held`` reads it, starts nothing on what either holds and keeps every replica off the
  shrunk host.

Not collected by pytest: it runs for as long as it is given, from a seed, and prints one JSON line per failure, then
a summary.

    .venv/bin/python tests/soak.py --seconds 600 --seed 5000   # exit status 1 if any plan failed
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import replace
from math import inf
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synthetic import (  # noqa: E402
    mixed_vendors, resource_demands, resource_fleet, selector_demands, synthetic_fleet)
from stack.lock import render_lock  # noqa: E402
from stack.placement import held_beyond, place  # noqa: E402
from tests.test_placement import read_prior_from_text  # noqa: E402
from tests.test_placement_properties import check_invariants  # noqa: E402


def decorate(fleet, demands, rnd: random.Random) -> list:
    """Some deployments constrained as users write them: a device size (``gpu_model: "*-80g"``), a zone label,
    ``spread: hosts`` (for those of several replicas), manual GPU selection of a few hosts' devices (2-8 of
    them, some on hosts of another vendor or none at all). Drawn per deployment, the same for its replicas."""
    if rnd.random() < 0.3:
        return demands
    sizes = sorted({g.model.rsplit("-", 1)[-1] for h in fleet.hosts for g in h.groups})
    devices = [(h.name, d.index) for h in fleet.hosts for g in h.groups for d in g.devices]
    counts = defaultdict(int)
    for d in demands:
        counts[d.deployment] += 1
    drawn: dict[str, dict] = {}
    out = []
    for d in demands:
        ask = drawn.get(d.deployment)
        if ask is None:
            ask = drawn[d.deployment] = {}
            r = rnd.random()
            if d.gpus and sizes and r < 0.12:
                ask["gpu_model"] = f"*-{rnd.choice(sizes)}"
            elif r < 0.2:
                ask["labels"] = (("zone", rnd.choice("abc")),)
            elif d.gpus and devices and r < 0.24:
                host = rnd.choice(devices)[0]
                mine = [x for x in devices if x[0] == host] + rnd.sample(devices, min(len(devices), 4))
                ask["manual"] = tuple(sorted(set(rnd.sample(mine, min(len(mine), rnd.randint(2, 8))))))
            if counts[d.deployment] > 1 and rnd.random() < 0.15:
                ask["spread_hosts"] = True
        out.append(replace(d, **ask) if ask else d)
    return out


def check_beside(fleet, demands, plan, others, starting: dict | None = None, started: set | None = None) -> None:
    """``plan`` and the lock entries ``others`` (departing containers, another stack's) together: no device shared
    with a whole claim or past its VRAM, no port twice on a host, no host past its CPUs or memory, wherever a
    container starts. ``started``: the keys of the plan's replicas whose containers start (None: all); a device or
    port none of them is on is no plan's doing (two locks written apart may claim one alike, and the plan holds
    both). ``starting``: the hosts where some start, each with the least CPUs and memory that a container starting
    there and asking some held beyond its new claim (``others`` lists it: a replica kept with a smaller claim, whose
    own old container is deleted before it starts; inf: none asking any starts there, and one asking none fits on
    a host the inventory put over them); None: every host, (0, 0). A host the inventory now gives fewer CPUs or less
    memory may stay over them while nothing starts there: its containers ran before the change, and run on until
    the apply moves the ones that must go."""
    by_demand = {d.key: d for d in demands}
    hosts = {h.name: h for h in fleet.hosts}
    size = {(h.name, g.vendor): g.vram_mib for h in fleet.hosts for g in h.groups}
    claims = defaultdict(list)  # (host, vendor, device) -> [(who, VRAM or None: whole, whether it starts)]
    ports = defaultdict(list)  # (host, port) -> [(who, whether it starts)]
    cpus = defaultdict(float)
    ram = defaultdict(int)
    for a in plan.assignments:
        d = by_demand[a.key]
        starts = started is None or a.key in started
        for i in a.gpus:
            claims[a.host, a.vendor, i].append((a.key, d.vram_mib, starts))
        ports[a.host, a.port].append((a.key, starts))
        cpus[a.host] += d.cpus
        ram[a.host] += d.ram_mib
    for e in others:
        if e.host not in hosts:
            continue  # a host gone from the inventory: nothing of it is planned
        for i in e.gpus:
            claims[e.host, e.vendor, i].append((f"held {e.key}", e.claim.vram_mib, False))
        if e.port >= 0:  # (-1: what a replica kept in place holds beyond its claim)
            ports[e.host, e.port].append((f"held {e.key}", False))
        cpus[e.host] += e.claim.cpus
        ram[e.host] += e.claim.ram_mib
    for (host, vendor, i), on in claims.items():
        if len(on) > 1 and any(x[2] for x in on):
            assert all(x[1] is not None for x in on), f"{host} {vendor} GPU {i} is taken whole and shared: {on}"
            assert sum(x[1] for x in on) <= size[host, vendor], f"{host} {vendor} GPU {i} is over its VRAM: {on}"
    for (host, port), on in ports.items():
        assert len(on) == 1 or not any(x[1] for x in on), f"{host} port {port} is taken twice: {on}"
    for name, h in hosts.items():
        if starting is not None and name not in starting:
            continue
        own_cpus, own_ram = (0, 0) if starting is None else starting[name]
        if h.cpus is not None and own_cpus != inf:
            assert cpus[name] - own_cpus <= h.cpus - h.reserved_cpus + 1e-9, f"{name} is over its CPUs: {cpus[name]}"
        if h.ram_mib is not None and own_ram != inf:
            assert ram[name] - own_ram <= h.ram_mib - h.reserved_ram_mib, f"{name} is over its memory: {ram[name]} MiB"


def left_running(prior: dict, plan, asks: dict) -> tuple[list, dict, set]:
    """What the apply of ``plan`` (made from the lock entries ``prior``; ``asks``: its demands by key) leaves running
    beside it, as lock entries: the lock's replicas not kept, and what a replica kept with a smaller claim held beyond
    it (its container is replaced in place; the others on its devices may start before it). Then where containers
    start, and whose (``check_beside``'s ``starting`` and ``started``)."""
    now = plan.by_key()
    running = []
    for key, e in prior.items():
        a = now.get(key)
        if a is None or a.status != "kept":
            running.append(e)
            continue
        was, new = e.claim, asks[key].claim
        vram = max(0, was.vram_mib - new.vram_mib) if was.vram_mib and new.vram_mib else 0
        running.append(replace(e, gpus=e.gpus if vram else (), port=-1,
                               claim=replace(was, vram_mib=vram, cpus=max(0, was.cpus - new.cpus),
                                             ram_mib=max(0, was.ram_mib - new.ram_mib))))
    # host -> the least CPUs and memory a container starting there and asking some held beyond its new claim (inf:
    # none asking any starts there; one asking none fits on a host the inventory put over them)
    starting: dict = {}
    started = set()
    for a in plan.assignments:
        if a.status != "kept" or prior[a.key].claim != asks[a.key].claim:
            started.add(a.key)
            was, new = prior[a.key].claim if a.status == "kept" else None, asks[a.key]
            own = (max(0, was.cpus - new.cpus), max(0, was.ram_mib - new.ram_mib)) if was else (0, 0)
            least = starting.get(a.host, (inf, inf))
            starting[a.host] = (min(least[0], own[0] if new.cpus else inf),
                                min(least[1], own[1] if new.ram_mib else inf))
    return running, starting, started


def lock_of(plan):
    """The lock a plan writes (its replicas, and ``reserved``: what its change leaves running until the apply), read
    back as the next plan reads it."""
    return read_prior_from_text(render_lock("soak", plan))


def the_same(before, after, label: str) -> None:
    """``after`` places exactly the replicas ``before`` does, each kept where it was."""
    check_kept(before, after, label=label)
    extra = sorted(set(after.by_key()) - set(before.by_key()))
    assert not extra, f"{extra[:3]} placed {label}, where the plan it was made from left them over"


def check_kept(before, after, keys: set | None = None, label: str = "") -> None:
    """Every replica ``before`` placed (of ``keys`` only, where given) is in ``after``, kept where it was."""
    now = after.by_key()
    for key, b in before.by_key().items():
        if keys is not None and key not in keys:
            continue
        a = now.get(key)
        assert a is not None, f"{key} was placed on {b.host} and is left over {label}"
        assert (a.status, a.host, a.gpus, a.port) == ("kept", b.host, b.gpus, b.port), \
            f"{key} moved from {b.host} {b.gpus} :{b.port} to {a.host} {a.gpus} :{a.port} ({a.status}) {label}"


def edits(fleet, demands, strategy: str, first, rnd: random.Random, more: random.Random) -> None:
    """The second plan after edits, then the plan from its own lock, and the next two (see the module's docstring)."""
    prior = lock_of(first).replicas
    deployments = sorted({d.deployment for d in demands})
    slices = {d.deployment for d in demands if d.vram_mib}
    dropped = {x for x in deployments if rnd.random() < 0.2}
    halved = {x for x in deployments if rnd.random() < 0.2}
    grown = {x for x in deployments if x not in halved and rnd.random() < 0.1 and x in slices}
    rescaled = {x: rnd.choice([0.5, 1.5]) for x in deployments if rnd.random() < 0.2}  # CPUs and memory
    # manual GPU selections narrowed to every other device they named; deployments given one replica more
    selections = {d.deployment: d.manual for d in demands if d.manual}
    reselected = {x: m[::2] for x, m in sorted(selections.items()) if x not in dropped and more.random() < 0.3}
    scaled_up = [x for x in deployments if x not in dropped and more.random() < 0.1]
    edited = []
    for d in demands:
        if d.deployment in dropped:
            continue
        if d.deployment in halved and d.vram_mib:
            v = max(1024, d.vram_mib // 2 // 1024 * 1024)
            d = replace(d, vram_mib=v, min_vram_mib=min(d.min_vram_mib, v))
        if d.deployment in grown and d.vram_mib:  # (a shared slice: one GPU)
            v = d.vram_mib * 3 // 2 // 1024 * 1024
            d = replace(d, vram_mib=v, min_vram_mib=max(d.min_vram_mib, v))
        if d.deployment in rescaled:
            k = rescaled[d.deployment]
            d = replace(d, cpus=d.cpus * k, ram_mib=int(d.ram_mib * k) // 1024 * 1024)
        if d.deployment in reselected:
            d = replace(d, manual=reselected[d.deployment])
        edited.append(d)
    for x in scaled_up:  # one replica more, alike
        last = max((d for d in edited if d.deployment == x), key=lambda d: d.replica)
        edited.append(replace(last, replica=last.replica + 1))
    # hosts: one cordoned or taken out of the inventory; on some plans one with half its CPUs and memory, one
    # moved to another zone
    gone = rnd.choice(fleet.hosts).name
    removed = rnd.random() < 0.3
    shrunk = rnd.choice(fleet.hosts).name if rnd.random() < 0.2 else None
    moved = rnd.choice(fleet.hosts).name if rnd.random() < 0.15 else None
    narrowed = more.choice(fleet.hosts).name if more.random() < 0.15 else None  # half its port range
    hosts = []
    for h in fleet.hosts:
        if h.name == gone:
            if not removed:
                hosts.append(replace(h, state="cordoned"))
            continue
        if h.name == shrunk and h.cpus is not None:
            h = replace(h, cpus=max(h.reserved_cpus + 1, h.cpus // 2), ram_mib=max(h.reserved_ram_mib + 1024,
                                                                                 h.ram_mib // 2))
        if h.name == moved:
            h = replace(h, labels=(("zone", "d"),))
        if h.name == narrowed:
            h = replace(h, port_end=h.port_start + (h.port_end - h.port_start) // 2)
        hosts.append(h)
    fleet2 = replace(fleet, hosts=tuple(hosts))
    second = place(fleet2, edited, prior, strategy=strategy)
    check_invariants(fleet2, edited, second)
    asks = {d.key: d for d in edited}
    touched = {gone, shrunk, moved, narrowed}
    # every replica asking no more than it did, on a host that did not change, stays where it is
    was = {d.key: d for d in demands}
    same_or_less = {k for k, d in asks.items() if k in was and d.cpus <= was[k].cpus and d.ram_mib <= was[k].ram_mib
                    and (d.vram_mib is None or d.vram_mib <= was[k].vram_mib) and d.deployment not in reselected}
    check_kept(replace(first, assignments=tuple(a for a in first.assignments if a.host not in touched)), second,
               keys=same_or_less, label="asking no more, on a host that did not change")
    tenants = defaultdict(list)  # device -> the replicas on it
    for a in first.assignments:
        for i in a.gpus:
            tenants[a.host, a.vendor, i].append(a.key)
    # a slice asking more that still fits where it is stays there: one alone on its device, say
    sizes = {(h.name, g.vendor): g.vram_mib for h in fleet.hosts for g in h.groups}
    alone = [a for a in first.assignments if a.key in asks and asks[a.key].deployment in grown
             and a.host not in touched and asks[a.key].deployment not in rescaled and a.deployment not in reselected
             and asks[a.key].vram_mib <= sizes[a.host, a.vendor] and len(tenants[a.host, a.vendor, a.gpus[0]]) == 1]
    check_kept(replace(first, assignments=tuple(alone)), second, label="asking more VRAM that its device still has")
    check_beside(fleet2, edited, second, *left_running(prior, second, asks))
    # the same stack planned from its own lock, as the Pulumi program does when it applies it: the same plan
    lock2 = lock_of(second)
    the_same(second, place(fleet2, edited, lock2.replicas, strategy=strategy, reserved=lock2.reserved),
             "when planned again from its own lock")
    # the next change, nothing edited, once the apply removed what it left running: nothing placed moves
    third = place(fleet2, edited, lock2.replicas, strategy=strategy)
    check_invariants(fleet2, edited, third)
    check_kept(second, third, label="when planned again once the apply is done")
    lock3 = lock_of(third)
    assert not lock3.reserved, f"{lock3.reserved[:2]} reserved by a plan where nothing changed"
    the_same(third, place(fleet2, edited, lock3.replicas, strategy=strategy), "when planned a third time")


def shared(fleet, demands, strategy: str, rnd: random.Random) -> None:
    """Two stacks on one inventory: ``b`` placed around what ``a``'s lock holds, then ``a`` again beside ``b``, then
    ``a`` changed beside ``b``, then ``b`` again beside that."""
    mine = {x for x in sorted({d.deployment for d in demands}) if rnd.random() < 0.5}
    a_demands = [d for d in demands if d.deployment in mine]
    b_demands = [d for d in demands if d.deployment not in mine]
    a = place(fleet, a_demands, strategy=strategy)
    a_lock = lock_of(a).replicas
    b = place(fleet, b_demands, strategy=strategy, held={"a": tuple(a_lock.values())})
    check_invariants(fleet, b_demands, b)
    check_beside(fleet, b_demands, b, list(a_lock.values()))
    b_lock = lock_of(b).replicas
    again = place(fleet, a_demands, a_lock, strategy=strategy, held={"b": tuple(b_lock.values())})
    check_kept(a, again, label="when its stack is planned again beside another stack")
    # ``a``'s next change beside ``b``'s lock: deployments resized (VRAM, CPUs, memory) or dropped
    resized = {}
    for x in sorted({d.deployment for d in a_demands}):
        if rnd.random() < 0.3:
            resized[x] = (rnd.choice([0.5, 1, 1.5]), rnd.choice([0.5, 1, 1.5]))
    dropped = {x for x in sorted(mine) if rnd.random() < 0.1}
    edited = []
    for d in a_demands:
        if d.deployment in dropped:
            continue
        if d.deployment in resized:
            v, k = resized[d.deployment]
            if d.vram_mib is not None:  # (a device at least its size still asked: as edits() does)
                nv = max(1024, int(d.vram_mib * v) // 1024 * 1024)
                d = replace(d, vram_mib=nv, min_vram_mib=min(d.min_vram_mib, nv) if nv < d.vram_mib else
                            max(d.min_vram_mib, nv))
            d = replace(d, cpus=d.cpus * k, ram_mib=int(d.ram_mib * k) // 1024 * 1024)
        edited.append(d)
    # and on some seeds one host of the inventory they share left with half its CPUs and memory meanwhile
    shrunk = rnd.choice(fleet.hosts) if rnd.random() < 0.4 else None
    if shrunk is not None and shrunk.cpus is not None:
        fleet = replace(fleet, hosts=tuple(
            replace(h, cpus=max(h.reserved_cpus + 1, h.cpus // 2),
                    ram_mib=max(h.reserved_ram_mib + 1024, h.ram_mib // 2)) if h is shrunk else h for h in fleet.hosts))
    a2 = place(fleet, edited, a_lock, strategy=strategy, held={"b": tuple(b_lock.values())})
    check_invariants(fleet, edited, a2)
    running, starting, started = left_running(a_lock, a2, {d.key: d for d in edited})
    check_beside(fleet, edited, a2, running + list(b_lock.values()), starting, started)
    # then ``b`` again, beside ``a``'s new lock as stack.plan.other_stacks_held reads it (its replicas, and what its
    # change leaves running until the apply): nothing it starts lands on what either holds, and nothing of ``b`` off
    # the shrunk host moves (``a``'s change took none of its room)
    lock2 = lock_of(a2)
    beyond = (held_beyond(r, lock2.replicas.get(r.key)) for r in lock2.reserved)
    a_held = tuple(lock2.replicas.values()) + tuple(x for x in beyond if x is not None)
    b2 = place(fleet, b_demands, b_lock, strategy=strategy, held={"a": a_held})
    check_invariants(fleet, b_demands, b2)
    running, starting, started = left_running(b_lock, b2, {d.key: d for d in b_demands})
    check_beside(fleet, b_demands, b2, running + list(a_held), starting, started)
    away = None if shrunk is None else shrunk.name
    check_kept(replace(b, assignments=tuple(x for x in b.assignments if x.host != away)), b2,
               label="beside another stack's change")


def one(seed: int) -> dict:
    """The plans drawn from ``seed``; what was drawn, and the failure if any (``error``)."""
    rnd = random.Random(seed)
    hosts = rnd.choice([3, 5, 8, 12, 20, 40, 80, 150])
    load = rnd.choice([0.7, 1.0, 1.3, 1.6])
    strategy = rnd.choice(["binpack", "binpack", "spread"])
    fleet = resource_fleet(hosts, seed)
    demands = resource_demands(fleet, seed + 1, load)
    if rnd.random() < 0.4:
        fleet, demands = mixed_vendors(fleet, demands, seed + 2)
    more = random.Random(f"{seed}:more")  # (a stream of its own: what seeds drew before stays drawn)
    if more.random() < 0.2:  # the selector workload: three vendors, sizes and zones asked, no CPUs or memory declared
        fleet = synthetic_fleet(hosts, seed)
        demands = selector_demands(int(hosts * 8 * load * more.choice([0.4, 0.7])), seed + 1)
    demands = decorate(fleet, demands, rnd)
    few_ports = more.random() < 0.25  # hosts run out of ports before GPUs
    if few_ports:
        fleet = replace(fleet, hosts=tuple(replace(h, port_end=h.port_start + more.choice([1, 3, 5]))
                                           for h in fleet.hosts))
    drawn = {"seed": seed, "hosts": hosts, "load": load, "strategy": strategy, "replicas": len(demands),
             **({"few_ports": True} if few_ports else {})}
    try:
        first = place(fleet, demands, strategy=strategy)
        drawn["placed"] = len(first.assignments)
        check_invariants(fleet, demands, first)
        edits(fleet, demands, strategy, first, rnd, more)
        if rnd.random() < 0.3:
            drawn["shared"] = True
            shared(fleet, demands, strategy, rnd)
    except AssertionError as e:
        return {**drawn, "error": str(e)[:500]}
    except Exception:  # a crash is a failure too, with where it happened
        return {**drawn, "error": traceback.format_exc()[-1500:]}
    return drawn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=5000)
    args = ap.parse_args()
    end, seed, plans, failed = time.monotonic() + args.seconds, args.seed, 0, 0
    while time.monotonic() < end:
        got = one(seed)
        plans += 1
        if "error" in got:
            failed += 1
            print(json.dumps(got), flush=True)
        seed += 1
    print(json.dumps({"plan_pairs": plans, "failed": failed, "seeds": [args.seed, seed - 1]}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
