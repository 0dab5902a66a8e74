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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from justpipe.executors.base import CallInfo, Executor

__all__ = ["offload_proxy", "offloading"]


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
