"""_LocalInvoker: calls a step's function in this event loop.

This is the seam for running workers elsewhere (a Dask or Ray cluster): an invoker
receives the node and its keyword arguments and returns the function's result,
reporting streamed items through `on_token`. Everything around it (events,
lineage, error handling, scheduling) stays in the orchestrator, so a remote
invoker produces the same event stream.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from justpipe._kernel.plan import CALL_ASYNC, CALL_STREAM, NodePlan
from justpipe.types import EventType, NodeKind, Suspend, _Next

__all__ = ["_LocalInvoker", "timeout_error"]


class Sink(Protocol):
    """Where TOKEN records go: the run's control channel (or a remote relay)."""

    def offer(self, item: tuple[Any, ...]) -> bool: ...

    def put(self, item: tuple[Any, ...]) -> Awaitable[None]: ...


_CONTROL = (Suspend, _Next)
_TOKEN = EventType.TOKEN
_SYSTEM = NodeKind.SYSTEM
_time = time.time


def timeout_error(name: str, seconds: float) -> TimeoutError:
    """The error of a step that exceeded its `timeout=`: a plain `TimeoutError`, as in 0.12.

    Handlers and observers that check ``type(exc) is TimeoutError`` or its name see what
    upstream gave them; the message starts with upstream's ``Step '<name>' timed out after``.
    """
    return TimeoutError(
        f"Step '{name}' timed out after {seconds}s. It did not finish within its timeout=; "
        "raise the timeout or make the step faster."
    )


class _LocalInvoker:
    __slots__ = ()

    async def call(self, node: NodePlan, kwargs: dict[str, Any], stage: str, sink: Sink) -> Any:
        """Call the step; streamed items go to `sink` as TOKEN records of `stage`."""
        if node.timeout is None:
            return await self._call(node, kwargs, stage, sink)
        try:
            async with asyncio.timeout(node.timeout) as cm:
                return await self._call(node, kwargs, stage, sink)
        except TimeoutError:
            if cm.expired():
                raise timeout_error(node.name, node.timeout) from None
            raise

    async def _call(self, node: NodePlan, kwargs: dict[str, Any], stage: str, sink: Sink) -> Any:
        mode = node.call_mode
        if mode == CALL_ASYNC:
            result = await node.func(**kwargs)
        elif mode == CALL_STREAM:
            return await stream(node.func(**kwargs), stage, sink)
        else:
            result = node.func(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        if inspect.isasyncgen(result) and node.kind is NodeKind.STEP:
            return await stream(result, stage, sink)
        return result


async def stream(agen: Any, stage: str, sink: Sink) -> Any:
    """Drain an async generator: items become TOKEN records, control objects the result."""
    control: Any = None
    offer = sink.offer
    try:
        async for item in agen:
            if isinstance(item, _CONTROL):
                control = item
                continue
            record = (_TOKEN, stage, item, _time(), _SYSTEM, None, None, None, 1, (), None)
            if not offer(record):
                await sink.put(record)
    finally:
        await agen.aclose()
    return control
