"""The cyclic collector is paused only while a stage runs, and left as the caller had it."""
from __future__ import annotations

import gc

import pytest

from stack.collector import collector_paused
from stack.project import load_project

from .conftest import ROOT


def test_paused_inside_and_restored_after_even_on_error():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the inner exit must not turn it back on
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError
    assert gc.isenabled()


def test_a_caller_that_turned_it_off_keeps_it_off():
    gc.disable()
    try:
        load_project("demo", ROOT)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_loading_leaves_it_on():
    load_project("demo", ROOT)
    assert gc.isenabled()


def test_what_a_stage_keeps_goes_to_the_oldest_generation():
    """Left young, what a stage built set off a collection that walked all of it as soon as the stage was over."""
    gc.collect()
    with collector_paused():
        kept = [[i] for i in range(5_000)]  # (a young collection is due every 700 allocations)
    assert gc.get_count()[0] < 700  # no collection is due
    assert gc.is_tracked(kept[0])
    assert any(x is kept[-1] for x in gc.get_objects(generation=2))


def test_objects_the_process_froze_stay_frozen():
    """A process that froze its objects (before forking workers) keeps them frozen: unfreezing thaws them all."""
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collector_paused():
            _ = [[i] for i in range(100)]
        assert gc.get_freeze_count() >= frozen > 0
    finally:
        gc.unfreeze()
