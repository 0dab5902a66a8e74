"""The run journal: the seam through which an extension records a run and continues one.

A run may be given a `RunJournal` (durable runs give their checkpointer, see
`justpipe.durable`). The kernel tells it what happens at the points it already has, in
this order:

* `run_began(run)` when the stream starts, before the startup hooks: `run` is the
  `RunHandle`, the journal's only way into the run (its counters, its joins, and
  scheduling while a decision is open);
* `begin(run)` in place of scheduling the roots (the default schedules them): a journal
  that continues a run schedules what was left instead;
* `scheduled(inv)` for every invocation the run schedules, `refused(...)` for each one
  a stopping run refuses;
* `completing(inv, outcome, value)` for each completion, before the run acts on it;
* `map_started(map_run, items)` when a map hands out its items (with a journal, a lazy
  map's source is read whole first: its items are part of what is recorded, and its
  events stay those of a lazy map), and `map_closed(map_run)` when a map has published
  MAP_COMPLETE, whose answer says whether its successors run now;
* `decided()` after each of those decisions (`begin`, a completion): what it scheduled
  has not started yet. The journal records here; an error it returns (a state it cannot
  save) fails the decision: its invocations never start, the run publishes a STEP_ERROR
  for the step (``"startup"`` for `begin`) and stops;
* the sub-pipeline steps' child runs: `resumes_sub`, `sub_stream`, `sub_ended`,
  `sub_failed` (a journal may run them as journaled runs of their own);
* `finishing()` once the run is idle and its shutdown hooks ran (may return a failure,
  published as a STEP_ERROR before FINISH), `finished(finish)` before the FINISH is
  published (may replace it), and `ended()` when the stream is over, however it ended
  (what it returns, if anything, is awaited before the stream ends).

A plain run has no journal: the kernel tests for None at these points (once per
scheduled invocation, once per map, once per sub step; a completion of a plain run goes
through a path without any), so a plain run pays nothing measurable for the seam.

`RunJournal` is also the do-nothing default: an implementation overrides what it needs.
The invocations and maps it is told of are the kernel's own records, typed here as the
read-only views `InvocationInfo` and `MapInfo`: a journal reads them and keeps them,
never changes them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from justpipe._kernel.outcomes import Outcome
from justpipe._kernel.plan import ExecutionPlan, MapPlan, NodePlan, SubPlan
from justpipe.types import Event

if TYPE_CHECKING:
    from justpipe._core._events_py import EventFactory
    from justpipe._core._ids_py import AttemptCounter, InvocationIds
    from justpipe._kernel.orchestrator import _Orchestrator
    from justpipe.observability.observer import ObserverProtocol

__all__ = ["InvocationInfo", "JournalFailure", "MapInfo", "RunHandle", "RunJournal"]

JournalFailure = tuple[str, Exception]
"""What a journal could not record: the stage to blame and the error (a STEP_ERROR)."""


class InvocationInfo(Protocol):
    """One execution of one node, as a journal sees it (read-only)."""

    @property
    def node(self) -> NodePlan | None: ...
    @property
    def name(self) -> str: ...
    @property
    def inv_id(self) -> str | None: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def owner_id(self) -> str | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def scope(self) -> tuple[str, ...]: ...
    @property
    def map_run(self) -> MapInfo | None: ...


class MapInfo(Protocol):
    """One map fan-out, as a journal sees it (read-only)."""

    @property
    def inv(self) -> InvocationInfo: ...
    @property
    def worker_name(self) -> str: ...
    @property
    def closed(self) -> bool: ...


class RunJournal:
    """Records a run as it goes; every method does nothing here (see the module)."""

    run_id: str | None = None
    """The run's id, when the journal continues a run (None: the run gets a new one)."""
    segment: int = 1
    """Which segment of its run this stream is (observers read it in `ObserverMeta`)."""

    def run_began(self, run: RunHandle) -> None:
        """The stream starts (before startup hooks and observers)."""

    def begin(self, run: RunHandle) -> None:
        """Schedule this segment's first invocations (the START_ROOTS decision)."""
        run.schedule_roots()

    def scheduled(self, inv: InvocationInfo) -> None:
        """`inv` was scheduled (it starts once the decision is recorded)."""

    def refused(
        self, node: NodePlan | None, parent_id: str | None, name: str | None, scope: tuple[str, ...]
    ) -> None:
        """A stopping run refused to schedule `node` (what `RunHandle.schedule` would take)."""

    def completing(self, inv: InvocationInfo, outcome: Outcome, value: Any) -> None:
        """`inv` completed; the run acts on it next (`value` as its `outcome` says)."""

    def map_started(self, map_run: MapInfo, items: list[Any]) -> None:
        """A map hands out `items` (all of them; a resumed map: every item, done or not)."""

    def map_closed(self, map_run: MapInfo) -> bool:
        """A map published MAP_COMPLETE: True lets its successors run (False: kept for later)."""
        return True

    def decided(self) -> JournalFailure | None:
        """A decision was made; none of what it scheduled has started. None: go on."""
        return None

    def resumes_sub(self, inv: InvocationInfo) -> bool:
        """Whether sub step `inv` continues a child run instead of calling its function."""
        return False

    def sub_stream(
        self, node: SubPlan, inv: InvocationInfo, child_state: Any
    ) -> AsyncGenerator[Event, None] | None:
        """The child run of sub step `inv` (None: a plain run of the child pipeline)."""
        return None

    def sub_ended(self, inv: InvocationInfo) -> tuple[Outcome, Any]:
        """The child run of `inv` ended (its stream is exhausted): the sub step's outcome."""
        return Outcome.OK, None

    def sub_failed(self, inv: InvocationInfo) -> None:
        """The child run of `inv` failed (the sub step fails)."""

    def finishing(self) -> JournalFailure | None:
        """The run is idle and its shutdown hooks ran: FINISH is next. None: go on."""
        return None

    def finished(self, finish: Event) -> Event:
        """The FINISH event, before anyone hears of it: the one to publish."""
        return finish

    def ended(self) -> Awaitable[None] | None:
        """The stream is over (FINISH, a closed stream or a cancelled consumer).

        Nothing outlives a run: a journal that started a task returns what to await until
        it is over (None: nothing, the stream ends without another event-loop turn).
        """
        return None


