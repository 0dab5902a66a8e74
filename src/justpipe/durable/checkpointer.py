"""The checkpointer: what a durable run saves, when, and how a resumed run picks it up.

One `Checkpointer` per segment of a durable run (the first run, then each resume). It is
the run's journal (`justpipe._kernel.journal.RunJournal`): the kernel tells it what
happens, and it reaches the run only through the `RunHandle` it is given. What it does
at each point:

* ``run_began``: takes the run's lease, restores the run's counters from the checkpoint
  (resume) and writes the segment's first checkpoint (a run that crashes before anything
  else is still resumable);
* ``begin``: schedules the roots (a fresh run) or the frontier (a resumed run, its joins'
  arrivals restored first, see below);
* ``scheduled`` / ``refused`` / ``completing`` / ``map_started`` / ``map_closed``: keep
  the frontier's books;
* ``decided``: every ``every`` completions, writes a checkpoint (a state it cannot save
  fails the completing step: a STEP_ERROR, and the run ends failed);
* ``finishing`` / ``finished``: the last checkpoint (``suspended`` or ``finished``) before
  the FINISH is published, then the lease is released.

The frontier is every invocation that was scheduled and has not completed (by owner id),
plus what the run refused to schedule once a `Suspend` stopped it, plus each suspending
step (its successors run when the run resumes: the continuation). A resumed run runs
again what was live (a new attempt, its parent the old invocation) and schedules the
rest as the stopped run would have. A map that a suspending run stopped before all its
items ran publishes MAP_COMPLETE and its STEP_END as in a plain run, but stays in the
frontier (its items and the indices done): the resumed run runs the rest, then its
successors.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable
from typing import Any

from justpipe._kernel.injection import resolve_name
from justpipe._kernel.journal import (
    InvocationInfo,
    JournalFailure,
    MapInfo,
    RunHandle,
    RunJournal,
)
from justpipe._kernel.outcomes import ChildSuspended, Outcome
from justpipe._kernel.plan import MapPlan, NodePlan, SubPlan
from justpipe.durable.serializer import StateSerializationError, StateSerializer
from justpipe.durable.store import (
    FINISHED,
    RUNNING,
    SUSPENDED,
    Checkpoint,
    CheckpointStore,
    LeaseLostError,
)
from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.storage.serialize import event_to_json
from justpipe.storage.url import StorageUnavailableError
from justpipe.types import Event, EventType, PipelineEndData, PipelineTerminalStatus

__all__ = ["FORMAT", "Checkpointer", "SuspendedEndData", "done_indices"]

_log = logging.getLogger("justpipe.durable")

FORMAT = 1
"""The checkpoint document's format; a resume refuses a checkpoint of another format."""


@dataclasses.dataclass(frozen=True)
class SuspendedEndData(PipelineEndData):
    """FINISH payload of a durable run that suspended: resume it with ``pipe.resume(run_id)``.

    Everything `PipelineEndData` has (status SUCCESS, as upstream reports a `Suspend`), plus
    the run id to resume, this segment's number (1 for the first run) and the steps that
    suspended, with their reasons. A durable run that finished has a plain
    `PipelineEndData`; so ``isinstance(payload, SuspendedEndData)`` tells them apart.
    """

    run_id: str = ""
    segment: int = 1
    suspended_steps: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


_SUSPEND = Outcome.SUSPEND
_FINISH = EventType.FINISH
_DROPPED = Outcome.DROPPED
_MAP_FED = Outcome.MAP_FED

Refused = tuple[NodePlan | None, str | None, str | None, tuple[str, ...]]


