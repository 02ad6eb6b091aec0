"""Transitions between plans: nothing new lands on a GPU or port a container still holds.

Pulumi creates new containers before it deletes removed ones (and a replica moving to another
host is created there first), so for the length of one `pulumi up` the old containers of every
departing replica still hold their GPUs and ports. Over random sequences of edits (scale, add,
remove and rename deployments, cordon and remove hosts), each plan is computed from the lock
the previous one wrote, as `gpufleet lock` and the program do, and every device and port is
checked against the containers present during the apply.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.lock import lock_matches, read_prior, render_lock
from stack.placement import Demand, place

from .fleets import fleet, gpus, host

HOSTS = [host("h1", gpus("nvidia", "H100", 80, 2), ports=(40000, 40004)),
         host("h2", gpus("nvidia", "H100", 80, 2), ports=(40000, 40004)),
         host("h3", gpus("nvidia", "L4", 24, 2), ports=(40000, 40004)),
         host("c1", ports=(40000, 40003))]

edits = st.lists(st.tuples(st.sampled_from(["scale", "add", "remove", "rename", "cordon", "uncordon",
                                            "remove_host", "resize"]),
                           st.integers(0, 7), st.integers(0, 3)), min_size=1, max_size=8)


def _demands(deployments: dict) -> list[Demand]:
    out = []
    for name, (gpus_n, vram, replicas) in sorted(deployments.items()):
        fw = "cpu" if gpus_n == 0 else "cuda"
        for r in range(replicas):
            out.append(Demand(name, r, fw, gpus_n, vram if gpus_n else None, vram or 0))
    return out


def _lock_text(placement) -> str:
    return render_lock("t", placement)


def _prior(tmp_path, text: str):
    path = tmp_path / "t.lock.yaml"
    path.write_text(text)
    return read_prior(path, "t.lock.yaml", "t")


def _check_apply(fleet_now, placement, departing) -> None:
    """Kept + new replicas + departing containers never over-commit a device or share a port."""
    hosts = {h.name: h for h in fleet_now.hosts}
    size = {(h.name, g.vendor, d.index): g.vram_mib for h in fleet_now.hosts for g in h.groups for d in g.devices}
    whole = defaultdict(int)
    used = defaultdict(int)
    claims = defaultdict(int)
    ports = defaultdict(int)
    entries = [(a.host, a.vendor, a.gpus, a.claim.vram_mib, a.port) for a in placement.assignments]
    entries += [(d.host, d.vendor, d.gpus, d.claim.vram_mib, d.port) for d in departing if d.host in hosts]
    for host_name, vendor, gpu_list, vram, port in entries:
        ports[(host_name, port)] += 1
        for g in gpu_list:
            key = (host_name, vendor, g)
            if key not in size:
                continue  # a device the inventory no longer lists: nothing can land there
            claims[key] += 1
            if vram is None:
                whole[key] += 1
            else:
                used[key] += vram
    for key, n in whole.items():
        assert n == 1 and claims[key] == 1, f"{key} is claimed whole while {claims[key] - 1} other claim(s) hold it"
    for key, mib in used.items():
        assert mib <= size[key], f"{key}: {mib} MiB claimed of {size[key]}"
    for key, n in ports.items():
        assert n == 1, f"port {key} is held by {n} containers"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=edits)
def test_no_new_replica_lands_on_what_a_departing_container_holds(tmp_path, steps):
    deployments = {"a": (1, None, 2), "b": (1, 20 * 1024, 3), "c": (0, None, 2)}
    hosts = list(HOSTS)
    text = _lock_text(place(fleet(*hosts), _demands(deployments)))
    counter = 0
    for op, i, n in steps:
        names = sorted(deployments)
        name = names[i % len(names)] if names else None
        if op == "scale" and name:
            g, v, _ = deployments[name]
            deployments[name] = (g, v, n)
        elif op == "add":
            counter += 1
            deployments[f"n{counter}"] = [(1, None, n + 1), (2, None, 1), (1, 30 * 1024, n + 1), (0, None, n)][i % 4]
        elif op == "remove" and name:
            del deployments[name]
        elif op == "rename" and name:
            counter += 1
            deployments[f"r{counter}"] = deployments.pop(name)
        elif op == "resize" and name:
            g, v, r = deployments[name]
            deployments[name] = (g, None if v else 20 * 1024, r) if g else (g, v, r)
        elif op in ("cordon", "uncordon"):
            k = i % len(hosts)
            hosts[k] = replace(hosts[k], state="cordoned" if op == "cordon" else "active")
        elif op == "remove_host" and len(hosts) > 1:
            hosts.pop(i % len(hosts))
        fleet_now = fleet(*hosts)
        prior = _prior(tmp_path, text)
        plan = place(fleet_now, _demands(deployments), prior.replicas, reserved=prior.reserved)
        # during the up that applies this plan: every container of the prior lock still exists
        _check_apply(fleet_now, plan, plan.departing)
        # `gpufleet lock` then `pulumi up`: the program plans again from the new lock. Every replica the
        # lock placed stays exactly there, the departing containers are held through the lock's
        # reserved entries, and a replica left unplaced only by a reservation may now be placed
        text = _lock_text(plan)
        again_prior = _prior(tmp_path, text)
        again = place(fleet_now, _demands(deployments), again_prior.replicas, reserved=again_prior.reserved)
        placed_again = {a.key: (a.host, a.gpus, a.port) for a in again.assignments}
        for a in plan.assignments:
            assert placed_again[a.key] == (a.host, a.gpus, a.port)
        assert again.departing == ()  # the lock it plans from is this placement
        if not plan.unplaced:
            assert lock_matches(again_prior, again)
        _check_apply(fleet_now, again, again_prior.reserved)


def test_scale_down_and_add_does_not_reuse_the_departing_gpu(tmp_path):
    """The issue's case: one deployment scales down, another is added, in one change."""
    f = fleet(host("h1", gpus("nvidia", "H100", 80, 2)))
    first = place(f, _demands({"a": (1, None, 2)}))
    prior = _prior(tmp_path, _lock_text(first))
    second = place(f, _demands({"a": (1, None, 1), "b": (1, None, 1)}), prior.replicas, reserved=prior.reserved)
    gone = {d.key: d for d in second.departing}
    assert set(gone) == {"a/1"}
    assert [u.key for u in second.unplaced] == ["b/0"]  # a/1's container still holds the second GPU
    assert "b/0" not in second.by_key()
    # after that up, the next plan releases the reservation and b lands on the freed GPU
    text = _lock_text(second)
    assert '"reserved"' not in text and "reserved:" in text
    prior = _prior(tmp_path, text)
    assert [r.key for r in prior.reserved] == ["a/1"]
    third = place(f, _demands({"a": (1, None, 1), "b": (1, None, 1)}), prior.replicas)
    assert third.by_key()["b/0"].gpus == gone["a/1"].gpus
