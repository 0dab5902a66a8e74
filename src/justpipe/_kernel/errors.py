"""The error-handling chain of an invocation (spec §9.6), beside the failure journal.

A step's exception goes to the step's own `on_error` handler, then to the pipe's
global handler, and is reported only when neither recovered from it: as CANCELLED
for a `PipelineCancelled`, otherwise logged and published as STEP_ERROR (the
failure journal records it when that event is published). A handler's return value
is interpreted like a step's (`Skip`, `Retry`, a route, `Raise`, ...); a handler
that raises passes its own exception on, chained to the original.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any

from justpipe._kernel.context import _Invocation, _RunContext
from justpipe._kernel.invoker import _LocalInvoker
from justpipe._kernel.outcomes import Outcome, interpret
from justpipe._kernel.records import invocation_meta, step_record
from justpipe.logs import log_step_failure
from justpipe.types import EventType, PipelineCancelled, StepStatus

if TYPE_CHECKING:
    from justpipe._core._channel_py import ControlChannel as _ControlChannel
    from justpipe._kernel.meta import _ScopedMetaImpl
    from justpipe.types import HookSpec

__all__ = ["_ErrorChain", "_SubFailure"]


class _SubFailure(Exception):
    """An exception escaped a sub-pipeline's run (reported as '<sub>:sub')."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _ErrorChain:
    __slots__ = ("_ctx", "_channel", "_invoker", "_errors", "_hook", "_hook_injection")

    def __init__(
        self,
        ctx: _RunContext,
        channel: _ControlChannel,
        invoker: _LocalInvoker,
        errors: dict[str, BaseException],
        error_hook: HookSpec | None,
    ) -> None:
        self._ctx = ctx
        self._channel = channel
        self._invoker = invoker
        self._errors = errors  # invocation id (or stage) -> exception, for the failure journal
        self._hook = error_hook
        self._hook_injection = (
            tuple(error_hook.injection_metadata.items()) if error_hook is not None else ()
        )

    async def handle(
        self,
        inv: _Invocation,
        exc: Exception,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[Outcome, Any]:
        """The step's own handler, then the global handler, then report."""
        node = inv.node
        if node is not None and node.handler is not None:
            try:
                kwargs = self._ctx.inject(node.handler_injection, error=exc, step_name=inv.name)
                result = await self._invoker.call_handler(node.handler, kwargs)
                return self._after_handler(inv, result, exc, started, scope_meta)
            except Exception as handler_exc:
                if handler_exc.__cause__ is None and handler_exc is not exc:
                    handler_exc.__cause__ = exc
                exc = handler_exc
        return await self.handle_globally(inv, exc, started, scope_meta)

    async def handle_globally(
        self,
        inv: _Invocation,
        exc: Exception,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[Outcome, Any]:
        """The global handler only (a sub-pipeline's escaped exception), then report."""
        hook = self._hook
        if hook is not None:
            try:
                kwargs = self._ctx.inject(
                    self._hook_injection, error=exc, step_name=inv.name, token=None
                )
                result = await self._invoker.call_handler(hook.func, kwargs)
                return self._after_handler(inv, result, exc, started, scope_meta)
            except Exception as hook_exc:
                exc = hook_exc
        return self.report(inv, exc, started, scope_meta)

    async def sub_failed(
        self,
        inv: _Invocation,
        exc: BaseException,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[Outcome, Any]:
        """An exception escaped the child run: only the global handler applies."""
        if not isinstance(exc, Exception):
            raise exc
        sub_inv = _Invocation(
            inv.node,
            f"{inv.name}:sub",
            inv.inv_id,
            inv.parent_id,
            inv.owner_id,
            inv.attempt,
            inv.scope,
        )
        return await self.handle_globally(sub_inv, exc, started, scope_meta)

    def _after_handler(
        self,
        inv: _Invocation,
        result: Any,
        exc: Exception,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[Outcome, Any]:
        outcome, value = interpret(inv.name, result, exc)
        if outcome is Outcome.RAISE:
            return self.report(inv, value, started, scope_meta)
        return outcome, value

    def report(
        self,
        inv: _Invocation,
        exc: BaseException,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[Outcome, Any]:
        """The error is final: CANCELLED for PipelineCancelled, else log + STEP_ERROR."""
        if isinstance(exc, PipelineCancelled):
            self._ctx.stopping = True
            self._channel.put_nowait(step_record(EventType.CANCELLED, inv, str(exc)))
            return Outcome.CANCELLED, None
        _log_failure(inv.name, exc, self._ctx.state)
        self._errors[inv.inv_id or inv.name] = exc
        meta = invocation_meta(
            inv,
            time.perf_counter() - started,
            scope_meta.snapshot() if scope_meta is not None else None,
            StepStatus.ERROR,
        )
        if meta is not None:  # what a failure autopsy needs, beyond the message
            framework = meta["framework"]
            framework["error_type"] = _type_name(exc)
            framework["traceback"] = _traceback_text(exc)
        self._channel.put_nowait(step_record(EventType.STEP_ERROR, inv, str(exc), meta))
        return Outcome.FAIL, None


_TRACEBACK_LIMIT = 16_384  # characters kept (the end: the innermost frames and the error)


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _traceback_text(exc: BaseException) -> str:
    """The formatted traceback (with notes, e.g. a remote worker's), its end if very long."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= _TRACEBACK_LIMIT else "...\n" + text[-_TRACEBACK_LIMIT:]


def _log_failure(name: str, exc: BaseException, state: Any) -> None:
    log_step_failure(name, exc, state)  # justpipe.kernel, upstream's text (justpipe.logs)
