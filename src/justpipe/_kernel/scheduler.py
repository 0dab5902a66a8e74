"""_Scheduler: which nodes become ready when a node completes (static `to=` edges)."""

from __future__ import annotations

from justpipe import _core
from justpipe._kernel.plan import ExecutionPlan

__all__ = ["_Scheduler"]


class _Scheduler:
    """Thin owner of the run's `_core.Readiness` (compiled or pure twin).

    `complete(u)` returns the successors of `u` whose barrier fired (as `v`) and
    those whose ALL-barrier wave just started (as `~v`), in successor order.
    """

    __slots__ = ("readiness", "complete", "table")

    def __init__(self, plan: ExecutionPlan) -> None:
        self.readiness = _core.Readiness(plan.successor_slots, plan.slot_counts, plan.any_flags)
        self.complete = self.readiness.complete
        self.table = self.readiness.table
