"""Middleware: callables `(func, StepContext) -> func` applied to every step at finalisation.

The first middleware in `pipe.middleware` is the innermost wrapper. The default list
holds `tenacity_retry_middleware`, which implements `retries=` when the optional
`tenacity` extra is installed (`pip install "justpipe[retry]"`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from justpipe.types import StepContext

try:
    import tenacity

    HAS_TENACITY = True
except ImportError:  # pragma: no cover - depends on the environment
    tenacity = None  # type: ignore[assignment]
    HAS_TENACITY = False

__all__ = [
    "HAS_TENACITY",
    "Middleware",
    "simple_logging_middleware",
    "tenacity_retry_middleware",
]

Middleware = Callable[[Callable[..., Any], StepContext], Callable[..., Any]]

_log = logging.getLogger("justpipe")


def tenacity_parameters() -> frozenset[str] | None:
    """The keyword arguments tenacity.retry() takes (for sync and async functions alike);
    None when tenacity is not installed (`HAS_TENACITY`)."""
    if not HAS_TENACITY:
        return None
    names = [
        set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
        for cls in (tenacity.Retrying, tenacity.AsyncRetrying)
    ]
    return frozenset(names[0] & names[1])


def tenacity_retry_middleware(func: Callable[..., Any], ctx: StepContext) -> Callable[..., Any]:
    """Retry a failing step `retries` times with exponential back-off (tenacity)."""
    retries = ctx.retries or ctx.kwargs.get("retries")
    if not retries:
        return func
    if not HAS_TENACITY:
        warnings.warn(
            f"Step '{ctx.name}' requested retries, but 'tenacity' not installed: "
            'install it with pip install "justpipe[retry]"; running without retries.',
            UserWarning,
            stacklevel=2,
        )
        return func
    if inspect.isasyncgenfunction(func):
        warnings.warn(
            f"Streaming step '{ctx.name}' cannot retry automatically: the tokens it already "
            "sent cannot be taken back, so retries= is ignored for it.",
            UserWarning,
            stacklevel=2,
        )
        return func
    if isinstance(retries, dict):
        return tenacity.retry(**{"reraise": True, **retries})(func)  # type: ignore[no-any-return]
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise TypeError(
            f"Step '{ctx.name}': retries must be an int >= 0 or a dict of tenacity.retry() "
            f"arguments, got {retries!r}"
        )
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(retries + 1),
        wait=tenacity.wait_exponential(
            min=ctx.kwargs.get("retry_wait_min", 0.1), max=ctx.kwargs.get("retry_wait_max", 10)
        ),
        reraise=ctx.kwargs.get("retry_reraise", True),
    )(func)


def simple_logging_middleware(func: Callable[..., Any], ctx: StepContext) -> Callable[..., Any]:
    """Log at DEBUG on logger "justpipe" how long each call of the step took."""

    def report(started: float) -> None:
        # as 0.12: `debug()` is called on every call, whatever the level (code that patches
        # `Logger.debug` sees each one), and the record's `msg` is the finished text (for
        # handlers and filters that read `record.msg`)
        _log.debug(f"Step '{ctx.name}' took {time.perf_counter() - started:.4f}s")

    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def stream_wrapper(**kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                async for item in func(**kwargs):
                    yield item
            finally:
                report(started)

        return stream_wrapper

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(**kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await func(**kwargs)
            finally:
                report(started)

        return async_wrapper

    @functools.wraps(func)
    def sync_wrapper(**kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(**kwargs)
        finally:
            report(started)

    return sync_wrapper
