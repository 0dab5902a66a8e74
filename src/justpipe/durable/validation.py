"""What a resume reads: a stored checkpoint, checked whole before anything runs.

`read_checkpoint` is the one gate between a store and a resumed run. It takes the row a
store returned and gives back the document the checkpointer restores from, and the
decoded state, or refuses with a `DurableError` naming what is wrong and where
(``frontier[2].map.done[0]``), in this order:

1. the signatures, when the serializer has a key (`CheckpointSignatureError`);
2. the text is JSON, an object, of this version's format (`CorruptCheckpointError`;
   another format: `RunFinishedError`, as before);
3. the document agrees with the row it came in (run id, status, segment, pipeline hash);
4. the run is not finished (`RunFinishedError`) and the pipeline did not change, unless
   forced (`PipelineChangedError`);
5. every field has its shape and type: counters are integers, the frontier's, the
   arrivals' and the suspended steps' entries are what the checkpointer writes, a map's
   done indices lie within its items, a sub-pipeline's child document is checked the
   same way against the child pipeline, recursively;
6. every step it names exists: a suspended step, a join, a map, a sub step, the run's
   start, in each nested child too. A changed pipeline (``force=True``) that lacks any of
   them is refused with `MissingStepsError`, listing them all. (One exception: a frontier
   entry of a plain step whose name the pipeline does not have is what a router returned,
   and the run it came from failed it as "not found"; unforced, it is resumed to that same
   failure.)
7. the state, a map's items and each child's state decode through the serializer, so an
   undeclared class or a bad value anywhere is refused now rather than mid-run.

Nothing here writes: a refused checkpoint stays as it is in its store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from justpipe.durable.checkpointer import FORMAT
from justpipe.durable.serializer import StateSerializer, parse_json
from justpipe.durable.store import (
    FINISHED,
    RUNNING,
    SUSPENDED,
    Checkpoint,
    CorruptCheckpointError,
    MissingStepsError,
    PipelineChangedError,
    RunFinishedError,
)
from justpipe.types import NodeKind

__all__ = ["MAX_CHILD_DEPTH", "Restored", "changed_message", "read_checkpoint"]

MAX_CHILD_DEPTH = 64
"""How many sub-pipelines deep a checkpoint's nested child documents may go."""

_MAX_COUNT = 2**62  # counters are seeded into the core's fixed-size integers
_STATUSES = (RUNNING, SUSPENDED, FINISHED)
_HASH = re.compile(r"[0-9a-f]{1,64}\Z")


@dataclass(frozen=True)
class Restored:
    """A checked checkpoint: the document the checkpointer restores, and the decoded state.

    `data` has ``attempts`` (every count, from the document or the store) and ``parts``
    (key -> the part's JSON text, signatures removed) filled in.
    """

    data: dict[str, Any]
    state: Any


def read_checkpoint(
    checkpoint: Checkpoint,
    pipe: Any,
    serializer: StateSerializer,
    pipeline_hash: str,
    force: bool,
) -> Restored:
    """`checkpoint` checked against `pipe` (see the module docstring), or a refusal."""
    run_id = checkpoint.run_id
    stored = serializer.verified(checkpoint)
    data = parse_json(stored.data, f"run {run_id!r}: its checkpoint")
    if type(data) is not dict:
        raise CorruptCheckpointError(
            f"run {run_id!r}: its checkpoint is a JSON {type(data).__name__}, not an object"
        )
    if data.get("format") != FORMAT:
        raise RunFinishedError(
            f"run {run_id!r}: its checkpoint has format {_shown(data.get('format'))}, this "
            f"version reads format {FORMAT}; resume it with the justpipe version that wrote it "
            f"({_shown(data.get('version'))})."
        )
    _check_row(stored, data)
    if stored.status == FINISHED:
        note = f" Note: {data['note']}." if isinstance(data.get("note"), str) else ""
        raise RunFinishedError(
            f"run {run_id!r} already finished ({_shown(data.get('end'))}); only a suspended run, "
            f"or one whose process died, can be resumed. Start a new run with pipe.run().{note}"
        )
    if stored.pipeline_hash != pipeline_hash and not force:
        raise PipelineChangedError(changed_message(run_id, stored.pipeline_hash, pipeline_hash))
    parts = _parts(stored)
    reader = _Reader(serializer, force and stored.pipeline_hash != pipeline_hash, parts)
    state = reader.document(data, pipe, "", None, 0)
    if data.get("attempts") is None:  # kept by the store, beside the document
        data["attempts"] = _attempts(stored.attempts)
    data["parts"] = parts
    reader.refuse_missing(run_id)
    return Restored(data, state)


