"""_PipelineRunner: one run's lifecycle (startup, main loop, shutdown) as an event stream.

The main loop is the only consumer of the control channel: it publishes event
records (building each Event once) and yields them, and hands completion records
to the orchestrator. Every exit path (normal end, run timeout, client close,
consumer cancellation, internal error) goes through the same shutdown: tasks
cancelled and awaited, shutdown hooks run, observers told how the run ended.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Callable
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

from justpipe import _core
from justpipe._kernel.context import _RunContext
from justpipe._kernel.failures import _FailureJournal
from justpipe._kernel.invoker import _LocalInvoker, bind_executors
from justpipe._kernel.journal import RunHandle, RunJournal
from justpipe._kernel.kernel import _Kernel
from justpipe._kernel.meta import attach_meta
from justpipe._kernel.orchestrator import _Orchestrator
from justpipe._kernel.plan import ExecutionPlan
from justpipe._kernel.publisher import _EventPublisher
from justpipe._kernel.records import EVENT_LEN, FINISH_MARK, FORWARD_LEN, START_ROOTS
from justpipe.observability.observer import ObserverMeta, ObserverProtocol
from justpipe.types import (
    Event,
    EventType,
    FailureKind,
    FailureReason,
    HookSpec,
)

if TYPE_CHECKING:
    from justpipe._kernel.registry import _PipelineRegistry

__all__ = ["RunPhase", "_PipelineRunner", "_RunStateMachine", "run_stream"]

# Tasks started eagerly (their first step run at once, see `_Kernel.spawn`) before the
# loop lets the event loop run again: a chain of steps that never suspend must still
# let timers (the run timeout) and other tasks in.
_EAGER_BUDGET = 128

_START = 0  # the dispatcher's code for START_ROOTS (`_core._dispatch_py.START`); FINISH is 1


class RunPhase(Enum):
    INIT = "init"
    STARTUP = "startup"
    EXECUTING = "executing"
    SHUTDOWN = "shutdown"
    TERMINAL = "terminal"


_LEGAL = {
    RunPhase.INIT: {RunPhase.STARTUP, RunPhase.SHUTDOWN},
    RunPhase.STARTUP: {RunPhase.EXECUTING, RunPhase.SHUTDOWN},
    RunPhase.EXECUTING: {RunPhase.SHUTDOWN},
    RunPhase.SHUTDOWN: {RunPhase.TERMINAL},
    RunPhase.TERMINAL: set(),
}
# the same by value: `Enum.__hash__` is a Python-level call, a str hash is cached
_LEGAL_BY_VALUE = {
    phase.value: frozenset(after.value for after in nexts) for phase, nexts in _LEGAL.items()
}


class _RunStateMachine:
    """Guards the run's phases: INIT -> STARTUP -> EXECUTING -> SHUTDOWN -> TERMINAL."""

    __slots__ = ("phase",)

    def __init__(self) -> None:
        self.phase = RunPhase.INIT

    def to(self, phase: RunPhase) -> None:
        if phase._value_ not in _LEGAL_BY_VALUE[self.phase._value_]:
            raise RuntimeError(
                f"justpipe internal error: illegal run transition {self.phase.value} -> "
                f"{phase.value}"
            )
        self.phase = phase


class _InternalError(Exception):
    """Wraps an unexpected runtime exception so the runner can finish the run first."""


