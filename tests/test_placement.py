"""Placement: filters and their explanations, rankers, statuses, ports, determinism."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from stack.lock import read_prior, render_lock
from stack.placement import Demand, LockedReplica, place
from stack.placement.model import Claim

from .fleets import (
    amd_mi300x8,
    ascend_910bx8,
    cpu_only,
    fleet,
    gpus,
    host,
    nvidia_a100x4,
    nvidia_h100x8,
    nvidia_l4x2,
)

GiB = 1024


def d(dep="m", replica=0, fw="cuda", n=1, vram=None, **kw) -> Demand:
    vram_mib = None if vram is None else vram * GiB
    return Demand(dep, replica, fw, n, vram_mib, kw.pop("min_vram", vram_mib or 0), **kw)


def only_unplaced(p):
    assert not p.assignments, p.assignments
    (u,) = p.unplaced
    return u


# ------------------------------------------------------------------ each filter explains itself

def test_cordoned_hosts_are_counted():
    u = only_unplaced(place(fleet(nvidia_h100x8(state="cordoned")), [d()]))
    assert u.rejected == {"host_cordoned": 1}
    assert "cordoned: 1 host" in u.message


def test_label_selector_explains_missing_labels():
    f = fleet(nvidia_h100x8("a", labels={"zone": "a"}), nvidia_h100x8("b", labels={"zone": "b"}))
    u = only_unplaced(place(f, [d(labels=(("zone", "c"),))]))
    assert u.rejected == {"labels": 2}
    assert "labels: 2 hosts lack zone=c" in u.message


def test_framework_filter_names_what_hosts_have():
    f = fleet(amd_mi300x8(), ascend_910bx8(), cpu_only())
    u = only_unplaced(place(f, [d(n=2, vram=80)]))
    assert u.rejected == {"framework": 3}
    assert u.message == ("m/0: no host fits 2 × 80 GiB cuda — framework: 3 hosts have no cuda devices "
                         "(cann, rocm, no GPUs)")


def test_vendor_and_model_selectors():
    f = fleet(nvidia_h100x8(), nvidia_a100x4())
    assert only_unplaced(place(f, [d(gpu_model="*B200*")])).rejected == {"gpu_model": 2}
    p = place(f, [d(gpu_model="a100")])
    assert p.assignments[0].host == "a100-a"


def test_device_count_and_never_fits():
    f = fleet(nvidia_h100x8(), nvidia_a100x4())
    u = only_unplaced(place(f, [d(n=16)]))
    assert u.rejected == {"device_count": 2}
    assert u.never_fits
    assert "no single host can ever hold 16 × whole cuda: the most cuda devices on one host is 8;" in u.message
    assert "multi-host replicas are not supported" in u.message


def test_vram_size():
    u = only_unplaced(place(fleet(nvidia_a100x4(), nvidia_l4x2()), [d(vram=48)]))
    assert u.rejected == {"vram_size": 2}
    assert "VRAM size: 2 hosts have devices smaller than 48 GiB" in u.message


def test_free_vram_counts_hosts_that_are_full():
    f = fleet(nvidia_l4x2())
    p = place(f, [d("a", 0, n=2), d("b", 0, n=1)])
    (u,) = p.unplaced
    assert u.key == "b/0" and u.rejected == {"free_vram": 1} and not u.never_fits
    assert "free VRAM: 1 host lacks 1 unclaimed device" in u.message


def test_free_port():
    f = fleet(nvidia_h100x8(ports=(40000, 40001)))
    p = place(f, [d("m", i) for i in range(3)])
    assert len(p.assignments) == 2
    (u,) = p.unplaced
    assert u.rejected == {"free_port": 1}


def test_hard_spread_leaves_a_replica_unplaced_and_says_why():
    f = fleet(nvidia_h100x8())
    p = place(f, [d(replica=0, spread_hosts=True), d(replica=1, spread_hosts=True)])
    (u,) = p.unplaced
    assert u.rejected == {"spread": 1}
    assert "spread: 1 host runs m already" in u.message


def test_manual_selection_is_honoured_and_explained():
    f = fleet(nvidia_a100x4(), nvidia_h100x8())
    p = place(f, [d(manual=(("h100-a", 5), ("h100-a", 6)), n=2)])
    assert (p.assignments[0].host, p.assignments[0].gpus) == ("h100-a", (5, 6))
    u = only_unplaced(place(f, [d(manual=(("h100-a", 5),), n=2)]))
    assert u.rejected == {"gpu_selection": 2}


def test_explanations_count_every_host_once():
    f = fleet(nvidia_h100x8(state="cordoned"), nvidia_a100x4("a1", labels={"z": "y"}), nvidia_l4x2(),
              amd_mi300x8(), cpu_only())
    u = only_unplaced(place(f, [d(vram=30, labels=(("z", "x"),))]))
    assert sum(u.rejected.values()) == len(f.hosts)
    assert list(u.rejected) == ["host_cordoned", "labels"]  # pipeline order, not alphabetical


# ------------------------------------------------------------------ rankers

def test_binpack_whole_takes_the_tightest_group_and_the_smallest_device():
    f = fleet(nvidia_h100x8("h1"), nvidia_a100x4("a1"), nvidia_l4x2("l1"))
    p = place(f, [d("big", n=4), d("one", n=1)])
    got = {a.deployment: (a.host, a.gpus) for a in p.assignments}
    assert got["big"] == ("a1", (0, 1, 2, 3))  # 4 of 4 beats 4 of 8: the H100 host stays whole
    assert got["one"] == ("l1", (0,))  # smallest, tightest
    h = place(f, [d("eight", n=8)]).assignments[0]
    assert h.host == "h1"


def test_binpack_fractional_shares_touched_devices_first():
    f = fleet(host("h", gpus("nvidia", "A100", 80, 2)))
    p = place(f, [d("a", vram=30), d("b", vram=30), d("c", vram=30)])
    got = {a.deployment: a.gpus for a in p.assignments}
    assert got["a"] == got["b"] == (0,)  # b shares a's device rather than breaking a whole one
    assert got["c"] == (1,)  # device 0 has 20 GiB left


def test_binpack_is_fragmentation_aware_across_hosts():
    # a 1-GPU job must not break the only host that can take an 8-GPU job
    f = fleet(nvidia_h100x8("h-empty"), host("h-used", gpus("nvidia", "H100", 80, 8)))
    p = place(f, [d("eight", n=8), d("two", n=2), d("one", n=1)])
    assert {a.deployment: a.host for a in p.assignments} == {"eight": "h-empty", "two": "h-used", "one": "h-used"}


def test_spread_uses_the_emptiest_groups():
    f = fleet(nvidia_h100x8("h1"), nvidia_h100x8("h2"))
    p = place(f, [d("a", i) for i in range(4)], strategy="spread")
    hosts = [a.host for a in p.assignments]
    assert hosts.count("h1") == 2 and hosts.count("h2") == 2


def test_soft_anti_affinity_prefers_other_hosts_but_does_not_block():
    f = fleet(nvidia_h100x8("h1"), nvidia_h100x8("h2"))
    p = place(f, [d("a", i) for i in range(3)])
    assert sorted(a.host for a in p.assignments) == ["h1", "h1", "h2"]
    p = place(fleet(nvidia_h100x8("h1")), [d("a", i) for i in range(3)])
    assert len(p.assignments) == 3


def test_cpu_replicas_prefer_cpu_hosts():
    f = fleet(nvidia_h100x8(), cpu_only("c1"))
    p = place(f, [d("tts", fw="cpu", n=0)])
    assert p.assignments[0].host == "c1" and p.assignments[0].gpus == ()


def test_one_replica_never_spans_device_groups():
    h100s = replace(gpus("nvidia", "H100", 80, 2), devices=tuple(gpus("nvidia", "H100", 80, 4).devices[2:]))
    mixed = host("mixed", gpus("nvidia", "A100", 40, 2), h100s)
    u = only_unplaced(place(fleet(mixed), [d(n=4)]))
    assert u.rejected == {"device_count": 1}


# ------------------------------------------------------------------ statuses and the lock

def _locked(p):
    return read_lock_from_text(render_lock("t", p))


def read_lock_from_text(text):
    return read_prior_from_text(text).replicas


def read_prior_from_text(text):
    """A lock's text read as a plan reads the file: its replicas and ``reserved``."""
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # the file is read at once: nothing is left in /tmp
        path = pathlib.Path(folder) / "t.lock.yaml"
        path.write_text(text)
        return read_prior(path)


