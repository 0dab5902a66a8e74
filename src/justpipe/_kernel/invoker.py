"""_LocalInvoker: the one place that calls user code of a run (steps, handlers, hooks).

Every step body (step, map source, switch, sub-pipeline input), every error handler
and every startup/shutdown hook is called through the run's invoker, so running
work elsewhere (a process pool, Dask, Ray) plugs in here and nowhere else: an
invoker receives the node and its keyword arguments and returns the function's
result, streaming an async generator's items to a `Sink` as TOKEN records.
Everything around the call (events, lineage, error handling, scheduling) stays in
the kernel, so the event stream is the same wherever the function ran.

The common case, a coroutine function without a timeout (`NodePlan.direct`), is
awaited at once: that fast path costs one coroutine frame per step.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from justpipe._kernel.plan import CALL_ASYNC, CALL_STREAM, ExecutionPlan, NodePlan
from justpipe._kernel.records import system_record
from justpipe._timeouts import within_timeout
from justpipe.types import DefinitionError, EventType, NodeKind, Suspend, _Next

if TYPE_CHECKING:
    from justpipe._kernel.context import _Invocation
    from justpipe.executors.base import Executor

__all__ = [
    "TURN_EVERY",
    "Sink",
    "_LocalInvoker",
    "bind_executors",
    "stream",
]


class Sink(Protocol):
    """Where TOKEN records go: the run's control channel (or a remote relay)."""

    def offer(self, item: tuple[Any, ...]) -> bool: ...

    def put(self, item: tuple[Any, ...]) -> Awaitable[None]: ...


# Hot-path aliases: a module global costs ~30 ns to read, an enum member's class attribute
# ~200 ns on 3.11 (timeit, docs/performance.md); only names read per event or per step.
_CONTROL = (Suspend, _Next)
_TOKEN = EventType.TOKEN

# Cooperative turns. A loop of ours that can go on without ever suspending (a token
# drain whose generator never awaits, a map pool whose workers never await, the
# fan-out of MAP_WORKER events) gives the event loop a turn every TURN_EVERY
# iterations, whatever `queue_size` is: the run's timeout, cancellation, `aclose()`,
# the consumer and other tasks on the loop get in. A count, not a clock, so the
# order of events does not depend on how fast the machine is.
TURN_EVERY = 64


class _LocalInvoker:
    """Calls user code in this event loop, or on the step's executor (see the module).

    `executors` holds, per node index, the executor an offloaded step runs on in this run
    (None for local steps); an offloaded step's function is its local proxy
    (`offload.offload_proxy`), which the invoker points at that executor.
    """

    __slots__ = ("_executors",)

    def __init__(self, executors: Sequence[Executor | None] = ()) -> None:
        self._executors = executors

    async def call(
        self, node: NodePlan, kwargs: dict[str, Any], inv: _Invocation, sink: Sink
    ) -> Any:
        """Call the node's function; streamed items go to `sink` as TOKEN records."""
        if node.direct:  # a local coroutine function without a timeout
            return await node.func(**kwargs)
        if node.timeout is None:
            return await self._call(node, kwargs, inv, sink)
        return await within_timeout(self._call(node, kwargs, inv, sink), node.name, node.timeout)

    async def call_handler(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Call an error handler, an `on_result=` or a lifecycle hook (sync or async)."""
        result = func(**kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    async def _call(
        self, node: NodePlan, kwargs: dict[str, Any], inv: _Invocation, sink: Sink
    ) -> Any:
        if node.remote:
            return await self._call_remote(node, kwargs, inv, sink)
        mode = node.call_mode
        if mode == CALL_ASYNC:
            result = await node.func(**kwargs)
        elif mode == CALL_STREAM:
            return await stream(node.func(**kwargs), inv.name, sink)
        else:
            result = node.func(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        if inspect.isasyncgen(result) and node.kind is NodeKind.STEP:
            return await stream(result, inv.name, sink)
        return result

    async def _call_remote(
        self, node: NodePlan, kwargs: dict[str, Any], inv: _Invocation, sink: Sink
    ) -> Any:
        """The step's proxy, pointed at this run's executor for the step."""
        from justpipe._kernel.offload import carrier_for, offloading
        from justpipe.executors.base import CallInfo

        executor = self._executors[node.index]
        assert executor is not None, f"step {node.name!r} has no executor bound for this run"
        info = CallInfo(
            step=node.name,
            invocation_id=inv.inv_id or "",
            attempt=inv.attempt,
            # also enforced where the engine can (a Dask worker stops an async step)
            timeout=node.timeout,
            carrier=await carrier_for(inv.inv_id),
            on_placed=inv.placed,
        )
        owner = inv.map_run
        bounded = owner is not None and _bounded_map(owner.inv.node)
        # a bounded map's pool already limits its workers; anything else waits for a slot
        limiter = None if bounded else executor.limiter()
        with offloading(executor, info, limiter):
            if node.call_mode == CALL_STREAM:
                return await stream(node.func(**kwargs), inv.name, sink)
            return await node.func(**kwargs)


def bind_executors(
    plan: ExecutionPlan, bound: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[Executor | None, ...]:
    """Each node's executor for one run: names resolve in `run(executors=...)`, then in
    `Pipe(executors=...)`. An unknown name, or a streaming step on an executor that cannot
    stream, is a DefinitionError before anything runs. Empty when every step is local."""
    if not plan.offloads:
        return ()
    table: list[Executor | None] = []
    for node in plan.nodes:
        spec = node.executor
        if spec is None:
            table.append(None)
            continue
        executor = spec
        if isinstance(spec, str):
            executor = bound.get(spec, defaults.get(spec))
            if executor is None:
                known = sorted({*bound, *defaults})
                raise DefinitionError(
                    f"Step '{node.name}' runs on executor {spec!r}, which is not bound: known "
                    f"executors: {', '.join(map(repr, known)) or 'none'}. Pass "
                    f"Pipe(executors={{{spec!r}: ...}}) or run(executors={{{spec!r}: ...}}).",
                    step_name=node.name,
                )
        if node.call_mode == CALL_STREAM and not executor.supports_streaming:
            raise DefinitionError(
                f"Step '{node.name}' is an async generator, and {type(executor).__name__} "
                "cannot stream its items back: run it on ProcessExecutor or RayExecutor, "
                "keep it local, or return a list instead of yielding.",
                step_name=node.name,
            )
        table.append(executor)
    return tuple(table)


def _bounded_map(node: NodePlan | None) -> bool:
    return getattr(node, "max_concurrency", None) is not None


async def stream(agen: Any, stage: str, sink: Sink) -> Any:
    """Drain an async generator: items become TOKEN records, control objects the result."""
    control: Any = None
    offer = sink.offer
    unsuspended = 0  # tokens queued since this task last suspended
    try:
        async for item in agen:
            if isinstance(item, _CONTROL):
                control = item
                continue
            record = system_record(_TOKEN, stage, item)
            if offer(record):
                unsuspended += 1
                if unsuspended >= TURN_EVERY:
                    unsuspended = 0
                    await asyncio.sleep(0)
            else:
                unsuspended = 0
                await sink.put(record)
    finally:
        await agen.aclose()
    return control
