"""`pipe.execute(...)` / `pipe.execute_sync(...)`: run (or resume) to the end, get the outcome.

`pipe.run()` streams every event; most scripts only want to know how the run ended.
`execute` drains the stream and returns a `RunOutcome`: the status, the final state,
the run id, the FINISH payload and, if a step failed, which one and with what. With
``raise_on_failure=True`` anything but a success raises `RunFailed` (which carries the
outcome). A definition problem (`DefinitionError`) is raised as it is by `run()`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.types import Event, EventType, PipelineEndData, PipelineTerminalStatus

__all__ = ["RunFailed", "RunOutcome", "StepFailure"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StepFailure:
    """The step that made the run fail, and its error (as its STEP_ERROR event told it)."""

    step: str
    error: str
    error_type: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How one run (or one resumed segment of a durable run) ended."""

    pipe_name: str
    status: PipelineTerminalStatus
    state: Any
    run_id: str | None
    end: PipelineEndData
    failure: StepFailure | None = None

    @property
    def ok(self) -> bool:
        """The run succeeded (a durable run that suspended counts: resume it later)."""
        return self.status is PipelineTerminalStatus.SUCCESS

    @property
    def suspended(self) -> bool:
        """A durable run that stopped at a `Suspend`: `execute(resume=run_id)` goes on."""
        return hasattr(self.end, "suspended_steps")

    @property
    def error(self) -> str | None:
        return self.end.error

    @property
    def duration_s(self) -> float:
        return self.end.duration_s

    def raise_for_status(self) -> RunOutcome:
        """Raise `RunFailed` unless the run succeeded; return the outcome otherwise."""
        if not self.ok:
            raise RunFailed(self)
        return self


class RunFailed(RuntimeError):
    """A run that did not succeed, from `execute(..., raise_on_failure=True)`;
    `.outcome` is its `RunOutcome`."""

    def __init__(self, outcome: RunOutcome) -> None:
        self.outcome = outcome
        super().__init__(_describe(outcome))


def _describe(outcome: RunOutcome) -> str:
    head = f"Pipeline {outcome.pipe_name!r} (run {outcome.run_id}) ended {outcome.status.value}"
    failure = outcome.failure
    if failure is not None:
        kind = f"{failure.error_type}: " if failure.error_type else ""
        return f"{head}: step {failure.step!r} failed with {kind}{failure.error}"
    if outcome.error:
        return f"{head}: {outcome.error}"
    return head


async def collect_outcome(
    pipe_name: str, events: AsyncIterator[Event], state: Any, capture: StateCapture | None
) -> RunOutcome:
    """Drain a run's events and sum them up (keeping only what the outcome needs)."""
    errors: dict[str, Event] = {}
    finish: Event | None = None
    async for event in events:
        if event.parent_run_id is not None:
            continue  # a sub-pipeline's own events, forwarded into this stream
        if event.type is EventType.STEP_ERROR:
            errors.setdefault(event.stage, event)
        elif event.type is EventType.FINISH:
            finish = event
    if finish is None or not isinstance(finish.payload, PipelineEndData):
        raise RuntimeError(f"Pipeline {pipe_name!r}: the run ended without its FINISH event")
    end = finish.payload
    if capture is not None and capture.seen:
        state = capture.state
    return RunOutcome(pipe_name, end.status, state, finish.run_id, end, _failure(end, errors))


def _failure(end: PipelineEndData, errors: dict[str, Event]) -> StepFailure | None:
    if end.status is not PipelineTerminalStatus.FAILED:
        return None
    step = end.failed_step or next(iter(errors), None)
    if step is None:
        return None
    event = errors.get(step)
    framework: dict[str, Any] = {}
    if event is not None and isinstance(event.meta, dict):
        framework = event.meta.get("framework") or {}
    error = str(event.payload) if event is not None else (end.error or "")
    return StepFailure(step, error, framework.get("error_type"), framework.get("traceback"))


class StateCapture(Observer):
    """Learns a run's state object (a resumed durable run's comes from its checkpoint)."""

    def __init__(self) -> None:
        self.seen = False
        self.state: Any = None

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        if not self.seen:
            self.seen = True
            self.state = state


# observers that the next run prepared in this context adds for itself only (taken once,
# so the sub-pipelines it starts do not inherit them)
_RUN_OBSERVERS: contextvars.ContextVar[tuple[Observer, ...]] = contextvars.ContextVar(
    "justpipe_run_observers", default=()
)


def take_run_observers() -> tuple[Observer, ...]:
    found = _RUN_OBSERVERS.get()
    if found:
        _RUN_OBSERVERS.set(())
    return found


@contextmanager
def observing_next_run(observer: Observer) -> Iterator[None]:
    """Within this block, the next run prepared in this context is also seen by `observer`."""
    token = _RUN_OBSERVERS.set((*_RUN_OBSERVERS.get(), observer))
    try:
        yield
    finally:
        _RUN_OBSERVERS.reset(token)


def run_sync(coro: Coroutine[Any, Any, T], what: str) -> T:
    """`asyncio.run(coro)`, refused (with the coroutine closed) inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError(
        f"{what}_sync() cannot run inside a running event loop (this code is called from "
        f"async code): use `await pipe.{what}(...)` there instead."
    )
