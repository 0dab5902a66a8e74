"""The event publisher: the one path every event takes to the consumer.

An event is built once, with its final `seq`, from the lightweight record a
producer queued (`_core.EventFactory`); then event hooks transform it, the run's
metrics and failure journal read it, and observers are awaited with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from justpipe import _core
from justpipe._kernel.failures import _FailureJournal
from justpipe.observability.observer import ObserverMeta, ObserverProtocol
from justpipe.types import Event, EventType, FailureKind, FailureReason

if TYPE_CHECKING:
    from justpipe._core._metrics_py import MetricsRecorder as _MetricsRecorder

__all__ = ["_EventPublisher"]

_STEP_ERROR = EventType.STEP_ERROR
_CANCELLED = EventType.CANCELLED
_HOOK_STAGES = frozenset({"startup", "shutdown", "system"})

log = logging.getLogger(__name__)


class _EventPublisher:
    __slots__ = (
        "factory",
        "_hooks",
        "_record",
        "observers",
        "metrics",
        "journal",
        "errors",
        "cancelled_seen",
        "_state",
        "_context",
        "_observer_meta",
    )

    def __init__(
        self,
        run_id: str,
        hooks: list[Callable[[Event], Event]],
        observers: list[ObserverProtocol],
        metrics: _MetricsRecorder,
        journal: _FailureJournal,
        state: Any,
        context: Any,
        observer_meta: ObserverMeta,
    ) -> None:
        self.factory = _core.EventFactory(Event, run_id)
        self._hooks = hooks
        self.observers = observers
        self.metrics = metrics
        self._record = metrics.record
        self.journal = journal
        self.errors: dict[str, BaseException] = {}  # invocation id (or stage) -> exception
        self.cancelled_seen = False
        self._state = state
        self._context = context
        self._observer_meta = observer_meta

    def finish(self, event: Event) -> Event:
        """Event hooks, then metrics; failures and cancellations go to the journal."""
        if self._hooks:
            event = self.apply_hooks(event)
        if self._record(event):
            self.notable(event)
        return event

    def apply_hooks(self, event: Event) -> Event:
        """The run's event hooks, in registration order (each may replace the event)."""
        for hook in self._hooks:
            event = self._apply_hook(hook, event)
        return event

    def notable(self, event: Event) -> None:
        if event.type is _STEP_ERROR:
            if event.stage in _HOOK_STAGES:
                self._record_run_error(event)
            else:
                self._record_step_error(event)
        elif event.parent_run_id is None:  # a native CANCELLED
            self.cancelled_seen = True

    @staticmethod
    def _apply_hook(hook: Callable[[Event], Event], event: Event) -> Event:
        result = hook(event)
        if result is None:
            raise ValueError(
                f"Event hook {getattr(hook, '__name__', hook)!r} returned None; event hooks must "
                "return the (possibly replaced) Event."
            )
        if not isinstance(result, Event):
            raise TypeError(
                f"Event hook {getattr(hook, '__name__', hook)!r} returned "
                f"{type(result).__name__}; event hooks must return an Event."
            )
        return result

    def _record_run_error(self, event: Event) -> None:
        """Failures outside steps are recorded when their event is published, like step errors."""
        message = str(event.payload)
        if event.stage == "startup":
            self.journal.record(
                FailureKind.STARTUP,
                FailureReason.STARTUP_HOOK_ERROR,
                f"Startup hook failed: {message}",
                error=RuntimeError(message),
            )
        elif event.stage == "shutdown":
            self.journal.record(
                FailureKind.SHUTDOWN,
                FailureReason.SHUTDOWN_HOOK_ERROR,
                f"Shutdown hook failed: {message}",
                error=RuntimeError(message),
            )
        else:
            self.journal.record(FailureKind.VALIDATION, FailureReason.NO_STEPS, message)

    def _record_step_error(self, event: Event) -> None:
        key = event.invocation_id if event.parent_run_id is None else None
        exc = self.errors.pop(key or event.stage, None)
        self.journal.record(
            FailureKind.STEP,
            FailureReason.STEP_ERROR,
            str(event.payload),
            step=event.stage,
            error=exc,
        )

    async def notify(self, event: Event) -> None:
        for observer in self.observers:
            try:
                await observer.on_event(self._state, self._context, self._observer_meta, event)
            except Exception as exc:
                _log_observer_error(observer, "on_event", exc)


def _log_observer_error(observer: object, method: str, exc: BaseException) -> None:
    logging.error("Observer %s.%s error: %s", type(observer).__name__, method, exc)
