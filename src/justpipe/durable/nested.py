"""Sub-pipelines of a durable run: nested durable runs, checkpointed inside their parent.

A durable run's `@pipe.sub` step runs its child pipeline as a *nested* durable run: the
child has a `Checkpointer` of its own (`ChildCheckpointer`), whose documents are not
written to the store but embedded in the parent's, in the frontier entry of the sub
step's invocation (``"child": {...}``). A child's completion makes its parent write
(the whole tree, one transaction); a child is never checkpointed on its own, holds no
lease and publishes through its parent as before (its events forwarded, re-stamped).

On resume, the sub step's invocation runs again as a new attempt, but its function is
not called again: the child run goes on from its embedded checkpoint (what it had
completed is not run again, what was running runs again, a suspended child runs its
suspending steps' successors), and when it ends the sub step completes as usual.

The child's state: when it is the parent's state itself, or one of its attributes (or,
for a dict state, one of its values), the checkpoint records that *path* and the resumed
child gets the object at that path of the restored parent state, so parent and child
still share it. Any other child state is serialized on its own and restored as an
independent object.

A child that suspends makes its sub step's outcome a SUSPEND (`ChildSuspended`: no
SUSPEND event of the step's own, the child's was forwarded), so the parent run stops
and ends suspended, resumable into the child.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncGenerator
from typing import Any

from justpipe._kernel.journal import InvocationInfo, RunHandle
from justpipe._kernel.outcomes import ChildSuspended, Outcome
from justpipe._kernel.plan import SubPlan
from justpipe._kernel.runner import run_stream
from justpipe.durable.checkpointer import Checkpointer, item_index
from justpipe.durable.serializer import StateSerializationError
from justpipe.durable.store import RUNNING, SUSPENDED
from justpipe.types import Event, PipelineTerminalStatus

__all__ = ["ChildCheckpointer", "SubRuns", "state_path"]

_OK = Outcome.OK


class ChildCheckpointer(Checkpointer):
    """The checkpointer of a sub-pipeline run nested in a durable run (see the module)."""

    def __init__(
        self,
        parent: Checkpointer,
        pipe: Any,
        path: list[str] | None,
        restored: dict[str, Any] | None,
    ) -> None:
        super().__init__(
            parent.store,
            parent.serializer,
            parent.every,
            parent.owner,
            restored["run_id"] if restored is not None else os.urandom(16).hex(),
            pipe.name,
            parent.pipeline_hash,
            parent.version,
            parent.lease_ttl_s,
            restored=restored,
            segment=parent.segment,
        )
        self.parent = parent
        self.path = path
        # set by `finished()`: the child's last document, and how many suspends it accounts
        # for (its own and its children's) when it ended suspended, resumable
        self.final: dict[str, Any] | None = None
        self.final_suspends = 0

    # the parent holds the lease, taps the events and keeps the heartbeat
    def _acquire(self, run: RunHandle) -> None:
        pass

    def write(self, status: str, end: PipelineTerminalStatus | None = None) -> None:
        if status != RUNNING:  # the child ended: its parent writes when its step completes
            self.final = self.document(status, end)
            return
        parent = self.parent
        if self.every and not parent.run.stopping:
            parent.write(RUNNING)

    def finished(self, finish: Event) -> Event:
        event = super().finished(finish)
        if self.final is not None and self.final["status"] == SUSPENDED:
            metrics = getattr(event.payload, "metrics", None)
            self.final_suspends = int(getattr(metrics, "suspends", 0) or 0)
        return event

    def ended(self) -> None:
        self._done = True

    def _cannot_save(self, error: StateSerializationError) -> None:
        # the whole run's checkpoint cannot be written: its parent fails with it (and does
        # not report it again), keeping the last state that could be saved
        super()._cannot_save(error)
        self.parent._cannot_save(error)

    def _release(self) -> None:
        self._done = True

    def encoded_state(self) -> Any:
        if self.path is not None:
            return None  # restored from the parent's state, at `path`
        # (named in errors as the child's, not the parent's, state)
        return self.serializer.encode(self.run.state, f"sub-pipeline {self.pipe_name!r} state")

    def document(self, status: str, end: PipelineTerminalStatus | None = None) -> dict[str, Any]:
        data = super().document(status, end)
        data["path"] = self.path
        return data


class SubRuns:
    """A durable run's sub-pipeline runs (the run context's `nest`, read by the kernel)."""

    def __init__(self, owner: Checkpointer) -> None:
        self.owner = owner
        # by `child_key`: the sub step's owner id, or "<map owner id>#<item index>"
        self.live: dict[str, ChildCheckpointer] = {}
        self.restored: dict[str, dict[str, Any]] = {}  # checkpointed children to resume
        # children that ended suspended: (the sub step's invocation, the child's document);
        # those of a map's workers apart (their map stays open and keeps them)
        self.suspended: dict[str, tuple[InvocationInfo, dict[str, Any]]] = {}
        self.held: dict[str, tuple[InvocationInfo, dict[str, Any]]] = {}
        self.suspends = 0  # the SUSPEND events the suspended children account for

    # ------------------------------------------------------------------ the kernel's side
    # (the owner's `RunJournal` methods for sub steps: resumes_sub, sub_stream, sub_ended,
    # sub_failed)

    def restoring(self, inv: InvocationInfo) -> bool:
        """Whether `inv` is a resumed sub step whose child goes on from a checkpoint."""
        return bool(self.restored) and child_key(inv) in self.restored

    def child_stream(
        self, node: SubPlan, inv: InvocationInfo, child_state: Any
    ) -> AsyncGenerator[Event, None]:
        owner = self.owner
        key = child_key(inv)
        restored = self.restored.pop(key, None)
        parent_state = owner.run.state
        if restored is not None:
            path = restored.get("path")
            if path is not None:
                child_state = resolve_path(parent_state, path, node.name)
            else:
                child_state = owner.serializer.decode(restored["state"])
        else:
            path = state_path(child_state, parent_state)
        child = ChildCheckpointer(owner, node.pipeline, path, restored)
        self.live[key] = child
        return run_stream(node.pipeline, child_state, owner.run.context, journal=child)

    def child_ended(self, inv: InvocationInfo) -> tuple[Outcome, Any]:
        """The child's stream ended: the sub step's outcome (SUSPEND if the child suspended)."""
        key = child_key(inv)
        child = self.live.pop(key, None)
        if child is None or child.final is None or child.final["status"] != SUSPENDED:
            return _OK, None
        if inv.map_run is not None:  # the item is not done: its map stays open (`held`)
            self.held[key] = (inv, child.final)
        else:
            self.suspended[key] = (inv, child.final)
        self.suspends += child.final_suspends
        reasons = [str(entry.get("reason", "")) for entry in child.final["suspended"]]
        return Outcome.SUSPEND, ChildSuspended("; ".join(reasons))

    def child_failed(self, inv: InvocationInfo) -> None:
        """The child run failed: the sub step failed, nothing of it to resume."""
        self.live.pop(child_key(inv), None)

    # ------------------------------------------------------------------ the checkpointer's side

    def document_of(self, owner_id: str) -> dict[str, Any] | None:
        """The checkpoint of the child running in the sub step `owner_id`, if any."""
        child = self.live.get(owner_id)
        if child is None:  # a resumed sub step not re-entered yet: the child as checkpointed
            return self.restored.get(owner_id)
        if child.final is not None:
            return child.final
        if not child.attached:
            return child.restored  # not started yet: as it was checkpointed (None: new)
        return child.document(RUNNING)

    def suspended_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The suspended children's steps (``sub:step``, deeper ``sub:sub:step``) and reasons."""
        steps: list[str] = []
        reasons: list[str] = []
        for inv, data in (*self.suspended.values(), *self.held.values()):
            _collect(data, f"{inv.name}:", steps, reasons)
        return tuple(steps), tuple(reasons)

    def of_map(self, owner_id: str, worker: str) -> list[dict[str, Any]]:
        """The children of a map's workers (running, suspended, or restored and not yet
        re-entered), for the map's entry in the checkpoint."""
        prefix = f"{owner_id}#"
        found: list[dict[str, Any]] = []
        for key in self.live.keys() | self.held.keys() | self.restored.keys():
            if key.startswith(prefix):
                held = self.held.get(key)
                document = held[1] if held is not None else self.document_of(key)
                if document is not None:
                    index = int(key[len(prefix) :])
                    found.append({"index": index, "worker": worker, "child": document})
        return sorted(found, key=lambda entry: int(entry["index"]))


