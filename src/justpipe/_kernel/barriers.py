"""_BarrierManager: ALL/ANY joins with optional `barrier_timeout` (spec §9.1).

Arrival bookkeeping lives in the scheduler's `_core` bitsets (O(1) per parent
completion, any number of parents). This manager adds what needs time: for an
ALL join with a timeout, a watcher task started at the first arrival of a wave
(which emits BARRIER_WAIT) and, on expiry, disables the node and reports the
timeout through the node's error-handling chain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from justpipe._kernel.plan import ExecutionPlan, NodePlan
from justpipe._kernel.records import system_record
from justpipe.types import EventType, NodeKind

if TYPE_CHECKING:
    from justpipe._core._channel_py import ControlChannel as _ControlChannel
    from justpipe._kernel.kernel import _Kernel

__all__ = ["_BarrierManager"]



class _BarrierManager:
    __slots__ = ("_plan", "_channel", "_kernel", "_table", "_watchers", "_on_timeout")

    def __init__(
        self,
        plan: ExecutionPlan,
        channel: _ControlChannel,
        kernel: _Kernel,
        table: Any,
        on_timeout: Callable[[NodePlan, float], Awaitable[None]],
    ) -> None:
        self._plan = plan
        self._channel = channel
        self._kernel = kernel
        self._table = table
        self._watchers: dict[int, tuple[asyncio.Task[None] | None, float]] = {}
        self._on_timeout = on_timeout

    def release(self) -> None:
        """The run is over: drop what refers back into the run (so it is freed at once).

        The timeout callback refers to the orchestrator; a cancelled watcher task keeps
        its CancelledError, whose traceback refers to this manager.
        """
        self._on_timeout = _no_timeout_callback
        self._watchers.clear()

    def wave_started(self, node: NodePlan) -> None:
        """First parent of an ALL join arrived: start the watcher if the node has a timeout."""
        if node.barrier_timeout is None or node.index in self._watchers:
            return
        self._watchers[node.index] = (None, time.monotonic())
        parents = list(node.parents)
        self._channel.put_nowait(  # from the loop: before any release of this wave
            system_record(
                EventType.BARRIER_WAIT,
                node.name,
                {
                    "timeout": node.barrier_timeout,
                    "dependencies": parents,
                    "expected_count": len(parents),
                    "completed_count": 0,
                    "waiting_for": list(parents),
                },
                NodeKind.BARRIER,
            )
        )
        self._kernel.spawn(self._watch(node))

    def released(self, node: NodePlan) -> None:
        """The join fired: stop its watcher and report how long it waited."""
        entry = self._watchers.pop(node.index, None)
        if entry is None:
            return
        task, started = entry
        if task is not None:
            task.cancel()
        self._channel.put_nowait(
            system_record(
                EventType.BARRIER_RELEASE,
                node.name,
                {"duration": round(time.monotonic() - started, 6)},
                NodeKind.BARRIER,
            )
        )

    async def _watch(self, node: NodePlan) -> None:
        entry = self._watchers.get(node.index)
        if entry is None:
            return
        self._watchers[node.index] = (asyncio.current_task(), entry[1])
        timeout = node.barrier_timeout
        assert timeout is not None
        await asyncio.sleep(timeout)
        if self._watchers.pop(node.index, None) is None:
            return
        self._table.disable(node.index)
        await self._on_timeout(node, timeout)

    def cancel_all(self) -> None:
        for task, _ in self._watchers.values():
            if task is not None:
                task.cancel()
        self._watchers.clear()


async def _no_timeout_callback(node: NodePlan, timeout: float) -> None:
    """Stands in for the orchestrator's callback once the run is over."""
