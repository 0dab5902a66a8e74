"""_Orchestrator: `schedule()`, `emit()` and `complete_step()` for one run.

Step tasks execute invocations (events, the user function, the error-handling
chain) and report each outcome as a completion record on the control channel.
Records that open work (STEP_START, TOKEN, MAP_WORKER, forwarded events) wait
for room in the channel; records that close an invocation (STEP_END,
STEP_ERROR, CANCELLED, completions) never wait, so finishing work is never
delayed and each live invocation adds at most a few items beyond `queue_size`.
The runner's loop hands those records back to `complete_step()` in channel
order, after the consumer has seen every event queued before them; there the
orchestrator consults the plan, the scheduler's barrier bitsets and the map
bookkeeping to decide what runs next. Only the loop runs `complete_step()`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import warnings
from collections.abc import Coroutine, Sized
from typing import TYPE_CHECKING, Any

from justpipe import _core
from justpipe._kernel.barriers import _BarrierManager
from justpipe._kernel.context import _Invocation, _MapRun, _RunContext
from justpipe._kernel.injection import resolve_name
from justpipe._kernel.invoker import _LocalInvoker
from justpipe._kernel.meta import _ScopedMetaImpl, current_step_meta
from justpipe._kernel.plan import ExecutionPlan, NodePlan
from justpipe._kernel.scheduler import _Scheduler
from justpipe.types import (
    EventType,
    NodeKind,
    PipelineCancelled,
    Raise,
    Retry,
    Skip,
    StepStatus,
    Stop,
    Suspend,
    _Next,
)

if TYPE_CHECKING:
    from justpipe._core._channel_py import ControlChannel as _ControlChannel
    from justpipe._core._metrics_py import MetricsRecorder as _MetricsRecorder
    from justpipe._kernel.kernel import _Kernel
    from justpipe._kernel.publisher import _EventPublisher
    from justpipe.types import HookSpec

__all__ = ["_Orchestrator"]

# Channel records are plain tuples told apart by length (no tag to build or slice):
#   11 items: a native event (type, stage, payload, timestamp, node_kind, invocation_id,
#             parent_invocation_id, owner_invocation_id, attempt, scope, meta)
#    5 items: a forwarded child event (child, stage, parent_inv, owner_inv, scope)
#    3 items: a completion (invocation, outcome, value)
#    0 items: start the roots
# (the lengths are defined in `_core._dispatch_py`, with the dispatcher that tells them apart)

# outcomes of an invocation
OK, ROUTE, STOP, SKIP, FAIL, CANCELLED, SUSPEND, RETRY, RAISE, MAP_FED, DROPPED = range(11)

_STEP_START = EventType.STEP_START
_STEP_END = EventType.STEP_END
_STEP_ERROR = EventType.STEP_ERROR
_TOKEN = EventType.TOKEN
_SYSTEM = NodeKind.SYSTEM
_MAP = NodeKind.MAP
_STEP = NodeKind.STEP
_SUCCESS = StepStatus.SUCCESS
_ERROR = StepStatus.ERROR

_time = time.time
_perf = time.perf_counter
_step_meta = current_step_meta()


class _SubFailure(Exception):
    """An exception escaped a sub-pipeline's run (reported as '<sub>:sub')."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Orchestrator:
    def __init__(
        self,
        ctx: _RunContext,
        plan: ExecutionPlan,
        channel: _ControlChannel,
        kernel: _Kernel,
        publisher: _EventPublisher,
        metrics: _MetricsRecorder,
        error_hook: HookSpec | None,
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.nodes = plan.nodes
        self.channel = channel
        self.kernel = kernel
        self.publisher = publisher
        self.metrics = metrics
        self.error_hook = error_hook
        self.invoker = _LocalInvoker()
        self.scheduler = _Scheduler(plan)
        self.barriers = _BarrierManager(
            plan, channel, kernel, self.scheduler.table, self._barrier_timed_out
        )
        self.ids = _core.InvocationIds(ctx.run_id)
        self.attempts = _core.AttemptCounter()
        self.completed = 0
        self.pooled = 0  # worker invocations run inside pool tasks (counted as tasks in metrics)
        self._meta_on = ctx.meta is not None
        self._kwargs = ctx.base_kwargs
        # invocations scheduled by the loop-side decision in progress (see `_spawn_all`)
        self._pending: list[Coroutine[Any, Any, None]] | None = None

    # ------------------------------------------------------------------ scheduling

    def start(self) -> None:
        pending = self._pending = []
        try:
            for index in self.plan.roots:
                self.schedule(self.nodes[index], None)
        except BaseException:
            for coro in pending:  # decided but never started: no "never awaited" warning
                coro.close()
            raise
        finally:
            self._pending = None
        self._spawn_all(pending)

    def _spawn_all(self, pending: list[Coroutine[Any, Any, None]]) -> None:
        """Start the invocations one loop-side decision scheduled, in order.

        Tasks start eagerly (see `_Kernel`), so a step may already run (and, say,
        cancel the run) while the loop is still deciding: every invocation a
        completion schedules is therefore decided first and started afterwards, as
        if each had waited for the next event-loop iteration.
        """
        spawn = self.kernel.spawn
        for coro in pending:
            spawn(coro)

    def schedule(
        self,
        node: NodePlan | None,
        parent_id: str | None,
        name: str | None = None,
        scope: tuple[str, ...] = (),
    ) -> None:
        """Spawn an invocation of `node` (refused once the run is stopping)."""
        if self.ctx.stopping:
            return
        stage = node.name if node is not None else (name or "?")
        inv_id = self.ids.next()
        inv = _Invocation(node, stage, inv_id, parent_id, inv_id, self.attempts.next(stage), scope)
        pending = self._pending
        if pending is not None:
            pending.append(self._invoke(inv))
        else:
            self.kernel.spawn(self._invoke(inv))

    def release(self) -> None:
        """The run is over: drop the back-reference that makes its objects a cycle.

        (The barrier manager calls back into this orchestrator.) Without it every run's
        object graph waits for the cyclic GC; with it, it is freed when the run ends.
        """
        self.barriers.release()

    def stop(self) -> None:
        if not self.ctx.stopping:
            self.ctx.stopping = True
            self.barriers.cancel_all()

    def emit(self, etype: EventType, stage: str, payload: Any = None) -> None:
        """Queue a run-level event from the loop itself (never waits for space)."""
        self.channel.put_nowait(
            (etype, stage, payload, _time(), _SYSTEM, None, None, None, 1, (), None)
        )

    # ------------------------------------------------------------------ completion (loop side)

    def complete_step(self, record: tuple[Any, ...]) -> None:
        pending = self._pending = []
        try:
            self._complete(record)
        except BaseException:
            for coro in pending:
                coro.close()
            raise
        finally:
            self._pending = None
        if pending:
            self._spawn_all(pending)

    def _complete(self, record: tuple[Any, ...]) -> None:
        inv, outcome, value = record
        self.completed += 1
        map_run = inv.map_run
        if map_run is not None:
            self._worker_done(map_run, inv, outcome, value)
        elif outcome == MAP_FED:
            value.fed = True
            self._maybe_finish_map(value)
        elif outcome == OK or outcome == FAIL:
            self._advance(inv.node)
        elif outcome == ROUTE:
            self._route(value, inv)
            if inv.kind is not _STEP:
                self._advance(inv.node)
        elif outcome == STOP or outcome == SUSPEND or outcome == CANCELLED:
            self.stop()

    def _advance(self, node: NodePlan | None) -> None:
        if node is None or not node.successors:
            return
        nodes = self.nodes
        for x in self.scheduler.complete(node.index):
            if x >= 0:
                target = nodes[x]
                if target.barrier_timeout is not None:
                    self.barriers.released(target)
                self.schedule(target, None)
            else:
                self.barriers.wave_started(nodes[~x])

    def _route(self, target: Any, source: _Invocation) -> None:
        name = resolve_name(target)
        self.schedule(self.plan.node(name), source.inv_id, name, source.scope)

    def _worker_done(self, map_run: _MapRun, inv: _Invocation, outcome: int, value: Any) -> None:
        map_run.finished += 1
        if outcome == SKIP:
            map_run.skipped = True
        elif outcome == ROUTE:
            self._route(value, inv)
        elif outcome == STOP or outcome == SUSPEND or outcome == CANCELLED:
            self.stop()
        self._maybe_finish_map(map_run)

    def _maybe_finish_map(self, mr: _MapRun) -> None:
        if not mr.fed or mr.finished != mr.started or mr.closed:
            return
        mr.closed = True
        inv = mr.inv
        node = inv.node
        assert node is not None
        worker = mr.worker.name if mr.worker is not None else node.step.each  # type: ignore[attr-defined]
        put = self.channel.put_nowait
        put(
            (
                EventType.MAP_COMPLETE,
                inv.name,
                {
                    "target": worker,
                    "item_count": mr.started if mr.total is None else mr.total,
                    "owner_invocation_id": inv.inv_id,
                    "owner_scope": inv.scope,
                },
                _time(),
                _MAP,
                inv.inv_id,
                None,
                inv.inv_id,
                inv.attempt,
                inv.scope,
                None,
            )
        )
        if not mr.errored:
            meta = None
            if mr.total == 0:  # an empty map's STEP_END is its own invocation's end
                meta = {
                    "framework": {
                        "duration_s": round(_perf() - mr.t0, 6),
                        "attempt": inv.attempt,
                        "status": _SUCCESS,
                    }
                }
            put(
                (
                    _STEP_END,
                    inv.name,
                    self.ctx.state,
                    _time(),
                    _MAP,
                    inv.inv_id,
                    inv.parent_id,
                    inv.owner_id,
                    inv.attempt,
                    inv.scope,
                    meta,
                )
            )
        if not mr.skipped:
            self._advance(node)

    # ------------------------------------------------------------------ invocation (task side)

    async def _invoke(self, inv: _Invocation, worker: bool = False) -> None:
        """Run an invocation (and its retries, in this same task); `worker`: a map worker."""
        ch = self.channel
        if worker:
            self.metrics.worker_entered()
        try:
            while True:
                node = inv.node
                kind = inv.kind
                record = (
                    _STEP_START,
                    inv.name,
                    None,
                    _time(),
                    kind,
                    inv.inv_id,
                    inv.parent_id,
                    inv.owner_id,
                    inv.attempt,
                    inv.scope,
                    None,
                )
                if not ch.offer(record):
                    await ch.put(record)
                scope_meta = None
                meta_token = None
                if self._meta_on:
                    scope_meta = _ScopedMetaImpl()
                    meta_token = _step_meta.set(scope_meta)
                started = _perf()
                failed = False
                outcome: int
                value: Any
                try:
                    try:
                        if node is None:
                            raise ValueError(
                                f"Step '{inv.name}' not found. Registered steps: "
                                f"{self.plan.step_names}. Return the name of a registered step "
                                "(or decorate it with @pipe.step())."
                            )
                        if kind is _STEP:
                            if node.direct:  # the local invoker's trivial case, inlined
                                kwargs = self._kwargs(node)
                                if inv.has_item and node.item_param is not None:
                                    kwargs = {**kwargs, node.item_param: inv.item}
                                result = await node.func(**kwargs)
                            else:
                                result = await self._call(node, inv)
                            if result is None:
                                outcome, value = OK, None
                            else:
                                outcome, value = self._interpret(inv, result, None)
                        else:
                            returned = await self._call(node, inv)
                            if kind is NodeKind.SWITCH:
                                outcome, value = self._switch_route(node, inv, returned)
                            elif kind is _MAP:
                                outcome, value = await self._start_map(node, inv, returned)
                            else:
                                outcome, value = await self._run_sub(node, inv, returned)
                    except _SubFailure as sub:
                        failed = True
                        outcome, value = await self._sub_failed(inv, sub.error, started, scope_meta)
                    except Exception as exc:
                        failed = True
                        outcome, value = await self._handle_failure(inv, exc, started, scope_meta)
                    if outcome == RAISE:
                        outcome, value = await self._report(inv, value, started, scope_meta)
                    elif outcome == RETRY:
                        outcome, value = self._retry(inv)
                        if outcome == RETRY:
                            inv = value  # the next attempt, in this same task
                            continue
                        if outcome == RAISE:
                            outcome, value = await self._report(inv, value, started, scope_meta)
                    if value is _DEFERRED:
                        return  # the map's feeder reports its completion
                    if outcome <= SKIP or outcome == SUSPEND:
                        if outcome == SUSPEND:
                            await ch.put(
                                (
                                    EventType.SUSPEND,
                                    inv.name,
                                    value.reason,
                                    _time(),
                                    _SYSTEM,
                                    None,
                                    None,
                                    None,
                                    1,
                                    (),
                                    None,
                                )
                            )
                        self._step_end(inv, started, scope_meta, _ERROR if failed else _SUCCESS)
                    ch.put_nowait((inv, outcome, value))
                finally:
                    if meta_token is not None:
                        _step_meta.reset(meta_token)
                return
        finally:
            if worker:
                self.metrics.worker_left()

    async def _call(self, node: NodePlan, inv: _Invocation) -> Any:
        kwargs = self.ctx.base_kwargs(node)
        if inv.has_item and node.item_param is not None:
            kwargs = {**kwargs, node.item_param: inv.item}
        return await self.invoker.call(node, kwargs, inv.name, self.channel)

    def _meta_snapshot(
        self,
        inv: _Invocation,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
        status: StepStatus,
    ) -> dict[str, Any] | None:
        if inv.inv_id is None or (inv.kind is NodeKind.SUB and status is _SUCCESS):
            return None  # barrier-timeout errors and sub owners carry no step meta
        meta: dict[str, Any] = scope_meta.snapshot() if scope_meta is not None else {}
        meta["framework"] = {
            "duration_s": round(_perf() - started, 6),
            "attempt": inv.attempt,
            "status": status,
        }
        return meta

    def _step_end(
        self,
        inv: _Invocation,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
        status: StepStatus,
    ) -> None:
        self.channel.put_nowait(
            (
                _STEP_END,
                inv.name,
                self.ctx.state,
                _time(),
                inv.kind,
                inv.inv_id,
                inv.parent_id,
                inv.owner_id,
                inv.attempt,
                inv.scope,
                self._meta_snapshot(inv, started, scope_meta, status),
            )
        )

    # ------------------------------------------------------------------ results

    def _interpret(
        self, inv: _Invocation, result: Any, error: BaseException | None
    ) -> tuple[int, Any]:
        """Apply the return-value table of spec §9.3."""
        if result is None:
            return OK, None
        if isinstance(result, str):
            return ROUTE, result
        if isinstance(result, _Next):
            return (ROUTE, result.target) if result.target is not None else (OK, None)
        if result is Stop or isinstance(result, Stop):
            return STOP, None
        if isinstance(result, Suspend):
            return SUSPEND, result
        if isinstance(result, Skip):
            return SKIP, None
        if isinstance(result, Retry):
            return RETRY, None
        if isinstance(result, Raise):
            return RAISE, result.exception or error or RuntimeError(
                f"Step '{inv.name}' returned Raise() without an exception."
            )
        warnings.warn(
            f"Step '{inv.name}' returned {type(result).__name__} ({_short(result)}), which will "
            "be ignored. A step may return a step name (str), Stop, Suspend, Skip or Retry. "
            "To pass data, mutate state or the context; to stream, yield.",
            UserWarning,
            stacklevel=2,
        )
        return OK, None

    def _switch_route(self, node: NodePlan, inv: _Invocation, result: Any) -> tuple[int, Any]:
        step = node.step
        table = step.routes()  # type: ignore[attr-defined]
        default = step.default  # type: ignore[attr-defined]
        if table is not None:
            target = table.get(result, default)
        else:
            target = step.to(result)
            if target is None:
                target = default
        if target is None:
            keys = ", ".join(repr(k) for k in table) if table is not None else "(router)"
            raise ValueError(
                f"Step '{node.name}' (switch) returned {result!r}, which matches no route. "
                f"Available routes: {keys}. No default route was provided: add default=... "
                "or a route for this value."
            )
        if target is Stop or isinstance(target, Stop):
            return STOP, None
        return ROUTE, target

    def _retry(self, inv: _Invocation) -> tuple[int, Any]:
        """Next attempt (RETRY, inv); over the cap (RAISE, error); stopping (DROPPED, None)."""
        if inv.attempt >= self.ctx.max_retries:
            warnings.warn(
                f"Step '{inv.name}' exceeded max retries ({self.ctx.max_retries}). "
                "Treating as error.",
                UserWarning,
                stacklevel=2,
            )
            return RAISE, RuntimeError(
                f"Step '{inv.name}' exceeded max retries ({self.ctx.max_retries}); "
                "raise Pipe(max_retries=...) or stop returning Retry()."
            )
        if self.ctx.stopping:
            return DROPPED, None
        return RETRY, _Invocation(
            inv.node,
            inv.name,
            self.ids.next(),
            inv.inv_id,
            inv.owner_id,
            self.attempts.next(inv.name),
            inv.scope,
            inv.has_item,
            inv.item,
            inv.map_run,
        )

    # ------------------------------------------------------------------ failures

    async def _handle_failure(
        self,
        inv: _Invocation,
        exc: Exception,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[int, Any]:
        """Local handler, then global handler, then report (spec §9.6)."""
        node = inv.node
        if node is not None and node.handler is not None:
            try:
                kwargs = self.ctx.inject(node.handler_injection, error=exc, step_name=inv.name)
                result = await _maybe_await(node.handler(**kwargs))
                return await self._after_handler(inv, result, exc, started, scope_meta)
            except Exception as handler_exc:
                if handler_exc.__cause__ is None and handler_exc is not exc:
                    handler_exc.__cause__ = exc
                exc = handler_exc
        return await self._global_handler(inv, exc, started, scope_meta)

    async def _global_handler(
        self,
        inv: _Invocation,
        exc: Exception,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[int, Any]:
        hook = self.error_hook
        if hook is not None:
            try:
                kwargs = self.ctx.inject(
                    tuple(hook.injection_metadata.items()),
                    error=exc,
                    step_name=inv.name,
                    token=None,
                )
                result = await _maybe_await(hook.func(**kwargs))
                return await self._after_handler(inv, result, exc, started, scope_meta)
            except Exception as hook_exc:
                exc = hook_exc
        return await self._report(inv, exc, started, scope_meta)

    async def _after_handler(
        self,
        inv: _Invocation,
        result: Any,
        exc: Exception,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[int, Any]:
        outcome, value = self._interpret(inv, result, exc)
        if outcome == RAISE:
            return await self._report(inv, value, started, scope_meta)
        return outcome, value

    async def _report(
        self,
        inv: _Invocation,
        exc: BaseException,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[int, Any]:
        """The error is final: CANCELLED for PipelineCancelled, else log + STEP_ERROR."""
        if isinstance(exc, PipelineCancelled):
            self.ctx.stopping = True
            self.channel.put_nowait(
                (
                    EventType.CANCELLED,
                    inv.name,
                    str(exc),
                    _time(),
                    inv.kind,
                    inv.inv_id,
                    inv.parent_id,
                    inv.owner_id,
                    inv.attempt,
                    inv.scope,
                    None,
                )
            )
            return CANCELLED, None
        _log_failure(inv.name, exc, self.ctx.state)
        self.publisher.errors[inv.inv_id or inv.name] = exc
        self.channel.put_nowait(
            (
                _STEP_ERROR,
                inv.name,
                str(exc),
                _time(),
                inv.kind,
                inv.inv_id,
                inv.parent_id,
                inv.owner_id,
                inv.attempt,
                inv.scope,
                self._meta_snapshot(inv, started, scope_meta, _ERROR),
            )
        )
        return FAIL, None

    async def _sub_failed(
        self,
        inv: _Invocation,
        exc: BaseException,
        started: float,
        scope_meta: _ScopedMetaImpl | None,
    ) -> tuple[int, Any]:
        """An exception escaped the child run: only the global handler applies."""
        sub_inv = _Invocation(
            inv.node,
            f"{inv.name}:sub",
            inv.inv_id,
            inv.parent_id,
            inv.owner_id,
            inv.attempt,
            inv.scope,
        )
        if not isinstance(exc, Exception):
            raise exc
        outcome, value = await self._global_handler(sub_inv, exc, started, scope_meta)
        return outcome, value

    async def _barrier_timed_out(self, node: NodePlan, timeout: float) -> None:
        """Watcher expiry: the node's failure chain with a TimeoutError, reported without ids."""
        inv = _Invocation(node, node.name, None, None, None, 1, ())  # type: ignore[arg-type]
        inv.kind = _STEP
        exc = TimeoutError(f"Barrier timeout for step '{node.name}' after {timeout}s")
        started = _perf()
        outcome, value = await self._handle_failure(inv, exc, started, None)
        if outcome in (OK, SKIP, RETRY, FAIL):
            # the join never ran: its successors do not run, even when a handler swallowed
            # the timeout (as in 0.12); a returned step name or a stop still takes effect
            outcome, value = DROPPED, None
        self.channel.put_nowait((inv, outcome, value))

    # ------------------------------------------------------------------ map

    async def _start_map(self, node: NodePlan, inv: _Invocation, result: Any) -> tuple[int, Any]:
        step = node.step
        worker = self.nodes[node.worker] if node.worker >= 0 else None
        is_async = hasattr(result, "__aiter__")
        if not is_async and not _is_iterable(result):
            raise ValueError(
                f"Step '{node.name}' decorated with @pipe.map must return an iterable, got "
                f"{type(result)}. Return a list, a generator or an async generator of items."
            )
        limit = step.max_concurrency  # type: ignore[attr-defined]
        ch = self.channel
        target = step.each  # type: ignore[attr-defined]
        if limit is not None and not isinstance(result, Sized):
            return await self._lazy_map(node, inv, worker, result, is_async, limit)
        items = await _materialize(node, result, is_async)
        n = len(items)
        await ch.put(
            (
                EventType.MAP_START,
                node.name,
                {"target": target, "item_count": n},
                _time(),
                _MAP,
                inv.inv_id,
                inv.parent_id,
                inv.owner_id,
                inv.attempt,
                inv.scope,
                None,
            )
        )
        offer = ch.offer
        for i in range(n):
            record = (
                EventType.MAP_WORKER,
                f"{target}[{i}]",
                {"index": i, "total": n, "target": target, "owner": node.name},
                _time(),
                _MAP,
                inv.inv_id,
                inv.parent_id,
                inv.owner_id,
                inv.attempt,
                inv.scope,
                None,
            )
            if not offer(record):
                await ch.put(record)
        map_run = _MapRun(inv, worker, n)
        if limit is None or limit >= n:
            workers = []
            if not self.ctx.stopping:
                workers = [self._worker(map_run, i, item) for i, item in enumerate(items)]
            map_run.started = len(workers)
            self._spawn_all(workers)  # all decided before any starts (eagerly)
            ch.put_nowait((inv, MAP_FED, map_run))
        else:
            source = iter(enumerate(items))
            await self._run_pool(map_run, limit, lambda: _next_sync(source), None)
        return OK, _DEFERRED

    async def _lazy_map(
        self,
        node: NodePlan,
        inv: _Invocation,
        worker: NodePlan | None,
        result: Any,
        is_async: bool,
        limit: int,
    ) -> tuple[int, Any]:
        target = node.step.each  # type: ignore[attr-defined]
        await self.channel.put(
            (
                EventType.MAP_START,
                node.name,
                {"target": target, "item_count": None},
                _time(),
                _MAP,
                inv.inv_id,
                inv.parent_id,
                inv.owner_id,
                inv.attempt,
                inv.scope,
                None,
            )
        )
        map_run = _MapRun(inv, worker, None)
        if is_async:
            source = result.__aiter__()
            lock = asyncio.Lock()
            await self._run_pool(map_run, limit, None, (source, lock), closing=result)
        else:
            sync_source = iter(enumerate(result))
            await self._run_pool(
                map_run, limit, lambda: _next_sync(sync_source), None, closing=result
            )
        return OK, _DEFERRED

    async def _run_pool(
        self,
        map_run: _MapRun,
        limit: int,
        next_sync: Any,
        async_source: Any,
        closing: Any = None,
    ) -> None:
        """A fixed pool of `limit` workers pulling items: O(limit) tasks and memory.

        `closing` is a lazy source (generator) closed by the last worker to leave, also
        when the run is cancelled or times out.
        """
        counter = _PoolCounter(limit)
        counter.source = closing
        for _ in range(limit - 1):
            self.kernel.spawn(self._pool_worker(map_run, counter, next_sync, async_source))
        await self._pool_worker(map_run, counter, next_sync, async_source)

    async def _pool_worker(
        self, map_run: _MapRun, counter: _PoolCounter, next_sync: Any, async_source: Any
    ) -> None:
        lazy = map_run.total is None
        try:
            while not self.ctx.stopping and not counter.failed:
                try:
                    if async_source is None:
                        got = next_sync()
                    else:
                        got = await _next_async(async_source, counter)
                except Exception as exc:
                    counter.failed = True
                    counter.error = exc
                    break
                if got is None:
                    break
                index, item = got
                map_run.started += 1
                self.pooled += 1
                if lazy:
                    await self._map_worker_event(map_run, index)
                await self._worker(map_run, index, item)
        finally:
            counter.live -= 1
            last = counter.live == 0
            if last and counter.source is not None:
                await _close_source(counter.source)
        if last:
            await self._close_feed(map_run, counter.error)

    async def _close_feed(self, map_run: _MapRun, error: BaseException | None) -> None:
        inv = map_run.inv
        if error is not None and isinstance(error, Exception):
            outcome, _ = await self._handle_failure(inv, error, _perf(), None)
            if outcome == SKIP:
                map_run.skipped = True
            elif outcome == FAIL:
                map_run.errored = True
            elif outcome == STOP or outcome == SUSPEND or outcome == CANCELLED:
                self.stop()
        self.channel.put_nowait((inv, MAP_FED, map_run))

    async def _map_worker_event(self, map_run: _MapRun, index: int) -> None:
        inv = map_run.inv
        node = inv.node
        assert node is not None
        target = node.step.each  # type: ignore[attr-defined]
        await self.channel.put(
            (
                EventType.MAP_WORKER,
                f"{target}[{index}]",
                {"index": index, "total": None, "target": target, "owner": node.name},
                _time(),
                _MAP,
                inv.inv_id,
                inv.parent_id,
                inv.owner_id,
                inv.attempt,
                inv.scope,
                None,
            )
        )

    def _worker(self, map_run: _MapRun, index: int, item: Any) -> Coroutine[Any, Any, None]:
        """The invocation of the map's worker for item `index` (a coroutine to run)."""
        owner = map_run.inv
        worker = map_run.worker
        name = worker.name if worker is not None else owner.node.step.each  # type: ignore[union-attr]
        inv = _Invocation(
            worker,
            name,
            self.ids.next(),
            owner.inv_id,
            owner.inv_id,
            self.attempts.next(name),
            (*owner.scope, f"{name}[{index}]"),
            True,
            item,
            map_run,
        )
        return self._invoke(inv, True)

    # ------------------------------------------------------------------ sub-pipelines

    async def _run_sub(self, node: NodePlan, inv: _Invocation, child_state: Any) -> tuple[int, Any]:
        child = node.step.pipeline  # type: ignore[attr-defined]
        name = inv.name
        offer = self.channel.offer
        put = self.channel.put
        prefix = f"{name}:"
        inv_id = inv.inv_id
        head = (name,)
        try:
            stream = child.run(child_state, self.ctx.context)
            try:
                async for event in stream:
                    if event.type is EventType.SUSPEND:
                        self.stop()
                    record = (
                        event,
                        prefix + event.stage,
                        inv_id,
                        inv_id,
                        head + tuple(event.scope),
                    )
                    if not offer(record):
                        await put(record)
            finally:
                await stream.aclose()
        except Exception as exc:
            raise _SubFailure(exc) from exc
        return OK, None


# ---------------------------------------------------------------------- helpers


class _Deferred:
    """Marker value: the owner's STEP_END comes later (map fan-out in progress)."""


_DEFERRED = _Deferred()


class _PoolCounter:
    __slots__ = ("live", "failed", "error", "index", "source")

    def __init__(self, live: int) -> None:
        self.live = live
        self.failed = False
        self.error: BaseException | None = None
        self.index = 0
        self.source: Any = None


async def _close_source(source: Any) -> None:
    """Close a lazy map source (async or sync generator) we stopped consuming."""
    try:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            close = getattr(source, "close", None)
            if close is not None:
                close()
    except Exception:  # a source failing while closing must not hide the run's outcome
        logging.getLogger(__name__).warning("map source %r failed while closing", source)


def _next_sync(source: Any) -> Any:
    try:
        return next(source)
    except StopIteration:
        return None


async def _next_async(async_source: Any, counter: _PoolCounter) -> Any:
    source, lock = async_source
    async with lock:
        try:
            item = await source.__anext__()
        except StopAsyncIteration:
            return None
        index = counter.index
        counter.index += 1
        return index, item


def _is_iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


async def _materialize(node: NodePlan, result: Any, is_async: bool) -> list[Any]:
    if not is_async:
        return list(result)
    cap = node.step.max_map_items  # type: ignore[attr-defined]
    items: list[Any] = []
    async for item in result:
        items.append(item)
        if len(items) > cap:
            raise ValueError(
                f"Step '{node.name}' (map) exceeded maximum of {cap} items from its async "
                "generator. Raise Pipe(max_map_items=...) or set max_concurrency=... to stream "
                "items lazily."
            )
    return items


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _log_failure(name: str, exc: BaseException, state: Any) -> None:
    logging.error(
        "Step '%s' failed with %s: %s\nState: %s",
        name,
        type(exc).__name__,
        exc,
        str(state)[:1000],
        exc_info=(type(exc), exc, exc.__traceback__),
    )