def _collect(data: dict[str, Any], prefix: str, steps: list[str], reasons: list[str]) -> None:
    """The suspending steps of a (child's) checkpoint document and of its suspended children."""
    for entry in data["suspended"]:
        steps.append(prefix + str(entry["step"]))
        reasons.append(str(entry.get("reason", "")))
    for entry in data["frontier"]:
        child = entry.get("child")
        if child is not None and child.get("status") == SUSPENDED:
            _collect(child, f"{prefix}{entry['step']}:", steps, reasons)
        for kept in (entry.get("map") or {}).get("children", ()):
            if kept["child"].get("status") == SUSPENDED:
                _collect(kept["child"], f"{prefix}{kept['worker']}:", steps, reasons)


def child_key(inv: InvocationInfo) -> str:
    """Where a sub step's child is kept: by the step's owner id, or a map worker's item."""
    map_run = inv.map_run
    if map_run is None:
        return str(inv.owner_id)
    return f"{map_run.inv.owner_id}#{item_index(inv.scope[-1])}"


def state_path(child_state: Any, parent_state: Any) -> list[str] | None:
    """Where the child's state sits in the parent's: [] (itself), ["attr", a], ["key", k]."""
    if child_state is parent_state:
        return []
    if child_state is None or isinstance(child_state, (int, float, str, bool)):
        return None  # immutable: nothing shared to keep
    if isinstance(parent_state, dict):
        for key, value in parent_state.items():
            if value is child_state and isinstance(key, str):
                return ["key", key]
        return None
    fields: dict[str, Any] = {}
    if dataclasses.is_dataclass(parent_state):
        fields = {
            f.name: getattr(parent_state, f.name, None) for f in dataclasses.fields(parent_state)
        }
    elif hasattr(parent_state, "__dict__"):
        fields = vars(parent_state)
    for name, value in fields.items():
        if value is child_state:
            return ["attr", name]
    return None


def resolve_path(parent_state: Any, path: list[str], step: str) -> Any:
    if not path:
        return parent_state
    kind, name = path
    try:
        return parent_state[name] if kind == "key" else getattr(parent_state, name)
    except (KeyError, AttributeError, TypeError) as exc:
        raise ValueError(
            f"sub-pipeline step {step!r}: its checkpointed child state was the parent state's "
            f"{'item' if kind == 'key' else 'attribute'} {name!r}, which the restored state "
            "no longer has (was the state class changed?). Resume with the state class the "
            "run was checkpointed with."
        ) from exc
