"""tests/soak.py, the long random soak of placement, on a few of its seeds: it passes sound plans, and reports a
second plan that moves a replica the lock keeps, one that lands on what departing containers still hold, a plan
from its own lock that differs from it (as the Pulumi program's would, reading the lock without its ``reserved``),
and a stack placed over what another stack's lock holds."""
from __future__ import annotations

import random

import pytest
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


# placements broken on purpose, each as (what it leaves out, the seed, what the soak's report must say): the soak
# must catch each
def _ignores_the_lock(real, fleet, demands, prior, strategy, reserved, held):
    return real(fleet, demands, strategy=strategy, held=held)  # placed afresh: replicas the lock keeps may move


def _forgets_departing(real, fleet, demands, prior, strategy, reserved, held):
    keys = {d.key for d in demands}  # the dropped deployments' containers run until the apply deletes them
    return real(fleet, demands, {k: e for k, e in (prior or {}).items() if k in keys}, strategy=strategy,
                reserved=reserved, held=held)


def _blind_to_other_stacks(real, fleet, demands, prior, strategy, reserved, held):
    return real(fleet, demands, prior, strategy=strategy, reserved=reserved)


def _unreserved(real, fleet, demands, prior, strategy, reserved, held):
    return real(fleet, demands, prior, strategy=strategy, held=held)  # the lock's reserved unread


@pytest.mark.parametrize("broken, seed, says", [
    (_ignores_the_lock, 5004, ("moved from", "left over after edits")),
    (_forgets_departing, 5004, ("held dep-",)),
    (_blind_to_other_stacks, 5017, ("held dep-",)),
    (_unreserved, 5009, ("placed when planned again from its own lock",)),
], ids=lambda x: x.__name__.strip("_") if callable(x) else None)
def test_the_soak_reports_a_broken_placement(monkeypatch, broken, seed, says):
    real = soak.place

    def place(fleet, demands, prior=None, strategy="binpack", reserved=(), held=None):
        return broken(real, fleet, demands, prior, strategy, reserved, held)

    monkeypatch.setattr(soak, "place", place)
    got = soak.one(seed)
    assert any(text in got.get("error", "") for text in says), got
