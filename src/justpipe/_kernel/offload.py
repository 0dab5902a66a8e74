"""Steps that run on an executor (`@pipe.step(executor=...)`): the local stand-in.

An offloaded step's function does not run in the event loop; in its place the step
gets a local *proxy* (made once per step, at registration), and middleware wraps
the proxy exactly as it would wrap the function, so `retries=`, logging middleware
and the like run locally around each remote call. The proxy finds the run's
executor, the call's `CallInfo` and the in-flight limit in a context variable that
the invoker sets in the invocation's own task (`offloading()`), ships the original
function and its keyword arguments to the executor, and returns the result (or, for
an async generator function, yields the items the executor streams back).

The proxy is a coroutine function (an async generator function for streaming
steps), so the kernel calls an offloaded step like any local async step, and the
events of the invocation are the same wherever the function ran.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from justpipe.executors.base import CallInfo, Executor

__all__ = ["carrier_for", "offload_proxy", "offloading", "register_carrier_provider"]

# Tracing across the process boundary: a provider returns the W3C carrier of a live
# invocation's span (or None); the invoker ships it with the call (`CallInfo.carrier`),
# and the executor's `trace_hook` makes it current in the worker. OpenTelemetry support
# (`justpipe.observability.otel`) registers one when it is imported; the kernel itself
# imports no tracing library.
CarrierProvider = Callable[[str], Awaitable[Mapping[str, str] | None]]
_carrier_providers: list[CarrierProvider] = []


def register_carrier_provider(provider: CarrierProvider) -> None:
    """Add a source of trace carriers for offloaded calls (idempotent)."""
    if provider not in _carrier_providers:
        _carrier_providers.append(provider)


async def carrier_for(invocation_id: str | None) -> Mapping[str, str] | None:
    """The first carrier a registered provider has for this invocation, if any."""
    if invocation_id is None:
        return None
    for provider in _carrier_providers:
        carrier = await provider(invocation_id)
        if carrier:
            return carrier
    return None


class _Offload:
    __slots__ = ("executor", "info", "limiter")

    def __init__(
        self, executor: Executor, info: CallInfo, limiter: asyncio.Semaphore | None
    ) -> None:
        self.executor = executor
        self.info = info
        self.limiter = limiter


_current: ContextVar[_Offload | None] = ContextVar("justpipe_offload", default=None)


@contextmanager
def offloading(
    executor: Executor, info: CallInfo, limiter: asyncio.Semaphore | None
) -> Iterator[None]:
    """Within this block (in the invocation's task), the step's proxy calls `executor`."""
    token = _current.set(_Offload(executor, info, limiter))
    try:
        yield
    finally:
        _current.reset(token)


def _offload(name: str) -> _Offload:
    offload = _current.get()
    if offload is None:
        raise RuntimeError(
            f"Step '{name}' runs on an executor and was called outside a run: call the "
            "original function directly, or run the pipe."
        )
    return offload


def offload_proxy(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The local stand-in for `func`, the function of offloaded step `name`."""
    if inspect.isasyncgenfunction(func):

        async def offloaded_stream(**kwargs: Any) -> AsyncIterator[Any]:
            offload = _offload(name)
            if offload.limiter is None:
                async for item in offload.executor.stream(func, kwargs, info=offload.info):
                    yield item
                return
            async with offload.limiter:
                async for item in offload.executor.stream(func, kwargs, info=offload.info):
                    yield item

        proxy: Callable[..., Any] = offloaded_stream
    else:

        async def offloaded(**kwargs: Any) -> Any:
            offload = _offload(name)
            if offload.limiter is None:
                return await offload.executor.call(func, kwargs, info=offload.info)
            async with offload.limiter:
                return await offload.executor.call(func, kwargs, info=offload.info)

        proxy = offloaded
    proxy.__name__ = getattr(func, "__name__", name)
    proxy.__qualname__ = getattr(func, "__qualname__", name)
    proxy.__doc__ = getattr(func, "__doc__", None)
    proxy.__module__ = getattr(func, "__module__", __name__)
    return proxy