class Checkpointer(RunJournal):
    run_id: str  # (a durable run's: always known, the run's or a new one)

    def __init__(
        self,
        store: CheckpointStore,
        serializer: StateSerializer,
        every: int,
        owner: str,
        run_id: str,
        pipe_name: str,
        pipeline_hash: str,
        version: str,
        lease_ttl_s: float,
        restored: dict[str, Any] | None = None,
        segment: int = 1,
    ) -> None:
        self.store = store
        self.serializer = serializer
        self.every = every
        self.owner = owner
        self.run_id = run_id
        self.pipe_name = pipe_name
        self.pipeline_hash = pipeline_hash
        self.version = version
        self.lease_ttl_s = lease_ttl_s
        self.restored = restored
        self.segment = segment
        self.writes = 0
        self.write_s = 0.0  # time spent checkpointing (serializing + the store's write)
        self.run: RunHandle  # set by `run_began`
        self.attached = False
        self._since = 0
        self._after: str | None = None  # the decision `decided()` records: begin / completion
        self._blame = "startup"  # the stage a state that cannot be saved is reported on
        self._live: dict[str | None, InvocationInfo] = {}  # scheduled, not completed: by owner
        self._held: list[Refused] = []  # refused by the stopping run: scheduled on resume
        self._suspenders: list[tuple[InvocationInfo, str]] = []
        self._reruns: list[InvocationInfo] = []
        # maps in progress, by the map invocation's owner id: their items (encoded once as
        # checkpoint data) and the indices whose worker completion was processed
        self._maps: dict[str | None, _MapProgress] = {}
        self._resumed_done: dict[str, _MapProgress] = {}
        # the attempt counters: a store that keeps them (`keeps_attempts`) gets, with each
        # checkpoint, only the counts that may have changed since the previous one (see
        # `_changed_attempts`): the names of the invocations completed since, noted here
        self._touched: set[str] = set()
        self._counts_beside = False  # set by `write()`: the document holds no counts
        # parts kept beside the document by a store that keeps parts (`keeps_parts`): the
        # keys it holds, and what the next save adds (JSON text) or drops (None)
        self._parts_beside = False
        self._parts_saved: set[str] = set(restored.get("parts") or ()) if restored else set()
        self._parts_out: dict[str, str | None] = {}
        self._events: list[str] | None = None  # event JSON not yet written (stores that keep it)
        self._heartbeat: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None  # cancelled, not yet awaited
        self._done = False
        self._lost = False
        self._note: str | None = None
        # the state as last encoded; once `_frozen`, it is not encoded again: the run ended
        # (its final state is encoded), or its state cannot be saved (`_failure`)
        self._state: Any = None
        self._frozen = False
        self._failure: StateSerializationError | None = None
        self._started = restored is not None and bool(restored["started"])
        self.subs: Any = None  # `nested.SubRuns` when the pipeline has sub-pipeline steps
        self._trace: dict[str, str] | None = None  # this segment's run span (OpenTelemetry)

    # ------------------------------------------------------------------ the journal

    def run_began(self, run: RunHandle) -> None:
        self.run = run
        self.attached = True
        if any(isinstance(node, SubPlan) for node in run.plan.nodes):
            from justpipe.durable.nested import SubRuns

            # its sub-pipelines run as nested durable runs, checkpointed inside this one's
            self.subs = SubRuns(self)
        self._acquire(run)
        if self.restored is not None:
            data = self.restored
            run.ids.restore(int(data["invocations"]))
            run.attempts.restore({str(k): int(n) for k, n in data["attempts"].items()})
            run.events.restore(int(data["seq"]))
        self.write(RUNNING)

    def _acquire(self, run: RunHandle) -> None:
        """Take the run's lease (renewed from a heartbeat) and tap its events to store them."""
        if run.pipe.persist and getattr(self.store, "saves_events", False):
            # a persisted run's events go with the checkpoints, in their transactions
            self._events = []
            run.observe(_EventTap(self._events))
        self.store.acquire(self.run_id, self.owner, self.lease_ttl_s)
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat(), name=f"justpipe-durable-lease-{self.run_id}"
        )

    def begin(self, run: RunHandle) -> None:
        """The START_ROOTS of this segment: the roots (a fresh run) or the frontier.

        Like every loop-side decision, what it schedules starts only once it is recorded
        (`decided`), so the checkpoint written then holds them all, none started yet.
        """
        self._started = True
        self._after = "begin"
        data = self.restored
        if data is None or not data["started"]:
            run.schedule_roots()
        else:
            self._reschedule(data)

    def _reschedule(self, data: dict[str, Any]) -> None:
        run = self.run
        plan = run.plan
        self._restore_joins(data)
        for entry in data["frontier"]:
            name = entry["step"]
            node = plan.node(name)
            scope = tuple(entry["scope"])
            child = entry.get("child")
            if child is not None and self.subs is not None and isinstance(node, SubPlan):
                self.subs.restored[str(entry["owner"])] = child  # the child goes on
            if entry.get("map") is not None and isinstance(node, MapPlan):
                self._rerun_map(node, entry)
            elif entry["rerun"]:  # was running: a new attempt, child of the one that was lost
                run.schedule(name, entry["inv"], scope, owner_id=entry["owner"])
            else:
                run.schedule(name, entry["parent"], scope)
        for entry in data["suspended"]:  # the continuation of each suspending step
            step = entry["step"]
            if plan.node(step) is not None and not entry.get("worker"):  # (a worker's: its map's)
                run.continue_after(step)

    def _restore_joins(self, data: dict[str, Any]) -> None:
        """The joins' arrivals (and timed-out joins) as checkpointed, those the plan still has.

        (A forced resume of a changed pipeline may name joins or slots it no longer has.)
        """
        plan = self.run.plan
        counts = plan.slot_counts
        arrivals: dict[str, list[int]] = {}
        for join, slots in data["arrivals"].items():
            index = plan.index.get(join)
            if index is None:
                continue
            kept = {int(slot) for slot in slots if 0 <= int(slot) < counts[index]}
            if kept and len(kept) < counts[index]:
                arrivals[join] = sorted(kept)
        disabled = [join for join in data.get("disabled", ()) if join in plan.index]
        if arrivals or disabled:
            self.run.restore_joins(arrivals, disabled)

    def _rerun_map(self, node: MapPlan, entry: dict[str, Any]) -> None:
        """A map that was in progress: a new attempt that runs only its remaining items."""
        saved = entry["map"]
        key = saved.get("items_part")
        if key is not None:  # kept beside the document (a store that keeps parts)
            assert self.restored is not None
            encoded = json.loads(self.restored["parts"][key])
        else:
            encoded = saved["items"]
        items = self.serializer.decode(encoded)
        owner = entry["owner"]
        progress = _MapProgress.restore(saved)
        progress.part = key
        self._resumed_done[owner] = progress
        if self.subs is not None:  # its workers' sub-pipelines go on
            for kept in saved.get("children", ()):
                self.subs.restored[f"{owner}#{int(kept['index'])}"] = kept["child"]
        self.run.resume_map(
            node.name, entry["inv"], owner, tuple(entry["scope"]), items, progress.indices()
        )

    def scheduled(self, inv: InvocationInfo) -> None:
        self._live[inv.owner_id] = inv

    def refused(
        self, node: NodePlan | None, parent_id: str | None, name: str | None, scope: tuple[str, ...]
    ) -> None:
        self._held.append((node, parent_id, name, scope))

    def map_started(self, map_run: MapInfo, items: list[Any]) -> None:
        owner = map_run.inv.owner_id
        progress = self._resumed_done.pop(owner, None) if owner is not None else None
        if progress is None:
            progress = _MapProgress()
        progress.run = map_run
        progress.items = items
        self._maps[owner] = progress

    def map_closed(self, map_run: MapInfo) -> bool:
        """A map published MAP_COMPLETE: kept (False) if a suspending run cut it short."""
        owner = map_run.inv.owner_id
        progress = self._maps.get(owner)
        if progress is not None and not progress.complete() and self._suspending():
            return False  # in the frontier: the resumed run runs the rest, then its successors
        self._live.pop(owner, None)
        self._map_closed(owner)
        return True

    def completing(self, inv: InvocationInfo, outcome: Outcome, value: Any) -> None:
        """Keep the frontier's books (before the run acts on the completion)."""
        self._after = "completion"
        self._blame = inv.name
        self._touched.add(inv.name)
        map_run = inv.map_run
        if map_run is not None:
            if outcome is not _SUSPEND or value.__class__ is not ChildSuspended:
                kept = self._maps.get(map_run.inv.owner_id)
                if kept is not None and inv.scope:
                    kept.add(item_index(inv.scope[-1]))
                if outcome is _SUSPEND:  # a worker's: the map goes on when the run resumes
                    self._suspenders.append((inv, str(getattr(value, "reason", ""))))
            # (else its sub-pipeline suspended: the item is not done, `subs` keeps its child)
        elif outcome is not _MAP_FED and inv.inv_id is not None:  # (a map's: `map_closed`)
            self._live.pop(inv.owner_id, None)
            if outcome is _SUSPEND:
                if value.__class__ is not ChildSuspended:  # (a child's: kept by `subs`)
                    self._suspenders.append((inv, str(getattr(value, "reason", ""))))
            elif outcome is _DROPPED and self.run.stopping:
                self._reruns.append(inv)  # a retry the stopping run refused: runs on resume

    def resumes_sub(self, inv: InvocationInfo) -> bool:
        return self.subs is not None and bool(self.subs.restoring(inv))

    def sub_stream(
        self, node: SubPlan, inv: InvocationInfo, child_state: Any
    ) -> AsyncGenerator[Event, None] | None:
        """A nested durable run (`nested.py`), checkpointed inside this run's checkpoints."""
        if self.subs is None:
            return None
        return self.subs.child_stream(node, inv, child_state)  # type: ignore[no-any-return]

    def sub_ended(self, inv: InvocationInfo) -> tuple[Outcome, Any]:
        if self.subs is None:
            return Outcome.OK, None
        return self.subs.child_ended(inv)  # type: ignore[no-any-return]

    def sub_failed(self, inv: InvocationInfo) -> None:
        if self.subs is not None:
            self.subs.child_failed(inv)

    def decided(self) -> JournalFailure | None:
        """Checkpoint after the segment's start, and after every `every` completions."""
        after, self._after = self._after, None
        every = self.every
        if not every or (after == "completion" and self.run.stopping):
            return None
        if after == "completion":
            self._since += 1
            if self._since < every:
                return None
            self._since = 0
        try:
            self.write(RUNNING)
        except StateSerializationError as exc:
            self._cannot_save(exc)
            return self._blame, exc
        return None

    def finishing(self) -> JournalFailure | None:
        """The state is final: encode it now (the last checkpoint's), or fail the run."""
        if self._frozen:
            return None
        try:
            self._state = self.encoded_state()
            for progress in self._maps.values():  # the items a suspended run's frontier keeps
                if progress.encoded is None and progress.items is not None:
                    name = progress.run.inv.name if progress.run is not None else "?"
                    progress.encoded = self.serializer.encode(progress.items, f"map {name!r} item")
        except StateSerializationError as exc:
            self._cannot_save(exc)
            return self._blame, exc
        self._frozen = True
        return None

    def _cannot_save(self, error: StateSerializationError) -> None:
        """The state cannot be saved: the run fails, its checkpoints keep the last state
        that could be (for inspection; a failed run is finished, not resumable)."""
        self._failure = error
        self._frozen = True
        self._note = f"the state could not be checkpointed: {error}"

    def _suspending(self) -> bool:
        """Whether a Suspend (a step's, a worker's or a sub-pipeline's) is stopping the run."""
        subs = self.subs
        return bool(self._suspenders) or (
            subs is not None and bool(subs.suspended or subs.held)
        )

    def finished(self, finish: Event) -> Event:
        """The run's FINISH is built: its last checkpoint, then the lease goes.

        A run that suspended (and did not fail) ends with a `SuspendedEndData` payload: its
        status is SUCCESS, as for any run that returned `Suspend` (upstream's enum has no
        other), and the payload says it can be resumed, where, and why.
        """
        data = finish.payload
        status = data.status if isinstance(data, PipelineEndData) else None
        subs = self.subs
        resumable = len(self._suspenders) + (subs.suspends if subs is not None else 0)
        suspended = resumable > 0 and status is PipelineTerminalStatus.SUCCESS
        metrics = data.metrics if isinstance(data, PipelineEndData) else None
        if metrics is not None and metrics.suspends > resumable:
            # a Suspend this run cannot resume (inside a sub-pipeline, or a map source's
            # error handler): say so, and end the run as finished rather than lose steps
            suspended = False
            self._note = (
                "a Suspend returned by a map source's error handler ends a durable run: "
                "resuming from there is not supported yet"
            )
            warnings.warn(
                f"durable run {self.run_id!r}: {self._note}; the run is recorded as finished.",
                UserWarning,
                stacklevel=2,
            )
        if suspended and isinstance(data, PipelineEndData):
            fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(PipelineEndData)}
            inner: tuple[tuple[str, ...], tuple[str, ...]] = (
                subs.suspended_names() if subs is not None else ((), ())
            )
            payload = SuspendedEndData(
                **fields,
                run_id=self.run_id,
                segment=self.segment,
                suspended_steps=tuple(inv.name for inv, _ in self._suspenders) + inner[0],
                reasons=tuple(reason for _, reason in self._suspenders) + inner[1],
            )
            finish = dataclasses.replace(finish, payload=payload)
        events = self._events
        if events is not None:
            events.append(event_to_json(finish))
        if not self._frozen:  # (an internal error ended the run: `finishing` was not called)
            self.finishing()  # (what cannot be saved is only noted: the run failed already)
        self.write(SUSPENDED if suspended else FINISHED, status)
        self._events = None  # the FINISH is written; observers hear it after this
        self._release()
        return finish

    def ended(self) -> Awaitable[None] | None:
        """The stream is over, however it ended: stop renewing the lease and give it back.

        A segment that ended without its FINISH (the consumer closed the stream, or its task
        was cancelled) first writes a last ``running`` checkpoint: what was running runs
        again on resume, and `seq` goes on after the last event it published. Returns the
        lease's cancelled heartbeat to await (nothing outlives the run), if there is one.
        """
        if not self._done and not self._lost and self._heartbeat is not None:
            with contextlib.suppress(Exception):  # the previous checkpoint still stands
                self.write(RUNNING)
        self._release()
        beat, self._beating = self._beating, None
        return None if beat is None else _cancelled(beat)

    # ------------------------------------------------------------------ writing

    def document(self, status: str, end: PipelineTerminalStatus | None = None) -> dict[str, Any]:
        run = self.run
        frontier: list[dict[str, Any]] = []
        subs = self.subs
        for owner, inv in self._live.items():
            entry = _rerun_entry(inv)
            if subs is not None:
                if owner in subs.suspended:
                    continue  # its child suspended (below); its completion is on its way
                child = subs.document_of(owner)
                if child is not None:
                    entry["child"] = child
            kept = self._maps.get(owner)
            if kept is not None and kept.run is not None and kept.items is not None:
                entry["map"] = self._map_entry(owner, inv.name, kept, kept.items)
                if subs is not None:
                    children = subs.of_map(owner, kept.run.worker_name)
                    if children:
                        entry["map"]["children"] = children
            frontier.append(entry)
        for inv in self._reruns:
            frontier.append(_rerun_entry(inv))
        if subs is not None:  # sub steps whose child suspended: re-entered, the child resumes
            for inv, child in subs.suspended.values():
                frontier.append({**_rerun_entry(inv), "child": child})
        for node, parent, name, scope in self._held:
            step = node.name if node is not None else (name or "?")
            frontier.append({"step": step, "rerun": False, "parent": parent, "scope": list(scope)})
        arrivals, disabled = run.joins()
        if not self._frozen:
            self._state = self.encoded_state()
        return {
            "format": FORMAT,
            "version": self.version,
            "run_id": self.run_id,
            "pipe_name": self.pipe_name,
            "pipeline_hash": self.pipeline_hash,
            "status": status,
            "end": None if end is None else end.value,
            "segment": self.segment,
            "start": None if run.start is None else resolve_name(run.start),
            "started": self._started,
            "seq": run.events.snapshot(),
            "invocations": run.ids.snapshot(),
            # every count, unless the store keeps them beside the document (`write()`)
            "attempts": None if self._counts_beside else run.attempts.snapshot(),
            "completed": run.completed,
            "state": self._state,
            "frontier": frontier,
            "arrivals": {name: list(slots) for name, slots in arrivals.items()},
            "disabled": list(disabled),
            "suspended": [
                {"step": inv.name, "inv": inv.inv_id, "reason": reason}
                | ({"worker": True} if inv.map_run is not None else {})
                for inv, reason in self._suspenders
            ],
            "note": self._note,
            "trace": self._trace_carrier(),
            "written_at": time.time(),
        }

    def _trace_carrier(self) -> dict[str, str] | None:
        """The W3C carrier of this segment's run span, if OpenTelemetry traces it.

        Kept in the checkpoint, so that the next segment's run span links to this one
        (``pipe.resume`` enters `continue_trace` with it); the previous segment's when this
        one is not traced.
        """
        if self._trace is None:
            otel = sys.modules.get("justpipe.observability.otel")
            if otel is not None:
                self._trace = otel.run_carrier(self.run_id)
            if self._trace is None and self.restored is not None:
                return self.restored.get("trace")
        return self._trace

    def _map_entry(
        self, owner: str | None, name: str, progress: _MapProgress, items: list[Any]
    ) -> dict[str, Any]:
        """A map in progress in the checkpoint: its items (or their part) and what is done.

        Its items do not change: encoded once per map and, with a store that keeps parts,
        saved once beside the document; what is done is a count of the leading indices all
        done and the few done after them, so an entry costs O(1) per checkpoint, not
        O(items), however many of its workers completed.
        """
        entry = progress.saved()
        if progress.part is not None and progress.part in self._parts_saved:
            entry["items_part"] = progress.part
            return entry
        if progress.encoded is None:
            if self._failure is not None:
                return entry  # the run failed (it cannot be saved): nothing to resume
            progress.encoded = self.serializer.encode(items, f"map {name!r} item")
        if self._parts_beside:
            key = progress.part = f"map:{owner}"
            if key not in self._parts_saved:
                self._parts_out[key] = json.dumps(
                    progress.encoded, separators=(",", ":"), allow_nan=False
                )
            entry["items_part"] = key
        else:
            entry["items"] = progress.encoded
        return entry

    def _map_closed(self, owner: str | None) -> None:
        progress = self._maps.pop(owner, None) if owner is not None else None
        part = progress.part if progress is not None else None
        if part is not None:
            if part in self._parts_saved:
                self._parts_out[part] = None  # dropped with the next save
            else:
                self._parts_out.pop(part, None)  # not saved yet: never will be

    def encoded_state(self) -> Any:
        return self.serializer.encode(self.run.state)

    def write(self, status: str, end: PipelineTerminalStatus | None = None) -> None:
        """Write a checkpoint; LeaseLostError (once) when another process took the run over."""
        if self._lost:
            return  # the run is ending because its lease was lost: write nothing more
        t0 = time.perf_counter()
        # a store that keeps the attempt counters gets the changed ones beside the document
        beside = self._counts_beside = getattr(self.store, "keeps_attempts", False) is True
        changed = self._changed_attempts() if beside else None
        self._parts_beside = getattr(self.store, "keeps_parts", False) is True
        text = json.dumps(self.document(status, end), separators=(",", ":"), allow_nan=False)
        parts = self._parts_out
        if status == FINISHED and self._parts_saved:  # nothing to resume: drop them all
            parts.update(dict.fromkeys(self._parts_saved))

        checkpoint = Checkpoint(
            self.run_id,
            self.pipe_name,
            self.pipeline_hash,
            status,
            self.segment,
            text,
            attempts=changed,
            parts=dict(parts) if parts else None,
        )
        checkpoint = self.serializer.sign(checkpoint)  # (unchanged without a signing key)
        events = self._events
        try:
            if events is None:
                self.store.save(checkpoint, self.owner)
            else:
                self.store.save(checkpoint, self.owner, events)  # type: ignore[call-arg]
                events.clear()
        except LeaseLostError:
            self._lost = True
            raise
        except StorageUnavailableError as exc:
            if not self.writes:
                raise  # the segment's first checkpoint: the run does not start without it
            # the store went away: the run goes on, and the next checkpoint carries what
            # this one had (counts, parts and events are kept until a save succeeds)
            _log.warning(
                "Checkpoint of durable run %s not written (it resumes from its last one "
                "until a later checkpoint is): %s",
                self.run_id,
                exc,
            )
            return
        if beside:
            self._touched.clear()  # saved: the next checkpoint starts from these counts
        if parts:
            for part, saved in parts.items():
                if saved is None:
                    self._parts_saved.discard(part)
                else:
                    self._parts_saved.add(part)
            parts.clear()
        self.writes += 1
        self.write_s += time.perf_counter() - t0

    def _changed_attempts(self) -> dict[str, int]:
        """The attempt counts that may have changed since the previous checkpoint was saved.

        Every attempt number is issued for an invocation (`attempts.next(name)`: scheduled,
        retried, a map worker) that has either completed since (its name noted by the
        journal's `completing`) or is still in progress: live (a retry keeps
        its invocation's name and owner), a worker of a live map (the map's `each`), or
        refused by a stopping run (`_reruns`). So these names are the only ones whose count
        moved, and the cost does not depend on how many names the run has seen.
        """
        names = self._touched
        for inv in self._live.values():
            names.add(inv.name)
            node = inv.node
            if isinstance(node, MapPlan):
                names.add(node.each)
        for inv in self._reruns:
            names.add(inv.name)
        return self.run.attempts.snapshot(names)

    # ------------------------------------------------------------------ the lease

    async def _beat(self) -> None:
        interval = max(0.05, self.lease_ttl_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(
                    self.store.acquire, self.run_id, self.owner, self.lease_ttl_s
                )
            except StorageUnavailableError:
                continue  # the store went away: renew when it is back
            except Exception:  # the next checkpoint write reports a lost lease
                return

    def _release(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._beating = self._heartbeat  # awaited by `ended()`
            self._heartbeat = None
        if not self._done:
            self._done = True
            try:
                self.store.release(self.run_id, self.owner)
            except StorageUnavailableError as exc:  # the lease then expires by itself
                _log.warning("Lease of durable run %s not released: %s", self.run_id, exc)


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Wait until a cancelled task is over (a cancellation of the caller still propagates)."""
    await asyncio.wait({task})


class _EventTap(Observer):
    """Collects the run's published events (as stored JSON) for the next checkpoint."""

    def __init__(self, sink: list[str]) -> None:
        self._sink = sink

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        if event.type is not _FINISH or event.parent_run_id is not None:
            self._sink.append(event_to_json(event))  # the FINISH: added by `finished()`


class _MapProgress:
    """A map in progress, as its checkpoints keep it: the items, and which are done.

    Done indices are kept as `below` (every index under it is done) and `rest` (those
    done above it): workers mostly complete in about the order they start, so `rest`
    stays small and an entry costs O(1) per checkpoint, not O(items).
    """

    __slots__ = ("below", "encoded", "items", "part", "rest", "run")

    def __init__(self) -> None:
        self.run: MapInfo | None = None
        self.items: list[Any] | None = None
        self.encoded: Any = None  # the items through the serializer, encoded once
        self.part: str | None = None  # the key of the items' part, if kept beside
        self.below = 0
        self.rest: set[int] = set()

    @classmethod
    def restore(cls, saved: dict[str, Any]) -> _MapProgress:
        progress = cls()
        progress.below = int(saved.get("below", 0))
        for index in saved["done"]:
            progress.add(int(index))
        return progress

    def add(self, index: int) -> None:
        if index != self.below:
            if index > self.below:
                self.rest.add(index)
            return
        below = index + 1
        rest = self.rest
        while below in rest:
            rest.discard(below)
            below += 1
        self.below = below

    def indices(self) -> set[int]:
        return set(range(self.below)) | self.rest

    def complete(self) -> bool:
        """Whether every item is done (its worker's completion processed)."""
        return self.items is not None and self.below + len(self.rest) >= len(self.items)

    def saved(self) -> dict[str, Any]:
        return {"below": self.below, "done": sorted(self.rest)}


def done_indices(saved_map: dict[str, Any]) -> set[int]:
    """The done item indices of a map entry of a checkpoint's frontier (``entry["map"]``)."""
    return set(range(int(saved_map.get("below", 0)))) | {int(i) for i in saved_map["done"]}


def item_index(scope_tail: str) -> int:
    """The item index in a map worker's last scope entry, ``"worker[12]"`` -> 12."""
    return int(scope_tail[scope_tail.rindex("[") + 1 : -1])


def _rerun_entry(inv: InvocationInfo) -> dict[str, Any]:
    return {
        "step": inv.name,
        "rerun": True,
        "inv": inv.inv_id,
        "owner": inv.owner_id,
        "parent": inv.parent_id,
        "attempt": inv.attempt,
        "scope": list(inv.scope),
    }
