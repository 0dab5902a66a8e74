"""_Orchestrator: `schedule()`, `emit()` and `complete_step()` for one run.

The orchestrator is the loop side of the kernel. It decides what runs: it starts
the roots, and for every completion record the runner's loop hands it (in channel
order, after the consumer has seen every event queued before it) it consults the
plan, the scheduler's barrier bitsets (`_Scheduler`, `_BarrierManager`) and the map
bookkeeping (`_MapFanOut`) and spawns the invocations that become ready through
the kernel. What an invocation does on the task side lives in `steps.py`
(`_StepRunner`), its error handling in `errors.py`, map fan-out in `maps.py`, and
every call of user code in `invoker.py`. Only the loop runs `complete_step()`.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from justpipe import _core
from justpipe._kernel.barriers import _BarrierManager
from justpipe._kernel.context import _Invocation, _MapRun, _RunContext
from justpipe._kernel.errors import _ErrorChain
from justpipe._kernel.injection import resolve_name
from justpipe._kernel.invoker import _LocalInvoker
from justpipe._kernel.journal import RunHandle, RunJournal
from justpipe._kernel.maps import _MapFanOut
from justpipe._kernel.outcomes import Outcome
from justpipe._kernel.plan import ExecutionPlan, MapPlan, NodePlan
from justpipe._kernel.records import Completion, completion, system_record
from justpipe._kernel.scheduler import _Scheduler
from justpipe._kernel.steps import _StepRunner
from justpipe.types import EventType, NodeKind

if TYPE_CHECKING:
    from justpipe._core._channel_py import ControlChannel as _ControlChannel
    from justpipe._core._metrics_py import MetricsRecorder as _MetricsRecorder
    from justpipe._kernel.kernel import _Kernel
    from justpipe.types import HookSpec

__all__ = ["_Orchestrator"]

# Hot-path aliases: a module global costs ~30 ns to read, an enum member's class attribute
# ~200 ns on 3.11 (timeit, docs/performance.md); only names read per event or per step.
_OK = Outcome.OK
_FAIL = Outcome.FAIL
_ROUTE = Outcome.ROUTE
_SKIP = Outcome.SKIP
_MAP_FED = Outcome.MAP_FED
_STOPS_RUN = frozenset({Outcome.STOP, Outcome.SUSPEND, Outcome.CANCELLED})
_STEP = NodeKind.STEP


class _Orchestrator:
    def __init__(
        self,
        ctx: _RunContext,
        plan: ExecutionPlan,
        channel: _ControlChannel,
        kernel: _Kernel,
        invoker: _LocalInvoker,
        errors: dict[str, BaseException],
        metrics: _MetricsRecorder,
        error_hook: HookSpec | None,
        unbounded_channel: bool,
        journal: RunJournal | None = None,
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.nodes = plan.nodes
        self.channel = channel
        self.kernel = kernel
        self.scheduler = _Scheduler(plan)
        self.barriers = _BarrierManager(
            plan, channel, kernel, self.scheduler.table, self._barrier_timed_out
        )
        ctx.on_stop = self.barriers.cancel_all
        self.ids = _core.InvocationIds(ctx.run_id)
        self.attempts = _core.AttemptCounter()
        self.errors = _ErrorChain(ctx, channel, invoker, errors, error_hook)
        self.maps = _MapFanOut(
            ctx, channel, kernel, self.ids, self.attempts, self.errors, unbounded_channel, journal
        )
        self.steps = _StepRunner(
            ctx, channel, invoker, self.errors, self.maps, metrics, self.ids, self.attempts, journal
        )
        self.completed = 0
        # invocations scheduled by the loop-side decision in progress (see `decide()`)
        self._pending: list[Coroutine[Any, Any, None]] | None = None
        # the run's journal (`journal.py`; a durable run's checkpointer), None for a plain
        # run, which pays one test per scheduled invocation for it
        self.journal = journal

    @property
    def tasks_started(self) -> int:
        """Tasks spawned plus pooled map-worker invocations (the `tasks.started` metric)."""
        return self.kernel.started + self.maps.pooled

    # ------------------------------------------------------------------ scheduling

    def start(self) -> None:
        """Schedule the roots (the loop's START_ROOTS record), as one decision."""
        self.decide(self.schedule_roots)

    def start_journaled(self, run: RunHandle) -> None:
        """`start()` of a journaled run: its journal schedules (`RunJournal.begin`: the
        roots, or what an earlier segment left) and records the decision before any starts.
        """
        assert self.journal is not None
        self._journaled(self.journal.begin, run, None)

    def schedule_roots(self) -> None:
        for index in self.plan.roots:
            self.schedule(self.nodes[index], None)

    def schedule(
        self,
        node: NodePlan | None,
        parent_id: str | None,
        name: str | None = None,
        scope: tuple[str, ...] = (),
        owner_id: str | None = None,
    ) -> None:
        """Spawn an invocation of `node` (refused once the run is stopping).

        `owner_id`: a new attempt of an invocation that a journaled run's earlier segment
        left unfinished (the invocation's own id otherwise).
        """
        journal = self.journal
        if self.ctx.stopping:
            if journal is not None:
                journal.refused(node, parent_id, name, scope)
            return
        stage = node.name if node is not None else (name or "?")
        inv_id = self.ids.next()
        owner = inv_id if owner_id is None else owner_id
        inv = _Invocation(node, stage, inv_id, parent_id, owner, self.attempts.next(stage), scope)
        if journal is not None:
            journal.scheduled(inv)
        pending = self._pending
        if pending is not None:
            pending.append(self.steps.run(inv))
        else:
            self.kernel.spawn(self.steps.run(inv))

    def decide(self, decision: Any, *args: Any) -> None:
        """Run a loop-side decision, then start what it scheduled, in order.

        Tasks start eagerly (see `_Kernel`), so a step may already run (and, say, cancel
        the run) while the loop is still deciding: every invocation one decision schedules
        is therefore decided first and started afterwards, as if each had waited for the
        next event-loop iteration. If deciding fails, the invocations it decided are closed
        unstarted. (`complete_step()` is the same, written out: it runs per invocation.)
        """
        pending = self._pending = []
        try:
            decision(*args)
        except BaseException:
            for coro in pending:  # decided but never started: no "never awaited" warning
                coro.close()
            raise
        finally:
            self._pending = None
        spawn = self.kernel.spawn
        for coro in pending:
            spawn(coro)

    def stop(self) -> None:
        self.ctx.stop()

    def cancel_joins(self) -> None:
        """Stop every barrier-timeout watcher (the run is ending)."""
        self.barriers.cancel_all()

    def emit(self, etype: EventType, stage: str, payload: Any = None) -> None:
        """Queue a run-level event from the loop itself (never waits for space)."""
        self.channel.put_nowait(system_record(etype, stage, payload))

    def channel_drained(self) -> None:
        """The loop found the channel empty (lets map pools held by their backlog go on)."""
        self.maps.channel_drained()

    def release(self) -> None:
        """The run is over: drop the back-reference that makes its objects a cycle.

        (The barrier manager calls back into this orchestrator.) Without it every run's
        object graph waits for the cyclic GC; with it, it is freed when the run ends.
        """
        self.barriers.release()
        self.ctx.on_stop = _nothing

    # ------------------------------------------------------------------ completion (loop side)

    def complete_step(self, record: Completion) -> None:
        # `self.decide(self._complete, record)`, written out: this runs once per invocation
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
            spawn = self.kernel.spawn
            for coro in pending:
                spawn(coro)

    def complete_journaled(self, record: Completion) -> None:
        """`complete_step()` of a journaled run: the journal hears of the completion first,
        and records the decision before what it scheduled starts."""
        journal = self.journal
        assert journal is not None
        inv, outcome, value = record
        journal.completing(inv, outcome, value)
        self._journaled(self._complete, record, inv)

    def _journaled(self, decision: Any, arg: Any, inv: _Invocation | None) -> None:
        """Run a decision, let the journal record it, then start what it scheduled.

        If the journal cannot record it (`RunJournal.decided` returns a failure), nothing
        the decision scheduled starts: the invocation completing (`inv`; None: the start,
        reported as ``"startup"``, the only code that ran since the journal last recorded)
        gets a STEP_ERROR and the run stops.
        """
        journal = self.journal
        assert journal is not None
        pending = self._pending = []
        try:
            decision(arg)
            failure = journal.decided()
        except BaseException:
            for coro in pending:
                coro.close()
            raise
        finally:
            self._pending = None
        if failure is not None:
            for coro in pending:
                coro.close()
            stage, error = failure
            self.fail(stage, error, inv)
            return
        spawn = self.kernel.spawn
        for coro in pending:
            spawn(coro)

    def fail(self, stage: str, error: Exception, inv: _Invocation | None = None) -> None:
        """Report `error` as a STEP_ERROR of `stage` (no invocation id: the step, if any, has
        published its end already) and stop the run: a journal could not record it."""
        node = inv.node if inv is not None else None
        scope = inv.scope if inv is not None else ()
        failed = _Invocation(node, stage, None, None, None, 1, scope)
        self.errors.report(failed, error, time.perf_counter(), None)
        self.ctx.stop()

    def _complete(self, record: Completion) -> None:
        inv, outcome, value = record
        self.completed += 1
        map_run = inv.map_run
        if map_run is not None:
            self._worker_done(map_run, inv, outcome, value)
        elif outcome is _MAP_FED:
            value.fed = True
            self._finish_map(value)
        elif outcome is _OK or outcome is _FAIL:
            self._advance(inv.node)
        elif outcome is _ROUTE:
            self._route(value, inv)
            if inv.kind is not _STEP:
                self._advance(inv.node)
        elif outcome in _STOPS_RUN:
            self.ctx.stop()

    def advance(self, node: NodePlan) -> None:
        """Schedule `node`'s static successors, as if it had completed (a journal's
        continuation of a step that suspended an earlier segment)."""
        self._advance(node)

    def restore_joins(
        self, arrivals: dict[str, list[int]], disabled: list[str] | tuple[str, ...]
    ) -> None:
        """The join table as a journal recorded it (`RunHandle.restore_joins`)."""
        index = self.plan.index

        def node_of(name: str) -> int:
            found = index.get(name)
            if found is None:
                raise ValueError(f"restore_joins: the pipeline has no step {name!r}")
            return found

        table: dict[int, Iterable[int]] = {node_of(name): slots for name, slots in arrivals.items()}
        off = {node_of(name) for name in disabled}
        self.scheduler.table.restore(table, off)
        for node, slots in table.items():
            if slots and node not in off:  # a wave under way: an ALL join's watcher restarts
                self.barriers.wave_started(self.nodes[node])

    def resume_map(
        self,
        node: MapPlan,
        parent_id: str | None,
        owner_id: str,
        scope: tuple[str, ...],
        items: list[Any],
        done: set[int],
    ) -> None:
        """A new attempt of map `node` running the items not `done` (`RunHandle.resume_map`)."""
        pending = self._pending
        assert pending is not None, "resume_map() is for a journal's decision"
        name = node.name
        inv = _Invocation(
            node, name, self.ids.next(), parent_id, owner_id, self.attempts.next(name), scope
        )
        if self.journal is not None:
            self.journal.scheduled(inv)
        pending.append(self.steps.resume_map(node, inv, items, done))

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
            elif not self.ctx.stopping:  # a stopping run spawns no watcher (§9.2)
                self.barriers.wave_started(nodes[~x])

    def _route(self, target: Any, source: _Invocation) -> None:
        name = resolve_name(target)
        self.schedule(self.plan.node(name), source.inv_id, name, source.scope)

    def _worker_done(
        self, map_run: _MapRun, inv: _Invocation, outcome: Outcome, value: Any
    ) -> None:
        map_run.finished += 1
        if outcome is _SKIP:
            map_run.skipped = True
        elif outcome is _ROUTE:
            self._route(value, inv)
        elif outcome in _STOPS_RUN:
            self.ctx.stop()
        if map_run.fed and map_run.finished == map_run.started:  # else: not yet (per item)
            self._finish_map(map_run)

    def _finish_map(self, map_run: _MapRun) -> None:
        if self.maps.finish_if_done(map_run):
            self._advance(map_run.inv.node)

    # ------------------------------------------------------------------ barrier timeouts

    async def _barrier_timed_out(self, node: NodePlan, timeout: float) -> None:
        """Watcher expiry: the node's failure chain with a TimeoutError, reported without ids."""
        inv = _Invocation(node, node.name, None, None, None, 1, ())
        inv.kind = _STEP
        exc = TimeoutError(f"Barrier timeout for step '{node.name}' after {timeout}s")
        outcome, value = await self.errors.handle(inv, exc, time.perf_counter(), None)
        if outcome is _OK or outcome is _SKIP or outcome is Outcome.RETRY or outcome is _FAIL:
            # the join never ran: its successors do not run, even when a handler swallowed
            # the timeout (as in 0.12); a returned step name or a stop still takes effect
            outcome, value = Outcome.DROPPED, None
        self.channel.put_nowait(completion(inv, outcome, value))


def _nothing() -> None:
    pass
