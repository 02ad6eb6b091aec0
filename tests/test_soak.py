"""tests/soak.py, the long random soak of placement, on a few of its seeds: it passes sound plans and reports
one that moves a replica the lock keeps."""
from __future__ import annotations

from tests import soak


def test_the_soak_passes_plans_that_keep_every_invariant_and_every_replica_in_place():
    for seed in (5001, 5004, 5009):  # 20-40 hosts, 180-247 replicas, binpack and spread
        got = soak.one(seed)
        assert "error" not in got, got
        assert got["placed"] > 100


def test_the_soak_reports_a_second_plan_that_ignores_the_lock(monkeypatch):
    real = soak.place

    def forgetful(fleet, demands, prior=None, strategy="binpack"):
        return real(fleet, demands, strategy=strategy)  # placed afresh: replicas the lock keeps may move

    monkeypatch.setattr(soak, "place", forgetful)
    got = soak.one(5004)
    assert "moved from" in got.get("error", "") or "left over after edits" in got.get("error", ""), got
