"""One invocation's life, on the task side: announce, execute, settle, conclude.

`_StepRunner.run(inv)` is the coroutine of one invocation (and of its retries, which
run in the same task): it publishes STEP_START, calls the node's function through
the invoker (a step's return value is interpreted by the return-value table; a
switch routes; a map hands its items to the map fan-out; a sub-pipeline streams
its child run's events into this run), lets the error chain settle a failure,
starts the next attempt of a retried invocation, and concludes with STEP_END (or
the error event the chain published) and the completion record the orchestrator
acts on.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import warnings
from typing import TYPE_CHECKING, Any

from justpipe._kernel.context import _Invocation, _RunContext
from justpipe._kernel.errors import _ErrorChain, _SubFailure
from justpipe._kernel.invoker import _LocalInvoker
from justpipe._kernel.journal import RunJournal
from justpipe._kernel.maps import _MapFanOut
from justpipe._kernel.meta import _ScopedMetaImpl, current_step_meta
from justpipe._kernel.outcomes import (
    ENDS_NORMALLY,
    ChildSuspended,
    Outcome,
    interpret,
    is_control,
)
from justpipe._kernel.plan import MapPlan, NodePlan, SubPlan, SwitchPlan
from justpipe._kernel.records import (
    Completion,
    forward_record,
    invocation_meta,
    step_record,
    system_record,
)
from justpipe.types import EventType, NodeKind, StepStatus, Stop

if TYPE_CHECKING:
    from justpipe._core._channel_py import ControlChannel as _ControlChannel
    from justpipe._core._metrics_py import MetricsRecorder as _MetricsRecorder

__all__ = ["_StepRunner"]

# Hot-path aliases: a module global costs ~30 ns to read, an enum member's class attribute
# ~200 ns on 3.11 (timeit, docs/performance.md); only names read per event or per step.
_STEP = NodeKind.STEP
_STEP_START = EventType.STEP_START
_STEP_END = EventType.STEP_END
_OK = Outcome.OK
_RAISE = Outcome.RAISE
_RETRY = Outcome.RETRY
_SUSPEND = Outcome.SUSPEND
_FEEDING = Outcome.FEEDING
_perf = time.perf_counter
_step_meta = current_step_meta()


class _StepRunner:
    __slots__ = (
        "_ctx",
        "_channel",
        "_invoker",
        "_errors",
        "_maps",
        "_metrics",
        "_ids",
        "_attempts",
        "_kwargs",
        "_meta_on",
        "_results_lock",
        "_journal",
    )

    def __init__(
        self,
        ctx: _RunContext,
        channel: _ControlChannel,
        invoker: _LocalInvoker,
        errors: _ErrorChain,
        maps: _MapFanOut,
        metrics: _MetricsRecorder,
        ids: Any,
        attempts: Any,
        journal: RunJournal | None,
    ) -> None:
        self._ctx = ctx
        self._channel = channel
        self._invoker = invoker
        self._errors = errors
        self._maps = maps
        self._metrics = metrics
        self._ids = ids
        self._attempts = attempts
        self._kwargs = ctx.base_kwargs
        self._meta_on = ctx.meta is not None
        self._results_lock: asyncio.Lock | None = None  # async on_result= calls, one at a time
        self._journal = journal  # a journaled run's (`journal.py`): it runs the sub-pipelines

    async def run(self, inv: _Invocation, worker: bool = False) -> None:
        """Run an invocation (and its retries, in this same task); `worker`: a map worker."""
        if worker:
            self._metrics.worker_entered()
        try:
            ch = self._channel
            while True:
                record = step_record(_STEP_START, inv)
                if not ch.offer(record):
                    await ch.put(record)
                scope_meta = None
                meta_token = None
                if self._meta_on:
                    scope_meta = _ScopedMetaImpl()
                    meta_token = _step_meta.set(scope_meta)
                started = _perf()
                failed = False
                outcome: Outcome
                value: Any
                try:
                    node = inv.node
                    try:
                        if node is not None and inv.kind is _STEP:
                            kwargs = self._kwargs(node)  # (`_step_kwargs`, written out)
                            if inv.has_item and node.item_param is not None:
                                kwargs = {**kwargs, node.item_param: inv.item}
                            result = await self._invoker.call(node, kwargs, inv, ch)
                            if result is not None and node.on_result is not None:
                                result = await self._on_result(node, inv, result)
                            if result is None:
                                outcome, value = _OK, None
                            else:
                                outcome, value = interpret(inv.name, result, None)
                        else:
                            outcome, value = await self._execute_other(inv)
                    except _SubFailure as sub:
                        failed = True
                        outcome, value = await self._errors.sub_failed(
                            inv, sub.error, started, scope_meta
                        )
                    except Exception as exc:
                        failed = True
                        outcome, value = await self._errors.handle(inv, exc, started, scope_meta)
                    if outcome is _RAISE or outcome is _RETRY:
                        outcome, value = self._settle(inv, outcome, value, started, scope_meta)
                        if outcome is _RETRY:
                            inv = value  # the next attempt, in this same task
                            continue
                    if outcome is _FEEDING:
                        return  # the map's feeder reports its completion
                    if outcome in ENDS_NORMALLY:
                        if outcome is _SUSPEND and value.__class__ is not ChildSuspended:
                            await ch.put(system_record(EventType.SUSPEND, inv.name, value.reason))
                        self._step_end(inv, started, scope_meta, failed)
                    done: Completion = (inv, outcome, value)  # (`completion()`, written out)
                    ch.put_nowait(done)
                finally:
                    if meta_token is not None:
                        _step_meta.reset(meta_token)
                return
        finally:
            if worker:
                self._metrics.worker_left()

    async def resume_map(
        self, node: MapPlan, inv: _Invocation, items: list[Any], done: set[int]
    ) -> None:
        """A journaled run's continued map (`_Orchestrator.resume_map`): STEP_START, then the
        items not `done`; the map's feeder reports its completion, as for any map."""
        record = step_record(_STEP_START, inv)
        if not self._channel.offer(record):
            await self._channel.put(record)
        await self._maps.resume(node, inv, items, done, self.run)

    # ------------------------------------------------------------------ execute

    def _step_kwargs(self, node: NodePlan, inv: _Invocation) -> dict[str, Any]:
        kwargs = self._kwargs(node)
        if inv.has_item and node.item_param is not None:
            return {**kwargs, node.item_param: inv.item}
        return kwargs

    async def _execute_other(self, inv: _Invocation) -> tuple[Outcome, Any]:
        """A switch, map or sub-pipeline body; or a route to a step that does not exist."""
        node = inv.node
        if node is None:
            raise ValueError(
                f"Step '{inv.name}' not found. Registered steps: "
                f"{self._ctx.plan.step_names}. Return the name of a registered step "
                "(or decorate it with @pipe.step())."
            )
        journal = self._journal
        if journal is not None and journal.resumes_sub(inv):
            # a continued sub-pipeline step: its child run goes on where the journal recorded
            # it, with its state from there (the step's function is not called again)
            assert isinstance(node, SubPlan)
            return await self._run_sub(node, inv, None)
        returned = await self._invoker.call(node, self._step_kwargs(node, inv), inv, self._channel)
        if isinstance(node, SwitchPlan):
            return self._switch_route(node, returned)
        if isinstance(node, MapPlan):
            await self._maps.start(node, inv, returned, self.run)
            return _FEEDING, None
        assert isinstance(node, SubPlan)
        return await self._run_sub(node, inv, returned)

    async def _on_result(self, node: NodePlan, inv: _Invocation, result: Any) -> Any:
        """`on_result=` with a data value the step returned; its own return value counts.

        Runs in the event loop, one call at a time (an async one under the run's lock), so
        merging results into the state needs no lock of the user's.
        """
        if is_control(result):
            return result
        ctx = self._ctx
        values = {
            "state": ctx.state,
            "context": ctx.context,
            "token": ctx.token,
            "item": inv.item if inv.has_item else None,
            "result": result,
        }
        handler = node.on_result
        assert handler is not None
        kwargs = {param: values[source] for param, source in node.on_result_injection}
        if not inspect.iscoroutinefunction(handler):
            return await self._invoker.call_handler(handler, kwargs)
        lock = self._results_lock
        if lock is None:
            lock = self._results_lock = asyncio.Lock()
        async with lock:
            return await self._invoker.call_handler(handler, kwargs)

    def _switch_route(self, node: SwitchPlan, result: Any) -> tuple[Outcome, Any]:
        routes = node.routes
        if routes is not None:
            target = routes.get(result, node.default)
        else:
            assert node.router is not None
            target = node.router(result)
            if target is None:
                target = node.default
        if target is None:
            keys = ", ".join(repr(k) for k in routes) if routes is not None else "(router)"
            raise ValueError(
                f"Step '{node.name}' (switch) returned {result!r}, which matches no route. "
                f"Available routes: {keys}. No default route was provided: add default=... "
                "or a route for this value."
            )
        if target is Stop or isinstance(target, Stop):
            return Outcome.STOP, None
        return Outcome.ROUTE, target

    async def _run_sub(
        self, node: SubPlan, inv: _Invocation, child_state: Any
    ) -> tuple[Outcome, Any]:
        """Stream the child pipeline's run into this one (its events re-stamped here).

        In a journaled run the journal may run the child (a durable run's child is a nested
        durable run, checkpointed inside this run's checkpoints), and says how the step ends
        (a child that suspended: SUSPEND with `ChildSuspended`).
        """
        name = inv.name
        offer = self._channel.offer
        put = self._channel.put
        prefix = f"{name}:"
        inv_id = inv.inv_id
        head = (name,)
        journal = self._journal
        try:
            stream = None if journal is None else journal.sub_stream(node, inv, child_state)
            if stream is None:
                stream = node.pipeline.run(child_state, self._ctx.context)
            try:
                async for event in stream:
                    if event.type is EventType.SUSPEND:
                        self._ctx.stop()
                    record = forward_record(
                        event, prefix + event.stage, inv_id, inv_id, head + tuple(event.scope)
                    )
                    if not offer(record):
                        await put(record)
            finally:
                await stream.aclose()
        except Exception as exc:
            if journal is not None:
                journal.sub_failed(inv)
            raise _SubFailure(exc) from exc
        if journal is not None:
            return journal.sub_ended(inv)
        return _OK, None

    # ------------------------------------------------------------------ settle and conclude

    def _settle(
        self,
        inv: _Invocation,
        outcome: Outcome,
        value: Any,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[Outcome, Any]:
        """RAISE: the error is final. RETRY: the next attempt, unless over the cap or stopping."""
        if outcome is _RETRY:
            outcome, value = self._next_attempt(inv)
        if outcome is _RAISE:
            return self._errors.report(inv, value, started, scope_meta)
        return outcome, value

    def _next_attempt(self, inv: _Invocation) -> tuple[Outcome, Any]:
        """(RETRY, next invocation); over the cap (RAISE, error); stopping (DROPPED, None)."""
        max_retries = self._ctx.max_retries
        if inv.attempt >= max_retries:
            warnings.warn(
                f"Step '{inv.name}' exceeded max retries ({max_retries}). Treating as error.",
                UserWarning,
                stacklevel=2,
            )
            return _RAISE, RuntimeError(
                f"Step '{inv.name}' exceeded max retries ({max_retries}); "
                "raise Pipe(max_retries=...) or stop returning Retry()."
            )
        if self._ctx.stopping:
            return Outcome.DROPPED, None
        return _RETRY, _Invocation(
            inv.node,
            inv.name,
            self._ids.next(),
            inv.inv_id,
            inv.owner_id,
            self._attempts.next(inv.name),
            inv.scope,
            inv.has_item,
            inv.item,
            inv.map_run,
        )

    def _step_end(
        self,
        inv: _Invocation,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
        failed: bool,
    ) -> None:
        meta = invocation_meta(
            inv,
            _perf() - started,
            scope_meta.snapshot() if scope_meta is not None else None,
            StepStatus.ERROR if failed else StepStatus.SUCCESS,
        )
        self._channel.put_nowait(step_record(_STEP_END, inv, self._ctx.state, meta))