def changed_message(run_id: str, old: str, new: str) -> str:
    return (
        f"run {run_id!r} was checkpointed by a different pipeline definition (hash {old}, "
        f"this one is {new}): steps, edges or options changed since. Resume it with the "
        "pipeline it ran with, or pass pipe.resume(..., force=True) if the change is safe "
        "(every step the checkpoint refers to must still exist)."
    )


def _check_row(stored: Checkpoint, data: dict[str, Any]) -> None:
    """The document says what its row says (a row edited apart from its text is refused)."""
    where = f"run {stored.run_id!r}: its checkpoint"
    for name, column in (
        ("run_id", stored.run_id),
        ("pipe_name", stored.pipe_name),
        ("status", stored.status),
        ("segment", stored.segment),
        ("pipeline_hash", stored.pipeline_hash),
    ):
        if data.get(name) != column or type(data.get(name)) is not type(column):
            raise CorruptCheckpointError(
                f"{where}: its {name} is {_shown(data.get(name))} in the document but "
                f"{_shown(column)} in the store's row"
            )
    if not _HASH.match(stored.pipeline_hash):  # (it names a directory of the run store)
        raise CorruptCheckpointError(
            f"{where}: its pipeline_hash {_shown(stored.pipeline_hash)} is not a pipeline hash"
        )
    if stored.status not in _STATUSES:
        raise CorruptCheckpointError(f"{where}: unknown status {_shown(stored.status)}")


def _parts(stored: Checkpoint) -> dict[str, str]:
    parts = stored.parts or {}
    if not isinstance(parts, Mapping):
        raise CorruptCheckpointError(f"run {stored.run_id!r}: its parts are not a mapping")
    found: dict[str, str] = {}
    for key, text in parts.items():
        if type(key) is not str or type(text) is not str:
            raise CorruptCheckpointError(
                f"run {stored.run_id!r}: its part {_shown(key)} is not text"
            )
        found[key] = text
    return found


def _attempts(counts: Any) -> dict[str, int]:
    if counts is None:
        counts = {}
    if not isinstance(counts, Mapping):
        raise CorruptCheckpointError(
            "the attempt counters kept beside the checkpoint are not a map"
        )
    for name, count in counts.items():
        _count(count, f"the attempt counter of {_shown(name)}")
        if type(name) is not str:
            raise CorruptCheckpointError(f"an attempt counter is named {_shown(name)}, not a str")
    return dict(counts)