class RunHandle:
    """A journal's access to its run: what the run is, its counters, and scheduling.

    The counters (`events`, `ids`, `attempts`) are the run's `_core` objects, with
    `snapshot()` / `restore()`; the joins are read and restored through `joins()` /
    `restore_joins()`. The scheduling methods (`schedule_roots`, `schedule`,
    `continue_after`, `resume_map`) may only be called from `RunJournal.begin` (or from
    `completing`), while the run's decision is open: what they schedule starts once
    the decision has been recorded (`RunJournal.decided`).
    """

    __slots__ = ("_orch", "_runner")

    def __init__(self, runner: Any, orch: _Orchestrator) -> None:
        self._runner = runner
        self._orch = orch

    # ------------------------------------------------------------------ the run

    @property
    def run_id(self) -> str:
        return str(self._runner.run_id)

    @property
    def pipe(self) -> Any:
        """The `Pipe` being run."""
        return self._runner.pipe

    @property
    def plan(self) -> ExecutionPlan:
        return self._orch.plan

    @property
    def start(self) -> Any:
        """The run's `start=` (None: its roots)."""
        return self._runner.start

    @property
    def state(self) -> Any:
        return self._runner.state

    @property
    def context(self) -> Any:
        return self._runner.context

    @property
    def stopping(self) -> bool:
        """Whether the run stopped scheduling (a Stop, a Suspend, a cancellation...)."""
        return bool(self._orch.ctx.stopping)

    @property
    def completed(self) -> int:
        """How many completions the run has processed."""
        return self._orch.completed

    def observe(self, observer: ObserverProtocol) -> None:
        """Add an observer to this run only (it hears the events from now on)."""
        self._runner.publisher.observers.append(observer)

    # ------------------------------------------------------------------ counters and joins

    @property
    def events(self) -> EventFactory[Event]:
        """The run's event factory: `snapshot()` is the last `seq`, `restore(seq)`."""
        return self._runner.publisher._factory  # type: ignore[no-any-return]

    @property
    def ids(self) -> InvocationIds:
        return self._orch.ids

    @property
    def attempts(self) -> AttemptCounter:
        return self._orch.attempts

    def joins(self) -> tuple[dict[str, tuple[int, ...]], tuple[str, ...]]:
        """The joins' arrivals in their current wave, by step name, and the disabled joins."""
        arrivals, disabled = self._orch.scheduler.table.snapshot()
        nodes = self._orch.nodes
        return (
            {nodes[index].name: slots for index, slots in arrivals.items()},
            tuple(nodes[index].name for index in disabled),
        )

    def restore_joins(
        self, arrivals: dict[str, list[int]], disabled: list[str] | tuple[str, ...] = ()
    ) -> None:
        """Go on from `joins()`: the join table restored, timeout watchers started again.

        An ALL join with a `barrier_timeout` and arrivals starts its watcher afresh (a whole
        timeout from now, BARRIER_WAIT again). Names the plan does not have are ValueError.
        """
        self._orch.restore_joins(arrivals, disabled)

    # ------------------------------------------------------------------ scheduling

    def schedule_roots(self) -> None:
        self._orch.schedule_roots()

    def schedule(
        self,
        step: str,
        parent_id: str | None,
        scope: tuple[str, ...] = (),
        owner_id: str | None = None,
    ) -> None:
        """Schedule `step` (a name the plan lacks fails at run time, as a route to it would).

        `owner_id`: the invocation continues an earlier one (a new attempt of an invocation
        that was running when its run stopped), whose owner id it keeps.
        """
        self._orch.schedule(self._orch.plan.node(step), parent_id, step, scope, owner_id)

    def continue_after(self, step: str) -> None:
        """Schedule `step`'s static successors, as if it had just completed normally."""
        node = self._orch.plan.node(step)
        if node is None:
            raise ValueError(f"continue_after({step!r}): the pipeline has no step {step!r}")
        self._orch.advance(node)

    def resume_map(
        self,
        step: str,
        parent_id: str | None,
        owner_id: str,
        scope: tuple[str, ...],
        items: list[Any],
        done: set[int],
    ) -> None:
        """A new attempt of map `step` that runs only the items whose index is not `done`.

        Its source is not called: MAP_START says the whole count, a MAP_WORKER goes out
        for each remaining item, then MAP_COMPLETE and the map's STEP_END as for any map.
        """
        node = self._orch.plan.node(step)
        if not isinstance(node, MapPlan):
            raise ValueError(f"resume_map({step!r}): the pipeline has no map step {step!r}")
        self._orch.resume_map(node, parent_id, owner_id, scope, items, done)
