"""_RunContext: the mutable state of one run, and the invocation records it creates."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from justpipe._kernel.meta import _MetaImpl
from justpipe._kernel.plan import ExecutionPlan, Injection, NodePlan
from justpipe.types import CancellationToken, InjectionSource, NodeKind

__all__ = ["_Invocation", "_MapRun", "_RunContext"]

# read per node and run when its keyword arguments are first built (many small runs)
# Hot-path aliases: a module global costs ~30 ns to read, an enum member's class attribute
# ~200 ns on 3.11 (timeit, docs/performance.md); only names read per event or per step.
_STATE = InjectionSource.STATE
_CONTEXT = InjectionSource.CONTEXT
_CANCEL = InjectionSource.CANCEL


class _RunContext:
    __slots__ = (
        "run_id",
        "pipe_name",
        "plan",
        "state",
        "context",
        "token",
        "meta",
        "max_retries",
        "stopping",
        "on_stop",
        "_kwargs",
    )

    def __init__(
        self,
        run_id: str,
        pipe_name: str,
        plan: ExecutionPlan,
        state: Any,
        context: Any,
        token: CancellationToken,
        max_retries: int,
    ) -> None:
        self.run_id = run_id
        self.pipe_name = pipe_name
        self.plan = plan
        self.state = state
        self.context = context
        self.token = token
        self.meta: _MetaImpl | None = None
        self.max_retries = max_retries
        self.stopping = False
        self.on_stop: Callable[[], None] = _nothing  # set by the orchestrator: stop the joins
        self._kwargs: list[dict[str, Any] | None] = [None] * len(plan.nodes)

    def stop(self) -> None:
        """Stop the run: nothing new is scheduled, waiting joins give up."""
        if not self.stopping:
            self.stopping = True
            self.on_stop()

    def base_kwargs(self, node: NodePlan) -> dict[str, Any]:
        """The step's injected keyword arguments for this run, built once per node."""
        kw = self._kwargs[node.index]
        if kw is None:
            kw = {}
            for param, source in node.injection:  # identity tests: Enum.__hash__ is slow
                if source is _STATE:
                    kw[param] = self.state
                elif source is _CONTEXT:
                    kw[param] = self.context
                elif source is _CANCEL:
                    kw[param] = self.token
                else:
                    kw[param] = None  # error / step name: None for steps (spec §5)
            self._kwargs[node.index] = kw
        return kw

    def inject(
        self,
        injection: Injection,
        *,
        error: BaseException | None = None,
        step_name: str | None = None,
        token: CancellationToken | bool | None = True,
    ) -> dict[str, Any]:
        values = {
            InjectionSource.STATE: self.state,
            InjectionSource.CONTEXT: self.context,
            InjectionSource.CANCEL: self.token if token is True else token,
            InjectionSource.ERROR: error,
            InjectionSource.STEP_NAME: step_name,
        }
        return {param: values.get(source) for param, source in injection}


def _each(node: NodePlan | None) -> str:
    each = getattr(node, "each", None)
    assert isinstance(each, str), "a map run belongs to a map node"
    return each


def _nothing() -> None:
    pass


class _MapRun:
    """Bookkeeping of one map fan-out: workers started/finished, feeding done."""

    __slots__ = (
        "inv",
        "worker",
        "total",
        "started",
        "finished",
        "fed",
        "skipped",
        "errored",
        "closed",
        "t0",
        "worker_name",
    )

    def __init__(self, inv: _Invocation, worker: NodePlan | None, total: int | None) -> None:
        self.inv = inv
        self.worker = worker
        # the worker step's name (the map's `each`, also when no such step is registered)
        self.worker_name: str = worker.name if worker is not None else _each(inv.node)
        self.total = total
        self.started = 0
        self.finished = 0
        self.fed = False
        self.skipped = False
        self.errored = False
        self.closed = False
        self.t0 = time.perf_counter()


class _Invocation:
    """One execution of one node (ids, lineage, the map item it works on)."""

    __slots__ = (
        "node",
        "name",
        "kind",
        "inv_id",
        "parent_id",
        "owner_id",
        "attempt",
        "scope",
        "has_item",
        "item",
        "map_run",
        "placement",
    )

    def __init__(
        self,
        node: NodePlan | None,
        name: str,
        inv_id: str | None,  # None: a barrier timeout, reported outside any invocation
        parent_id: str | None,
        owner_id: str | None,
        attempt: int,
        scope: tuple[str, ...],
        has_item: bool = False,
        item: Any = None,
        map_run: _MapRun | None = None,
    ) -> None:
        self.node = node
        self.name = name
        self.kind = node.kind if node is not None else NodeKind.STEP
        self.inv_id = inv_id
        self.parent_id = parent_id
        self.owner_id = owner_id
        self.attempt = attempt
        self.scope = scope
        self.has_item = has_item
        self.item = item
        self.map_run = map_run
        self.placement: Any = None  # where an offloaded invocation ran (executors.Placement)

    def placed(self, placement: Any) -> None:
        """The executor says where this invocation runs (reported in its end event's meta)."""
        self.placement = placement
