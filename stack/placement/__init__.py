"""Placement: every replica onto one host and specific GPUs. Pure data in, pure data out; no I/O.

Read in this order: ``model`` (the data), ``filters`` (feasibility parts with reason codes),
``state`` (what is used), ``index`` (fast candidate lookup), ``rankers`` (binpack / spread) and
``preferences`` (soft wishes), ``engine`` (the pipeline: sticky pass, fresh placement in the order of
``order``, walking the index as ``walks`` says), then its steps: ``repair``, ``trade``, ``giveway``,
``exact`` and ``explain``; ``packing`` is the second order's dry run.
"""
from .engine import held_beyond, place
from .model import Assignment, Demand, LockedReplica, Placement, Removed, Unplaced

__all__ = ["place", "held_beyond", "Assignment", "Demand", "LockedReplica", "Placement", "Removed", "Unplaced"]
