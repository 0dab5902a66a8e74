"""A step's `timeout=`: the one place that bounds a call and says it timed out.

The kernel (`_kernel.invoker`) bounds every invocation with it, the executors bound
their calls and streams with it (also in the worker, where the engine cannot cancel
work), so the error is the same wherever the step ran. This module imports nothing of
justpipe: the kernel and the executors both depend on it, never on each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TypeVar

__all__ = ["stream_within_timeout", "timeout_error", "within_timeout"]

T = TypeVar("T")


def timeout_error(name: str, seconds: float) -> TimeoutError:
    """The error of a step that exceeded its `timeout=`: a plain `TimeoutError`, as in 0.12.

    Handlers and observers that check ``type(exc) is TimeoutError`` or its name see what
    upstream gave them; the message starts with upstream's ``Step '<name>' timed out after``.
    """
    return TimeoutError(
        f"Step '{name}' timed out after {seconds}s. It did not finish within its timeout=; "
        "raise the timeout or make the step faster."
    )


async def within_timeout(call: Awaitable[T], step: str, seconds: float | None) -> T:
    """Await `call` within `seconds` (None: no bound); past it, the step's timeout error.

    A `TimeoutError` that `call` raises by itself passes through unchanged.
    """
    if seconds is None:
        return await call
    try:
        async with asyncio.timeout(seconds) as scope:
            return await call
    except TimeoutError:
        if scope.expired():
            raise timeout_error(step, seconds) from None
        raise


async def stream_within_timeout(
    items: AsyncIterator[T], step: str, seconds: float | None
) -> AsyncGenerator[T, None]:
    """Yield `items` until `seconds` after the first wait; past it, the step's timeout error.

    The deadline covers the whole stream; it can expire only while waiting for an item.
    The source is closed (`aclose()`) however the stream ends, so its clean-up runs.
    """
    deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline) as scope:
                    item = await anext(items)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if scope.expired() and seconds is not None:
                    raise timeout_error(step, seconds) from None
                raise
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
