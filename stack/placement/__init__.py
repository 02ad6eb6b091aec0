"""Placement: every replica onto one host and specific GPUs. Pure data in, pure data out; no I/O.

Read in this order: ``model`` (the data), ``filters`` (feasibility parts with reason codes),
``state`` (what is used), ``index`` (fast candidate lookup), ``rank`` (binpack / spread keys),
``engine`` (the pipeline: sticky pass, then fresh placement, then explanations).
"""
from .engine import place
from .model import Assignment, Demand, LockedReplica, Placement, Removed, Unplaced

__all__ = ["place", "Assignment", "Demand", "LockedReplica", "Placement", "Removed", "Unplaced"]
