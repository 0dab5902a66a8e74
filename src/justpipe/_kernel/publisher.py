"""The event publisher: the one path every event takes to the consumer.

Everything that publishing involves happens here, for every kind of event and on
every exit path of a run: building the `Event` once, with its final `seq`, from the
lightweight record a producer queued (`_core.EventFactory`); the run's event hooks;
the runtime metrics; the failure journal (failures and cancellations); observers
(their `on_event`, and the run's start and end); and the one FINISH.

The per-record work runs in `_core.Dispatcher` (compiled, with its pure twin), which
this publisher builds and wires with its own factory, hooks, metrics and journal:
the runner's loop only asks `next_event()` for what to deliver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from justpipe import _core
from justpipe._kernel.failures import _FailureJournal
from justpipe._kernel.records import Completion, EventRecord, event_record
from justpipe.logs import log_observer_error
from justpipe.observability.observer import ObserverMeta, ObserverProtocol
from justpipe.types import (
    Event,
    EventType,
    FailureKind,
    FailureReason,
    NodeKind,
    PipelineEndData,
)

if TYPE_CHECKING:
    from justpipe._core._channel_py import ControlChannel as _ControlChannel
    from justpipe._core._metrics_py import MetricsRecorder as _MetricsRecorder

__all__ = ["_EventPublisher"]

# Hot-path aliases: a module global costs ~30 ns to read, an enum member's class attribute
# ~200 ns on 3.11 (timeit, docs/performance.md); only names read per event or per step.
_STEP_ERROR = EventType.STEP_ERROR
_HOOK_STAGES = frozenset({"startup", "shutdown", "system"})


class _EventPublisher:
    __slots__ = (
        "_factory",
        "_hooks",
        "_record",
        "observers",
        "_metrics",
        "_journal",
        "errors",
        "_cancelled_seen",
        "_state",
        "_context",
        "_observer_meta",
        "finish_sent",
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
        self._factory = _core.EventFactory(Event, run_id)
        self._hooks = hooks
        self.observers = observers
        self._metrics = metrics
        self._record = metrics.record
        self._journal = journal
        self.errors: dict[str, BaseException] = {}  # invocation id (or stage) -> exception
        self._cancelled_seen = False
        self._state = state
        self._context = context
        self._observer_meta = observer_meta
        self.finish_sent = False

    # ------------------------------------------------------------------ the run's events

    def dispatcher(
        self, channel: _ControlChannel, complete: Callable[[Completion], None]
    ) -> Callable[[], Any]:
        """The loop's `next_event()`: the next published event, a marker code, or None.

        Completions met on the way go to `complete` (the orchestrator).
        """
        return _core.Dispatcher(
            channel,
            self._factory,
            self._apply_hooks if self._hooks else None,
            self._record,
            self._notable,
            complete,
        ).next

    def publish(self, record: EventRecord) -> Event:
        """Publish one record outside the loop's dispatch (a crashed run's leftovers)."""
        return self._published(self._factory.build(*record))

    async def notify(self, event: Event) -> None:
        """Observers' `on_event` (the consumer gets the event after them)."""
        for observer in self.observers:
            try:
                await observer.on_event(self._state, self._context, self._observer_meta, event)
            except Exception as exc:
                _log_observer_error(observer, "on_event", exc)

    def drop_hooks(self) -> None:
        """A run ending abnormally: what is still published bypasses the event hooks."""
        self._hooks = []

    def _published(self, event: Event) -> Event:
        """Event hooks, then metrics; failures and cancellations go to the journal."""
        if self._hooks:
            event = self._apply_hooks(event)
        if self._record(event):
            self._notable(event)
        return event

    def _apply_hooks(self, event: Event) -> Event:
        """The run's event hooks, in registration order (each may replace the event)."""
        for hook in self._hooks:
            result = hook(event)
            if result is None:
                raise ValueError(
                    f"Event hook {getattr(hook, '__name__', hook)!r} returned None; event "
                    "hooks must return the (possibly replaced) Event."
                )
            if not isinstance(result, Event):
                raise TypeError(
                    f"Event hook {getattr(hook, '__name__', hook)!r} returned "
                    f"{type(result).__name__}; event hooks must return an Event."
                )
            event = result
        return event

    def _notable(self, event: Event) -> None:
        if event.type is _STEP_ERROR:
            if event.stage in _HOOK_STAGES:
                self._record_run_error(event)
            else:
                self._record_step_error(event)
        elif event.parent_run_id is None:  # a native CANCELLED
            self._cancelled_seen = True

    def _record_run_error(self, event: Event) -> None:
        """Failures outside steps are recorded when their event is published, like step errors."""
        message = str(event.payload)
        if event.stage == "startup":
            self._journal.record(
                FailureKind.STARTUP,
                FailureReason.STARTUP_HOOK_ERROR,
                f"Startup hook failed: {message}",
                error=RuntimeError(message),
            )
        elif event.stage == "shutdown":
            self._journal.record(
                FailureKind.SHUTDOWN,
                FailureReason.SHUTDOWN_HOOK_ERROR,
                f"Shutdown hook failed: {message}",
                error=RuntimeError(message),
            )
        else:
            self._journal.record(FailureKind.VALIDATION, FailureReason.NO_STEPS, message)

    def _record_step_error(self, event: Event) -> None:
        key = event.invocation_id if event.parent_run_id is None else None
        exc = self.errors.pop(key or event.stage, None)
        self._journal.record(
            FailureKind.STEP,
            FailureReason.STEP_ERROR,
            str(event.payload),
            step=event.stage,
            error=exc,
        )

    # ------------------------------------------------------------------ start and FINISH

    async def run_started(self) -> None:
        """Observers' `on_pipeline_start`."""
        for observer in self.observers:
            try:
                await observer.on_pipeline_start(self._state, self._context, self._observer_meta)
            except Exception as exc:
                _log_observer_error(observer, "on_pipeline_start", exc)

    def finish(
        self,
        duration_s: float,
        channel_depth: int,
        tasks_started: int,
        tasks_completed: int,
        peak_active: int,
        run_meta: dict[str, Any] | None,
    ) -> Event:
        """The run's one FINISH, built after every earlier event was published.

        Its payload is the failure journal's verdict with the run's metrics.
        """
        journal = self._journal
        if self._cancelled_seen and journal.terminal is None:
            journal.terminal = FailureReason.CANCELLED
        metrics = self._metrics.snapshot(
            channel_depth,
            tasks_started,
            tasks_completed,
            max(peak_active, self._metrics.peak_workers),
        )
        event = self.publish(
            event_record(
                EventType.FINISH,
                "system",
                journal.end_data(duration_s, metrics),
                NodeKind.SYSTEM,
                None,
                None,
                None,
                1,
                (),
                run_meta or None,
            )
        )
        self.finish_sent = True
        return event

    async def run_ended(self, finish: Event) -> None:
        """Observers hear FINISH, then `on_pipeline_end` / `on_pipeline_error`."""
        if self.observers:
            await self.notify(finish)
        data = finish.payload
        error = data.error if isinstance(data, PipelineEndData) else None
        for observer in self.observers:
            try:
                if error is not None:
                    await observer.on_pipeline_error(
                        self._state, self._context, self._observer_meta, Exception(error)
                    )
                else:
                    await observer.on_pipeline_end(
                        self._state, self._context, self._observer_meta, data.duration_s
                    )
            except Exception as exc:
                method = "on_pipeline_error" if error is not None else "on_pipeline_end"
                _log_observer_error(observer, method, exc)


def _log_observer_error(observer: object, method: str, exc: BaseException) -> None:
    log_observer_error(observer, method, exc)  # justpipe.kernel (justpipe.logs)