def test_statuses_kept_new_moved_removed():
    f = fleet(nvidia_h100x8("h1"), nvidia_h100x8("h2"), nvidia_a100x4("a1", state="cordoned"))
    whole1, whole2 = Claim("cuda", 1, None, 0), Claim("cuda", 2, None, 0)
    prior = {
        "x/0": LockedReplica("x/0", "h1", "nvidia", (0, 1), (None, None), 40000, whole2),
        "x/1": LockedReplica("x/1", "h2", "nvidia", (0, 1), (None, None), 40000, whole2),
        "y/0": LockedReplica("y/0", "a1", "nvidia", (0,), ("GPU-A100-0",), 40000, whole1),
        "z/0": LockedReplica("z/0", "h2", "nvidia", (2,), (None,), 40001, whole1),
    }
    demands = [d("x", 0, n=2), d("y", 0, n=1), d("z", 0, n=1, vram=10), d("w", 0)]
    p = place(f, demands, prior)
    by = p.by_key()
    assert (by["x/0"].status, by["x/0"].host, by["x/0"].gpus, by["x/0"].port) == ("kept", "h1", (0, 1), 40000)
    assert (by["y/0"].status, by["y/0"].reason, by["y/0"].previous_host) == ("moved", "host_cordoned", "a1")
    assert (by["z/0"].status, by["z/0"].reason) == ("moved", "demand_changed")
    assert by["w/0"].status == "new" and by["w/0"].reason == ""
    assert [(r.key, r.host) for r in p.removed] == [("x/1", "h2")]
    assert p.moved_reasons == {"y/0": "host_cordoned", "z/0": "demand_changed"}


