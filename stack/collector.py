"""Python's cyclic garbage collector, paused while a stage builds many objects and almost no cycles."""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block (or, as ``@collector_paused()``, the function) with the cyclic collector off, and turn it
    back on after if it was on.

    Loading a stack and placing it build hundreds of thousands of small objects that reference counting frees:
    loading makes no cycles, a placement one set (its own state, dropped at the end). With the collector on,
    every so many new objects Python walks the whole growing heap: on the 2,000-host bench two full
    collections took 0.1 s of a 0.4 s load, and at 100,000 replicas placement took 3.2 s instead of 2.5 s.
    Cycles made meanwhile are found by the next full collection.

    What the stage built and keeps (a project, a plan of 100,000 replicas) goes straight to the oldest generation
    as the collector is turned back on (``gc.freeze`` then ``gc.unfreeze``: two list splices, and the young
    generation's count back to 0), as it would after surviving two collections. Left young, the first allocation
    after the stage set off a collection that walked all of it for nothing: 0.08 s after a 100,000-replica plan
    (nothing collected; a plan leaves no cycle behind, tests/test_placement_resources.py). Not where the process
    has frozen objects of its own (a server about to fork): ``unfreeze`` would thaw them too."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()