class _PipelineRunner:
    def __init__(
        self,
        pipe: Any,
        state: Any,
        context: Any,
        start: Any,
        queue_size: int | None,
        timeout: float | None,
        executors: dict[str, Any] | None = None,
        journal: RunJournal | None = None,
    ) -> None:
        self.pipe = pipe
        self.state = state
        self.context = context
        self.start = start
        self.queue_size = pipe.queue_size if queue_size is None else queue_size
        self.timeout = timeout
        self.run_executors = executors or {}
        # the run journal (`journal.py`; a durable run's checkpointer), None for a plain run
        self.run_journal = journal
        if journal is not None and journal.run_id is not None:
            self.run_id = journal.run_id  # a journal continuing a run: the same run id
        else:
            self.run_id = os.urandom(16).hex()  # 32 lowercase hex digits, like uuid4().hex
        self.machine = _RunStateMachine()
        self.metrics = _core.MetricsRecorder()
        self._timed_out = False
        self._started = 0.0
        self._deadline: asyncio.TimerHandle | None = None

    def _prepare(self) -> None:
        """Validate/freeze the definition and bind this run to its plan (first __anext__)."""
        setup = self.pipe._prepare_run(self.start)
        self.registry: _PipelineRegistry = setup.registry
        self.plan: ExecutionPlan = setup.plan
        self.observers: list[ObserverProtocol] = setup.observers
        self.pipeline_metadata = setup.metadata
        self.ctx = _RunContext(
            self.run_id,
            setup.pipe_name,
            self.plan,
            self.state,
            self.context,
            setup.token,
            setup.max_retries,
        )
        self.journal = _FailureJournal(setup.failure_config)
        self.pipe_name = setup.pipe_name
        self.executors = (
            bind_executors(self.plan, self.run_executors, setup.executors)
            if self.plan.offloads
            else ()
        )

    # ------------------------------------------------------------------ the stream

    async def stream(self) -> AsyncGenerator[Event, None]:
        self._prepare()
        self._started = time.perf_counter()
        self.ctx.meta = attach_meta(self.context, self.pipeline_metadata)
        self.observer_meta = ObserverMeta(
            pipe_name=self.pipe_name,
            run_id=self.run_id,
            started_at=time.time(),
            segment=1 if self.run_journal is None else self.run_journal.segment,
        )
        channel = _core.ControlChannel(self.queue_size)
        kernel = _Kernel(channel.kick)
        kernel.eager_left = _EAGER_BUDGET
        invoker = _LocalInvoker(self.executors)
        publisher = _EventPublisher(
            self.run_id,
            list(self.registry.event_hooks),
            self.observers,
            self.metrics,
            self.journal,
            self.state,
            self.context,
            self.observer_meta,
        )
        orch = _Orchestrator(
            self.ctx,
            self.plan,
            channel,
            kernel,
            invoker,
            publisher.errors,
            self.metrics,
            self.registry.error_hook,
            unbounded_channel=self.queue_size <= 0,
            journal=self.run_journal,
        )
        self.channel, self.kernel, self.publisher, self.orch = channel, kernel, publisher, orch
        self.invoker = invoker
        closing: BaseException | None = None
        journal = self.run_journal
        begin: Callable[[], None] = orch.start
        complete = orch.complete_step
        if journal is not None:
            run = RunHandle(self, orch)
            journal.run_began(run)
            begin, complete = partial(orch.start_journaled, run), orch.complete_journaled
        next_event = publisher.dispatcher(channel, complete)
        unbounded = self.queue_size <= 0
        try:
            try:
                await self._startup()
                while True:
                    if self._timed_out:
                        await self._expire()
                    event = next_event()
                    if event is None:
                        if kernel.error is not None:
                            raise _InternalError() from kernel.error
                        if kernel.active:
                            kernel.eager_left = _EAGER_BUDGET
                            if unbounded:  # map pools may wait for the backlog to drain
                                orch.channel_drained()
                            await channel.wait()
                            continue
                        if not await self._on_idle():
                            break
                        continue
                    if event.__class__ is int:
                        if event == _START:
                            self.machine.to(RunPhase.EXECUTING)
                            begin()
                        else:
                            yield await self._publish_finish()
                        continue
                    if publisher.observers:
                        await publisher.notify(event)
                    yield event
            except (_InternalError, Exception) as exc:
                error = exc.__cause__ if isinstance(exc, _InternalError) else exc
                assert error is not None
                phase = self.machine.phase
                async for event in self._crash(error):
                    yield event
                raise _wrap(error, phase) from None
        except (GeneratorExit, asyncio.CancelledError) as exc:
            closing = exc
            raise
        finally:
            await self._cleanup(closing)
            self.orch.release()
            if journal is not None:
                waiting = journal.ended()
                if waiting is not None:
                    await _shielded(waiting)

    async def _startup(self) -> None:
        if self.observers:
            await self.publisher.run_started()
        self.machine.to(RunPhase.STARTUP)
        if self.registry.startup_hooks and not await self._run_startup_hooks():
            return
        if not self.plan.nodes:
            self._no_steps()
            return
        self.orch.emit(EventType.START, "system", self.state)
        self.channel.put_nowait(START_ROOTS)
        self._arm_timeout()

    # ------------------------------------------------------------------ phases

    async def _on_idle(self) -> bool:
        """Nothing queued and no task alive: move on to shutdown, then end."""
        phase = self.machine.phase
        if phase is RunPhase.SHUTDOWN:
            self.machine.to(RunPhase.TERMINAL)
            return False
        self._disarm_timeout()
        self.orch.cancel_joins()
        self.machine.to(RunPhase.SHUTDOWN)
        if self.registry.shutdown_hooks:
            await _shielded(self._run_shutdown_hooks(report=True))
        journal = self.run_journal
        if journal is not None:
            failure = journal.finishing()
            if failure is not None:  # (e.g. a state it cannot save): the run fails
                self.orch.fail(*failure)
        self.channel.put_nowait(FINISH_MARK)
        return True

    async def _publish_finish(self) -> Event:
        """FINISH, once every earlier event was published (so metrics count them)."""
        run_meta = self.ctx.meta.run.snapshot() if self.ctx.meta is not None else None
        event = self._finish(run_meta)
        if self.run_journal is not None:  # recorded before anyone hears of the end
            event = self.run_journal.finished(event)
        if self.observers:
            await self.publisher.run_ended(event)
        return event

    def _finish(self, run_meta: dict[str, Any] | None) -> Event:
        kernel = self.kernel
        return self.publisher.finish(
            time.perf_counter() - self._started,
            self.channel.max_depth,
            self.orch.tasks_started,
            self.orch.completed,
            kernel.peak_active,
            run_meta,
        )

    async def _run_startup_hooks(self) -> bool:
        for hook in self.registry.startup_hooks:
            try:
                await _call_hook(hook, self.ctx, self.invoker)
            except Exception as exc:
                self.orch.emit(EventType.STEP_ERROR, "startup", str(exc))
                return False
        return True

    def _no_steps(self) -> None:
        self.orch.emit(EventType.STEP_ERROR, "system", "No steps registered")

    async def _run_shutdown_hooks(self, report: bool) -> None:
        for hook in self.registry.shutdown_hooks:
            try:
                await _call_hook(hook, self.ctx, self.invoker)
            except Exception as exc:
                if report:
                    self.orch.emit(EventType.STEP_ERROR, "shutdown", str(exc))

    # ------------------------------------------------------------------ run timeout

    def _arm_timeout(self) -> None:
        if self.timeout is None:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.timeout, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._timed_out = True
        self.channel.kick()

    def _disarm_timeout(self) -> None:
        handle = self._deadline
        if handle is not None:
            handle.cancel()
            self._deadline = None

    async def _expire(self) -> None:
        """Run timeout: cancel every task, keep the events already queued, emit TIMEOUT."""
        self._timed_out = False
        self.ctx.stopping = True
        self.orch.cancel_joins()
        await self.kernel.shutdown()
        for record in self.channel.clear():
            if len(record) in (EVENT_LEN, FORWARD_LEN):
                self.channel.put_nowait(record)
        self.journal.terminal = FailureReason.TIMEOUT
        self.orch.emit(EventType.TIMEOUT, "system", f"Pipeline exceeded timeout of {self.timeout}s")

    # ------------------------------------------------------------------ abnormal exits

    async def _crash(self, error: BaseException) -> AsyncGenerator[Event, None]:
        """An internal error: record it, stop everything, still deliver shutdown + FINISH."""
        self.journal.record(
            FailureKind.INFRA, FailureReason.INTERNAL_ERROR, str(error), error=error
        )
        self.ctx.stopping = True
        self._disarm_timeout()
        await self.kernel.shutdown()
        self.channel.clear()
        self.publisher.drop_hooks()
        if self.machine.phase is not RunPhase.SHUTDOWN:
            self.machine.to(RunPhase.SHUTDOWN)
            await self._run_shutdown_hooks(report=True)
        self.channel.put_nowait(FINISH_MARK)
        while (record := self.channel.pop()) is not None:
            if len(record) == EVENT_LEN:
                event = self.publisher.publish(record)
                await self.publisher.notify(event)
                yield event
            elif record is FINISH_MARK and not self.publisher.finish_sent:
                yield await self._publish_finish()
        self.machine.phase = RunPhase.TERMINAL

    async def _cleanup(self, closing: BaseException | None) -> None:
        """Always runs: no task outlives the run; a closed/cancelled run still shuts down."""
        self._disarm_timeout()
        if self.machine.phase is RunPhase.TERMINAL and closing is None:
            if self.kernel.live:
                await self.kernel.settle()
            return
        self.ctx.stopping = True
        self.orch.cancel_joins()
        await _shielded(self.kernel.shutdown())
        if closing is None or self.publisher.finish_sent:
            return
        if self.machine.phase is not RunPhase.SHUTDOWN:
            if self.machine.phase is not RunPhase.TERMINAL:
                self.machine.to(RunPhase.SHUTDOWN)
            await _shielded(self._run_shutdown_hooks(report=False))
        self.journal.terminal = (
            FailureReason.CLIENT_CLOSED
            if isinstance(closing, GeneratorExit)
            else FailureReason.CANCELLED
        )
        self.channel.clear()  # observers see what the consumer saw, then the FINISH
        self.publisher.drop_hooks()
        await _shielded(self.publisher.run_ended(self._finish(None)))