def test_moved_reasons():
    f = fleet(nvidia_h100x8("h1", labels={"zone": "a"}), nvidia_h100x8("h2", labels={"zone": "a"}))
    prior = _locked(place(f, [d("m", 0, labels=(("zone", "a"),))]))
    was = prior["m/0"].host
    gone = fleet(*[h for h in f.hosts if h.name != was])
    assert place(gone, [d("m", 0, labels=(("zone", "a"),))], prior).assignments[0].reason == "host_removed"
    relabelled = fleet(*[replace(h, labels=(("zone", "b"),)) if h.name == was else h for h in f.hosts])
    moved = place(relabelled, [d("m", 0, labels=(("zone", "a"),))], prior).assignments[0]
    assert (moved.status, moved.reason, moved.previous_host) == ("moved", "no_longer_matches:labels", was)
    shrunk = fleet(*[replace(h, groups=(gpus("nvidia", "H100", 80, 0),)) if h.name == was else h
                     for h in f.hosts])
    assert place(shrunk, [d("m", 0, labels=(("zone", "a"),))], prior).assignments[0].reason == "devices_gone"


def test_a_manual_selection_that_no_longer_names_a_replicas_gpu_moves_it():
    f = fleet(nvidia_h100x8("h1"))
    pinned = Demand("m", 0, "cuda", 1, manual=(("h1", 7),))  # (kept on GPU 7 before: test_placement_beside_others.py)
    first = place(f, [pinned])
    assert first.assignments[0].gpus == (7,)
    moved = place(f, [replace(pinned, manual=(("h1", 0), ("h1", 1)))], _locked(first)).assignments[0]
    assert (moved.status, moved.reason, moved.gpus) == ("moved", "no_longer_matches:gpu_selection", (0,))


def test_kept_replica_keeps_gpus_and_port_even_when_a_better_spot_exists():
    f = fleet(nvidia_h100x8("h1"), nvidia_l4x2("l1"))
    prior = {"m/0": LockedReplica("m/0", "h1", "nvidia", (7,), (None,), 40042, Claim("cuda", 1, None, 0))}
    a = place(f, [d("m", 0)], prior).assignments[0]
    assert (a.host, a.gpus, a.port, a.status) == ("h1", (7,), 40042, "kept")


def test_replaced_uuid_moves_the_replica():
    f = fleet(nvidia_a100x4("a1"))
    prior = {"m/0": LockedReplica("m/0", "a1", "nvidia", (0,), ("GPU-old",), 40000, Claim("cuda", 1, None, 0))}
    assert place(f, [d("m", 0)], prior).assignments[0].reason == "devices_replaced"


def test_ports_unique_lowest_free_and_departing_ports_reserved():
    f = fleet(nvidia_h100x8("h1"))
    first = place(f, [d("a", 0), d("b", 0), d("c", 0)])
    assert sorted(a.port for a in first.assignments) == [40000, 40001, 40002]
    prior = _locked(first)
    port_b = prior["b/0"].port
    second = place(f, [d("a", 0), d("c", 0), d("e", 0)], prior)
    assert second.by_key()["e/0"].port not in {port_b, prior["a/0"].port, prior["c/0"].port}
    assert second.by_key()["e/0"].port == 40003


def test_same_input_any_order_same_bytes():
    hosts = [nvidia_h100x8(f"h{i}", labels={"zone": "ab"[i % 2]}) for i in range(6)] + \
            [nvidia_a100x4(f"a{i}") for i in range(4)] + [amd_mi300x8(f"m{i}") for i in range(3)]
    demands = [d(f"dep{i % 7}", i, n=1 + i % 4, vram=None if i % 3 else 20) for i in range(40)]
    base = render_lock("t", place(fleet(*hosts), demands))
    rnd = random.Random(7)
    for _ in range(5):
        rnd.shuffle(hosts)
        rnd.shuffle(demands)
        assert render_lock("t", place(fleet(*hosts), demands)) == base


@pytest.mark.parametrize("strategy", ["binpack", "spread"])
def test_replan_with_own_lock_keeps_everything(strategy):
    f = fleet(*(nvidia_h100x8(f"h{i}") for i in range(4)), nvidia_l4x2())
    demands = [d(f"x{i % 5}", i, n=1 + i % 3, vram=None if i % 2 else 16) for i in range(20)]
    first = place(f, demands, strategy=strategy)
    again = place(f, demands, _locked(first), strategy=strategy)
    assert {a.status for a in again.assignments} == {"kept"}
    assert [(a.key, a.host, a.gpus, a.port) for a in again.assignments] == \
        [(a.key, a.host, a.gpus, a.port) for a in first.assignments]
