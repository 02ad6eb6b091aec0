"""The placement's data classes keep what a frozen dataclass promises with their quicker __init__
(stack.placement.model._quick_init): the same parameters and defaults, equality, hashing, frozenness."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from stack.placement import model

CLASSES = [model.Demand, model.Claim, model.LockedReplica, model.Assignment, model.Unplaced, model.Removed]


def _values(cls, salt: int) -> dict:
    """A distinct value per field: positional and keyword calls must put each in its own slot."""
    return {f.name: f"{f.name}-{salt}" for f in dataclasses.fields(cls) if f.init}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_lands_in_its_own_slot_by_keyword_and_by_position(cls):
    values = _values(cls, 1)
    by_keyword = cls(**values)
    by_position = cls(*values.values())
    for name, value in values.items():
        assert getattr(by_keyword, name) == value
        assert getattr(by_position, name) == value
    assert by_keyword == by_position and hash(by_keyword) == hash(by_position)
    assert by_keyword != cls(**_values(cls, 2))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_and_signature_are_the_dataclass_ones(cls):
    fields = [f for f in dataclasses.fields(cls) if f.init]
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields):
        assert p.default == (inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
    required = {f.name: f"{f.name}-0" for f in fields if f.default is dataclasses.MISSING}
    obj = cls(**required)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert getattr(obj, f.name) == f.default
    with pytest.raises(TypeError):
        cls(**{**required, "no_such_field": 1})
    with pytest.raises(TypeError):
        cls(**dict(list(required.items())[1:]))  # the first required field missing


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_instances_stay_frozen_and_replace_still_works(cls):
    obj = cls(**_values(cls, 3))
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, first, "changed")
    changed = dataclasses.replace(obj, **{first: "changed"})
    assert getattr(changed, first) == "changed" and getattr(obj, first) == f"{first}-3"
    assert not hasattr(obj, "__dict__")  # still slotted


def test_a_demands_static_shape_is_made_from_its_fields_and_follows_replace():
    """``Demand.static`` is derived once, in __init__: a copy made by replace() must derive its own."""
    d = model.Demand("a", 0, "cuda", 2, None, 40960, (("zone", "a"),), "nvidia", "*H100*")
    assert d.static == ("cuda", (("zone", "a"),), "nvidia", "*H100*", 2, 40960, True)
    shared = dataclasses.replace(d, vram_mib=8192, gpus=1, labels=())
    assert shared.static == ("cuda", (), "nvidia", "*H100*", 1, 40960, False)
    assert dataclasses.replace(d, replica=5).static == d.static
    assert d.whole and not shared.whole and dataclasses.replace(shared, vram_mib=None).whole
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.static = ()
    with pytest.raises(TypeError):
        model.Demand("a", 0, "cuda", 1, static=())


def test_equal_claims_are_one_object_and_keep_the_types_the_lock_writes():
    """``Demand.claim`` hands replicas of one shape the same Claim, made once, and never one made for an equal
    but differently typed ask: the lock writes ``cpus: 2`` and ``cpus: 2.0`` as given."""
    a = model.Demand("a", 0, "cuda", 1, cpus=2, ram_mib=1024)
    b = model.Demand("b", 3, "cuda", 1, cpus=2, ram_mib=1024)
    c = model.Demand("c", 0, "cuda", 1, cpus=2.0, ram_mib=1024)
    assert a.claim is b.claim
    assert a.claim == model.Claim("cuda", 1, None, 0, 2, 1024)
    assert c.claim == a.claim and c.claim is not a.claim
    assert repr(a.claim.cpus) == "2" and repr(c.claim.cpus) == "2.0"
    shared = model.Demand("s", 0, "cuda", 1, 16384, min_vram_mib=16384)
    assert shared.claim == model.Claim("cuda", 1, 16384, 0, 0, 0)  # a shared claim records no smallest device