def run_stream(
    pipe: Any,
    state: Any,
    context: Any = None,
    start: Any = None,
    queue_size: int | None = None,
    timeout: float | None = None,
    executors: dict[str, Any] | None = None,
    journal: RunJournal | None = None,
) -> AsyncGenerator[Event, None]:
    """The event stream of one run of `pipe`, as `pipe.run()` makes it, with `journal`.

    The entry point of extensions that record runs (`journal.py`): a durable run's first
    segment, a resumed segment, a durable run's sub-pipelines.
    """
    runner = _PipelineRunner(pipe, state, context, start, queue_size, timeout, executors, journal)
    return runner.stream()


async def _call_hook(hook: HookSpec, ctx: _RunContext, invoker: _LocalInvoker) -> None:
    kwargs = ctx.inject(tuple(hook.injection_metadata.items()))
    await invoker.call_handler(hook.func, kwargs)


async def _shielded(awaitable: Any) -> None:
    """Run cleanup work to completion even if our task is cancelled meanwhile.

    A cancellation that arrives while the work runs is re-raised once it is done.
    """
    task = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
    task.result()
    if cancelled is not None:
        raise cancelled


def _wrap(error: BaseException, phase: RunPhase) -> BaseException:
    if phase is RunPhase.EXECUTING and isinstance(error, Exception):
        return ExceptionGroup("unhandled errors in a TaskGroup", [error])
    return error