class _Reader:
    """Walks one checkpoint document (and its children), checking and decoding as it goes."""

    def __init__(self, serializer: StateSerializer, forced: bool, parts: dict[str, str]) -> None:
        self.serializer = serializer
        self.forced = forced  # a changed pipeline, forced: missing steps are collected
        self.parts = parts
        self.missing: dict[str, str] = {}  # step name -> where the checkpoint names it

    # ------------------------------------------------------------------ documents

    def document(self, data: Any, pipe: Any, at: str, parent_state: Any, depth: int) -> Any:
        """Check one (top-level, or a child's) document; its decoded state."""
        if depth > MAX_CHILD_DEPTH:
            raise CorruptCheckpointError(
                f"{at or 'the checkpoint'}: sub-pipelines nested more than {MAX_CHILD_DEPTH} deep"
            )
        _is(data, dict, at or "the checkpoint")
        _header(data, at, depth)
        steps = _steps(pipe)
        if data.get("start") is not None:
            self.step(steps, data["start"], f"{at}start")
        state = self.state(data, at, parent_state, depth)
        self.frontier(data.get("frontier"), steps, at, state, depth)
        for join, slots in _is(data.get("arrivals"), dict, f"{at}arrivals").items():
            where = f"{at}arrivals[{_shown(join)}]"
            self.step(steps, join, where)
            for i, slot in enumerate(_is(slots, list, where)):
                _count(slot, f"{where}[{i}]")
        # the joins a barrier timeout disabled (absent in checkpoints of older versions)
        for i, join in enumerate(_is(data.get("disabled", []), list, f"{at}disabled")):
            self.step(steps, join, f"{at}disabled[{i}]")
        self.suspended(data.get("suspended"), steps, at)
        if data["status"] == SUSPENDED and not _suspends(data):
            raise CorruptCheckpointError(
                f"{at}suspended: the checkpoint says suspended, but names no suspending step "
                "(nor a suspended sub-pipeline): a resume would have nothing to continue"
            )
        return state

    def frontier(
        self, frontier: Any, steps: Mapping[str, Any], at: str, state: Any, depth: int
    ) -> None:
        owners: dict[str, str] = {}  # each invocation in flight is in the frontier once
        for index, entry in enumerate(_is(frontier, list, f"{at}frontier")):
            where = f"{at}frontier[{index}]"
            self.entry(entry, steps, where, state, depth)
            owner = entry.get("owner") if entry["rerun"] else None
            if owner is not None and owners.setdefault(owner, where) != where:
                raise CorruptCheckpointError(
                    f"{where}.owner: {_shown(owner)} is in flight twice (also {owners[owner]})"
                )

    def suspended(self, suspended: Any, steps: Mapping[str, Any], at: str) -> None:
        workers = {getattr(step, "each", None) for step in steps.values()}
        for index, entry in enumerate(_is(suspended, list, f"{at}suspended")):
            where = f"{at}suspended[{index}]"
            _is(entry, dict, where)
            name = entry.get("step")
            self.step(steps, name, f"{where}.step")
            _optional(entry.get("inv"), str, f"{where}.inv")
            _is(entry.get("reason"), str, f"{where}.reason")
            _optional(entry.get("worker"), bool, f"{where}.worker")
            # a map's worker resumes with its map; any other suspending step, by its successors
            if entry.get("worker") and name in steps and name not in workers:
                raise CorruptCheckpointError(f"{where}.worker: {name!r} is not the worker of a map")

    def state(self, data: dict[str, Any], at: str, parent_state: Any, depth: int) -> Any:
        if "state" not in data:
            raise CorruptCheckpointError(f"{at}state: missing")
        if depth == 0:
            return self.serializer.decode(data["state"], "state")
        path = data.get("path")
        if path is None:
            return self.serializer.decode(data.get("state"), f"{at}state")
        where = f"{at}path"
        _is(path, list, where)
        if not path:
            return parent_state
        if len(path) != 2 or path[0] not in ("attr", "key") or type(path[1]) is not str:
            raise CorruptCheckpointError(
                f"{where}: {_shown(path)} is not [], ['attr', name] or ['key', name]"
            )
        kind, name = path
        try:
            return parent_state[name] if kind == "key" else getattr(parent_state, name)
        except (KeyError, AttributeError, TypeError, IndexError):
            raise CorruptCheckpointError(
                f"{where}: the child's state is the parent state's "
                f"{'item' if kind == 'key' else 'attribute'} {name!r}, which the restored "
                "parent state does not have (was the state class changed?)"
            ) from None

    # ------------------------------------------------------------------ the frontier

    def entry(
        self, entry: Any, steps: Mapping[str, Any], where: str, state: Any, depth: int
    ) -> None:
        _is(entry, dict, where)
        name = _is(entry.get("step"), str, f"{where}.step")
        rerun = _is(entry.get("rerun"), bool, f"{where}.rerun")
        for i, part in enumerate(_is(entry.get("scope"), list, f"{where}.scope")):
            _is(part, str, f"{where}.scope[{i}]")
        _optional(entry.get("parent"), str, f"{where}.parent")
        if rerun:
            _is(entry.get("inv"), str, f"{where}.inv")
            _is(entry.get("owner"), str, f"{where}.owner")
            _count(entry.get("attempt"), f"{where}.attempt")
        saved_map, child = entry.get("map"), entry.get("child")
        if saved_map is None and child is None:
            # a plain step: a name the pipeline lacks is what a router returned (see module)
            if name not in steps and self.forced:
                self.missing.setdefault(name, f"{where}.step")
            return
        if not rerun:
            raise CorruptCheckpointError(f"{where}: only a re-run entry holds a map or a child")
        step = self.step(steps, name, f"{where}.step")
        if saved_map is not None:
            self.map(saved_map, step, steps, f"{where}.map", state, depth)
        if child is not None:
            pipeline = self.sub_pipeline(step, name, f"{where}.child")
            if pipeline is not None:
                self.document(child, pipeline, f"{where}.child.", state, depth + 1)

    def map(
        self,
        saved: Any,
        step: Any,
        steps: Mapping[str, Any],
        where: str,
        state: Any,
        depth: int,
    ) -> None:
        _is(saved, dict, where)
        if step is not None and step.kind is not NodeKind.MAP:
            raise CorruptCheckpointError(f"{where}: step {step.name!r} is not a map")
        items = self.items(saved, where, depth)
        count = len(items)
        below = _count(saved.get("below", 0), f"{where}.below")
        if below > count:
            raise CorruptCheckpointError(f"{where}.below: {below}, but the map has {count} items")
        for i, index in enumerate(_is(saved.get("done"), list, f"{where}.done")):
            _count(index, f"{where}.done[{i}]")
            if index >= count:
                raise CorruptCheckpointError(
                    f"{where}.done[{i}]: item {index}, but the map has {count} items"
                )
        children = saved.get("children")
        if children is None:
            return
        each = getattr(step, "each", None)
        for i, kept in enumerate(_is(children, list, f"{where}.children")):
            at = f"{where}.children[{i}]"
            _is(kept, dict, at)
            index = _count(kept.get("index"), f"{at}.index")
            if index >= count:
                raise CorruptCheckpointError(f"{at}.index: item {index}, but the map has {count}")
            worker = _is(kept.get("worker"), str, f"{at}.worker")
            if step is not None and worker != each:
                raise CorruptCheckpointError(
                    f"{at}.worker: {_shown(worker)}, but the map's workers are {each!r}"
                )
            pipeline = self.sub_pipeline(self.step(steps, worker, f"{at}.worker"), worker, at)
            if pipeline is not None:
                self.document(kept.get("child"), pipeline, f"{at}.child.", state, depth + 1)

    def items(self, saved: dict[str, Any], where: str, depth: int) -> list[Any]:
        key = saved.get("items_part")
        if key is None:
            encoded = _is(saved.get("items"), list, f"{where}.items")
            at = f"{where}.items"
        else:
            _is(key, str, f"{where}.items_part")
            text = self.parts.get(key) if depth == 0 else None
            if text is None:
                raise CorruptCheckpointError(
                    f"{where}.items_part: {_shown(key)} names no part of the checkpoint"
                )
            at = f"part {key!r}"
            encoded = _is(parse_json(text, at), list, at)
        items = self.serializer.decode(encoded, at)
        return items  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ steps

    def step(self, steps: Mapping[str, Any], name: Any, where: str) -> Any:
        """The registered step `name`, or None (collected as missing, or refused)."""
        _is(name, str, where)
        step = steps.get(name)
        if step is None:
            if not self.forced:
                raise CorruptCheckpointError(
                    f"{where}: {_shown(name)} names no step of this pipeline (the pipeline is "
                    "the one that wrote the checkpoint: its hash matches), so the checkpoint "
                    "was changed"
                )
            self.missing.setdefault(name, where)
        return step

    def sub_pipeline(self, step: Any, name: str, where: str) -> Any:
        if step is None:
            return None  # missing (forced): reported with the others
        if step.kind is not NodeKind.SUB:
            raise CorruptCheckpointError(f"{where}: step {name!r} is not a sub-pipeline step")
        return step.pipeline

    def refuse_missing(self, run_id: str) -> None:
        if not self.missing:
            return
        listed = ", ".join(f"{name!r} (at {where})" for name, where in sorted(self.missing.items()))
        raise MissingStepsError(
            f"run {run_id!r} cannot be resumed by this pipeline, even with force=True: it lacks "
            f"steps the checkpoint refers to: {listed}. A renamed or removed step would never "
            "run (or its continuation would be lost). Resume with the pipeline the run was "
            "checkpointed with, or add those steps back under the same names."
        )


