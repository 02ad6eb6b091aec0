"""The benchmarks print JSON on stdout; a solver's C++ code may print there too (HiGHS 1.x prints
"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();" from inside a MIP solve, whatever
``disp`` says), which breaks the JSON for whoever reads it. ``quiet`` runs a call with file descriptor 1 pointed
at stderr, so such lines still show, but not in the output."""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable, TypeVar

T = TypeVar("T")
_libc = ctypes.CDLL(None)


def quiet(call: Callable[..., T], *args, **kwargs) -> T:
    """``call(*args, **kwargs)`` with whatever it writes to file descriptor 1 sent to file descriptor 2."""
    sys.stdout.flush()
    _libc.fflush(None)  # what C holds for stdout from before stays stdout's
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        return call(*args, **kwargs)
    finally:
        sys.stdout.flush()
        _libc.fflush(None)  # C's stdout buffer (a solver's printf into a pipe or file) goes out while 1 is stderr
        os.dup2(saved, 1)
        os.close(saved)
