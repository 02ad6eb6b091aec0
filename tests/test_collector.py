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