def _header(data: dict[str, Any], at: str, depth: int) -> None:
    """A document's scalar fields: counters, flags, names, status, trace, attempts."""
    _count(data.get("segment"), f"{at}segment", minimum=1)
    for name in ("seq", "invocations", "completed"):
        _count(data.get(name), f"{at}{name}")
    _is(data.get("started"), bool, f"{at}started")
    for name in ("run_id", "pipe_name", "pipeline_hash", "version"):
        _is(data.get(name), str, f"{at}{name}")
    if data.get("status") not in _STATUSES:
        raise CorruptCheckpointError(f"{at}status: {_shown(data.get('status'))} is not a status")
    for name in ("end", "note", "start"):
        _optional(data.get(name), str, f"{at}{name}")
    trace = data.get("trace")
    if trace is not None:
        _string_map(trace, f"{at}trace")
    attempts = data.get("attempts")
    if attempts is not None or depth > 0:  # (a child's document always holds its counts)
        for name, count in _is(attempts, dict, f"{at}attempts").items():
            _count(count, f"{at}attempts[{_shown(name)}]")


def _suspends(data: dict[str, Any]) -> bool:
    """Whether a (checked) suspended document names a step or child that suspended."""
    if data["suspended"]:
        return True
    for entry in data["frontier"]:
        saved_map = entry.get("map")
        kept = saved_map.get("children") if isinstance(saved_map, dict) else None
        children = [
            entry.get("child"),
            *(k.get("child") for k in kept or () if isinstance(k, dict)),
        ]
        if any(isinstance(c, dict) and c.get("status") == SUSPENDED for c in children):
            return True
    return False


def _steps(pipe: Any) -> Mapping[str, Any]:
    registry = getattr(pipe, "registry", None)
    steps = getattr(registry, "steps", None)
    return steps if isinstance(steps, Mapping) else {}


# --------------------------------------------------------------------------- field checks


def _is(value: Any, kind: type, where: str) -> Any:
    if type(value) is not kind:
        raise CorruptCheckpointError(
            f"{where}: expected {kind.__name__}, got {_kind(value)} {_shown(value)}"
        )
    return value


def _optional(value: Any, kind: type, where: str) -> None:
    if value is not None:
        _is(value, kind, where)


def _count(value: Any, where: str, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value < _MAX_COUNT:
        raise CorruptCheckpointError(f"{where}: {_shown(value)} is not an integer >= {minimum}")
    return value


def _string_map(value: Any, where: str) -> None:
    for key, item in _is(value, dict, where).items():
        _is(item, str, f"{where}[{_shown(key)}]")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
