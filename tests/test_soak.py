"""tests/soak.py, the long random soak of placement, on a few of its seeds: it passes sound plans, and reports a
second plan that moves a replica the lock keeps, one that lands on what departing containers still hold, a plan
from its own lock that differs from it (as the Pulumi program's would, reading the lock without its ``reserved``),
and a stack placed over what another stack's lock holds."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.synthetic import resource_demands, resource_fleet
from tests import soak


def test_the_soak_passes_plans_that_keep_every_invariant_and_every_replica_in_place():
    # 40 hosts, 141-233 placed, binpack and spread; 5025: the selector workload, hosts of 2-6 ports
    drawn = [soak.one(seed) for seed in (5004, 5009, 5017, 5025)]
    for got in drawn:
        assert "error" not in got, got
        assert got["placed"] > 100
    assert any(got.get("shared") for got in drawn)  # two stacks on one inventory, on some
    assert any(got.get("few_ports") for got in drawn)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10 ** 6))
def test_random_plans_and_the_changes_a_pull_request_makes_keep_every_rule(seed):
    """The soak's checks on forty seeds in every test run (the same forty: the repeatable profile), so a change to
    placement that breaks one fails here, not only in a soak someone remembers to run."""
    got = soak.one(seed)
    assert "error" not in got, got


def test_the_soak_draws_the_constraints_users_write():
    fleet = resource_fleet(20, 1)
    plain = resource_demands(fleet, 2, 1.0)
    drawn = [soak.decorate(fleet, plain, random.Random(seed)) for seed in range(10)]
    assert any(d == plain for d in drawn)  # some plans have none
    demands = [d for ds in drawn for d in ds]
    assert any(d.manual for d in demands) and any(d.gpu_model for d in demands)
    assert any(d.labels for d in demands) and any(d.spread_hosts for d in demands)
    for ds in drawn:  # drawn per deployment: its replicas alike
        by = {}
        for d in ds:
            assert by.setdefault(d.deployment, d.static + (d.spread_hosts,)) == d.static + (d.spread_hosts,)


def test_the_soak_reports_a_second_plan_that_ignores_the_lock(monkeypatch):
    real = soak.place

    def forgetful(fleet, demands, prior=None, strategy="binpack", reserved=(), held=None):
        return real(fleet, demands, strategy=strategy, held=held)  # placed afresh: replicas the lock keeps may move

    monkeypatch.setattr(soak, "place", forgetful)
    got = soak.one(5004)
    assert "moved from" in got.get("error", "") or "left over after edits" in got.get("error", ""), got


def test_the_soak_reports_a_replica_placed_on_what_a_departing_container_holds(monkeypatch):
    real = soak.place

    def forgets_departing(fleet, demands, prior=None, strategy="binpack", reserved=(), held=None):
        keys = {d.key for d in demands}  # the dropped deployments' containers run until the apply deletes them
        return real(fleet, demands, {k: e for k, e in (prior or {}).items() if k in keys}, strategy=strategy,
                    reserved=reserved, held=held)

    monkeypatch.setattr(soak, "place", forgets_departing)
    got = soak.one(5004)
    assert "held dep-" in got.get("error", ""), got
    assert "over its VRAM" in got["error"] or "taken whole" in got["error"] or "taken twice" in got["error"]


def test_the_soak_reports_a_stack_placed_over_another_stacks_lock(monkeypatch):
    real = soak.place

    def blind(fleet, demands, prior=None, strategy="binpack", reserved=(), held=None):
        return real(fleet, demands, prior, strategy=strategy, reserved=reserved)  # another stack's lock unread

    monkeypatch.setattr(soak, "place", blind)
    got = soak.one(5017)
    assert got.get("shared") and "held dep-" in got.get("error", ""), got


def test_the_soak_reports_a_plan_from_its_own_lock_that_differs_from_it(monkeypatch):
    real = soak.place

    def unreserved(fleet, demands, prior=None, strategy="binpack", reserved=(), held=None):
        return real(fleet, demands, prior, strategy=strategy, held=held)  # the lock's reserved unread

    monkeypatch.setattr(soak, "place", unreserved)
    got = soak.one(5009)
    assert "placed when planned again from its own lock" in got.get("error", ""), got
