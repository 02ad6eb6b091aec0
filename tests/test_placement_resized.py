"""A replica kept where it is with a changed claim (``vram``, ``cpus`` or ``ram`` edited): its container is replaced in
place (delete, then create), while every other container on its devices may start before or after it and departing
containers run until the apply deletes them. So its new claim must fit beside what departing containers hold, and
what it held beyond its new claim stays held until the apply is done (recorded in the lock's ``reserved``). Found by
tests/soak.py: before, 77 of 144 random plan pairs with such edits put a device past its VRAM during the apply."""
from __future__ import annotations

from stack.lock import render_lock
from stack.placement import Demand, place

from .fleets import fleet, gpus, host
from .test_placement import read_prior_from_text

GiB = 1024


def _slice(name: str, gib: int) -> Demand:
    return Demand(name, 0, "cuda", 1, gib * GiB, gib * GiB)


def _prior(p):
    return read_prior_from_text(render_lock("s", p))


def _two_l40s():
    return fleet(host("a", gpus("nvidia", "L40S", 48, 1)), host("b", gpus("nvidia", "L40S", 48, 1)))


def test_a_larger_claim_stays_only_where_it_fits_beside_departing_containers():
    f = _two_l40s()
    first = place(f, [_slice("x", 24), _slice("y", 24)])
    was = first.by_key()["x/0"]
    assert first.by_key()["y/0"].host == was.host  # binpack: one device holds both
    prior = _prior(first)
    # y is dropped; its container runs until the apply deletes it, so x's new 36 GiB one cannot start beside it
    second = place(f, [_slice("x", 36)], prior.replicas)
    (x,) = second.assignments
    assert (x.status, x.reason) == ("moved", "demand_changed") and x.host != was.host
    assert [r.key for r in second.departing] == ["x/0", "y/0"]  # both old containers keep their place meanwhile
    # with nothing departing, the larger claim still fits where it is: kept
    (alone,) = place(f, [_slice("x", 36)], _prior(place(f, [_slice("x", 24)])).replicas).assignments
    assert alone.status == "kept"


def test_the_replica_whose_claim_grew_moves_not_the_one_beside_it():
    f = _two_l40s()
    first = place(f, [_slice("x", 24), _slice("y", 24)])
    prior = _prior(first)
    by = place(f, [_slice("x", 36), _slice("y", 24)], prior.replicas).by_key()
    # before, replicas were kept in name order: x took 36 GiB where it was, and y, unchanged, was moved off
    assert (by["y/0"].status, by["y/0"].host) == ("kept", first.by_key()["y/0"].host)
    assert (by["x/0"].status, by["x/0"].reason) == ("moved", "demand_changed")


def test_a_smaller_claim_holds_what_it_held_until_the_apply():
    f = _two_l40s()
    first = place(f, [_slice("x", 40)])
    was = first.assignments[0]
    demands = [_slice("x", 20), _slice("z", 24)]
    second = place(f, demands, _prior(first).replicas)
    by = second.by_key()
    assert (by["x/0"].status, by["x/0"].host, by["x/0"].gpus) == ("kept", was.host, was.gpus)
    # binpack would put z beside x (20 + 24 GiB of 48), but x's 40 GiB container runs until the apply replaces it,
    # and z's may start first
    assert by["z/0"].host != was.host
    text = render_lock("s", second)
    assert '"x/0": {"host": "%s"' % was.host in text.split("\nreserved:\n")[1]  # the old claim, until the apply
    lock = _prior(second)
    assert [(r.key, r.claim.vram_mib) for r in lock.reserved] == [("x/0", 40 * GiB)]
    # the Pulumi program plans again from that lock when it applies it: the same placement
    again = place(f, demands, lock.replicas, reserved=lock.reserved)
    assert [(a.key, a.host, a.gpus, a.port, a.status) for a in again.assignments] == \
        [(a.key, a.host, a.gpus, a.port, "kept") for a in second.assignments]
    # the next change: the apply is done, and the 20 GiB x leaves room beside it (b, beside z, has 24 GiB)
    later = place(f, demands + [_slice("w", 28)], _prior(again).replicas)
    assert later.by_key()["w/0"].host == was.host and not later.departing

