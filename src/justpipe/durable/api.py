"""Durable runs from the Pipe's side: options, the default store, run and resume streams."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncGenerator
from contextlib import ExitStack, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from justpipe.durable.checkpointer import FORMAT, Checkpointer
from justpipe.durable.serializer import StateSerializer
from justpipe.durable.sqlite import SQLiteCheckpointStore, find_checkpoint_file
from justpipe.durable.store import (
    DEFAULT_LEASE_TTL_S,
    FINISHED,
    Checkpoint,
    CheckpointStore,
    PipelineChangedError,
    RunFinishedError,
    UnknownRunError,
    new_owner,
)
from justpipe.types import Event

if TYPE_CHECKING:
    from justpipe.pipe import Pipe

__all__ = ["Durable", "as_durable", "durable_resume", "durable_run", "resume_value"]

_RESUME_VALUE: ContextVar[Any] = ContextVar("justpipe_resume_value", default=None)
_STORE_ATTRIBUTE = "_durable_store"
_HASH_ATTRIBUTE = "_durable_hash"


def resume_value() -> Any:
    """The `value` given to ``pipe.resume(run_id, value=...)``, in the resumed segment.

    Readable from every step (and hook) of the segment that `resume()` streams, and from
    the code iterating it; ``None`` in a run's first segment, or when no value was given.
    """
    return _RESUME_VALUE.get()


@dataclass(frozen=True)
class Durable:
    """How a Pipe's runs are durable: ``Pipe(..., durable=Durable(...))``.

    `store`: where checkpoints go (None: SQLite, in the pipeline's run store under
    ``JUSTPIPE_STORAGE_PATH``, and the runs are persisted there too). `checkpoint_every`:
    N writes a checkpoint after every N processed completions (1, the default: after each);
    0 only when a segment starts, suspends or finishes (cheap; a crash then re-runs the
    segment from its start). `serializer`: how the state is written (JSON, dataclasses,
    pydantic; ``StateSerializer(allow_pickle=True)`` to accept anything picklable).
    `lease_ttl_s`: how long a run's lease outlives its last renewal.
    ``durable=True`` is ``Durable()``, ``durable=store`` is ``Durable(store=store)``.
    """

    store: CheckpointStore | None = None
    checkpoint_every: int = 1
    serializer: StateSerializer = field(default_factory=StateSerializer)
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S

    def __post_init__(self) -> None:
        if self.store is not None and not isinstance(self.store, CheckpointStore):
            raise TypeError(
                "Durable(store=...) must be a CheckpointStore (save, load, acquire, release, "
                f"lease), got {type(self.store).__name__}: e.g. InMemoryCheckpointStore() or "
                "SQLiteCheckpointStore(path)."
            )
        every = self.checkpoint_every
        if not isinstance(every, int) or isinstance(every, bool):
            raise TypeError(f"Durable(checkpoint_every=...) must be an int, got {every!r}")
        if every < 0:
            raise ValueError(
                "Durable(checkpoint_every=...) must be >= 0 (0: only when a segment starts, "
                f"suspends or finishes; N: after every N completions), got {every}"
            )
        if not isinstance(self.serializer, StateSerializer):
            raise TypeError(
                "Durable(serializer=...) must be a justpipe.durable.StateSerializer, got "
                f"{type(self.serializer).__name__}"
            )
        ttl = self.lease_ttl_s
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not ttl > 0:
            raise ValueError(f"Durable(lease_ttl_s=...) must be > 0 seconds, got {ttl!r}")


def as_durable(durable: Any) -> Durable:
    """Pipe(durable=...) as a `Durable` (TypeError for anything else)."""
    if durable is True:
        return Durable()
    if isinstance(durable, Durable):
        return durable
    if isinstance(durable, CheckpointStore) and not isinstance(durable, (bool, str)):
        return Durable(store=durable)
    raise TypeError(
        "Pipe(durable=...) must be True, False, None, a CheckpointStore (save, load, acquire, "
        f"release, lease) or a justpipe.durable.Durable, got {type(durable).__name__}: e.g. "
        "durable=True (SQLite under JUSTPIPE_STORAGE_PATH) or "
        "durable=InMemoryCheckpointStore()."
    )


def _pipeline_hash(pipe: Pipe[Any, Any]) -> str:
    """The definition's hash, worked out once per definition (describe() walks the graph)."""
    version = pipe.registry.version
    cached = getattr(pipe, _HASH_ATTRIBUTE, None)
    if cached is not None and cached[0] == version:
        return str(cached[1])
    found = str(pipe.describe()["pipeline_hash"])
    setattr(pipe, _HASH_ATTRIBUTE, (version, found))
    return found


def _version() -> str:
    import justpipe

    return str(justpipe.__version__)


def store_of(pipe: Pipe[Any, Any], pipeline_hash: str) -> CheckpointStore:
    """The pipe's checkpoint store: the one it was given, or its run store's SQLite file."""
    durable: Durable = pipe.durable
    if durable.store is not None:
        return durable.store
    cached = getattr(pipe, _STORE_ATTRIBUTE, None)
    if isinstance(cached, SQLiteCheckpointStore) and cached.db_path.parent.name == pipeline_hash:
        return cached
    store = SQLiteCheckpointStore(_runs_db(pipeline_hash))
    setattr(pipe, _STORE_ATTRIBUTE, store)
    return store


def _runs_db(pipeline_hash: str) -> Any:
    from justpipe.storage.persistence import RUNS_DB, resolve_storage_path

    return resolve_storage_path() / pipeline_hash / RUNS_DB


def _serializer(pipe: Pipe[Any, Any]) -> StateSerializer:
    return pipe.durable.serializer  # type: ignore[no-any-return]


async def durable_run(
    pipe: Pipe[Any, Any], runner_args: dict[str, Any]
) -> AsyncGenerator[Event, None]:
    """A durable run's first segment: `pipe.run()` with a checkpointer attached."""
    from justpipe._kernel.runner import _PipelineRunner

    pipeline_hash = _pipeline_hash(pipe)
    checkpointer = Checkpointer(
        store_of(pipe, pipeline_hash),
        _serializer(pipe),
        pipe.durable.checkpoint_every,
        new_owner(),
        os.urandom(16).hex(),
        pipe.name,
        pipeline_hash,
        _version(),
        pipe.durable.lease_ttl_s,
    )
    token = _RESUME_VALUE.set(None)
    stream = _PipelineRunner(pipe, durable=checkpointer, **runner_args).stream()
    try:
        async for event in stream:
            yield event
    finally:
        await stream.aclose()
        checkpointer.detach()
        _reset(token)


async def durable_resume(
    pipe: Pipe[Any, Any],
    run_id: str,
    value: Any,
    force: bool,
    runner_args: dict[str, Any],
) -> AsyncGenerator[Event, None]:
    """A later segment of a durable run (see `Pipe.resume`)."""
    from justpipe._kernel.runner import _PipelineRunner

    pipeline_hash = _pipeline_hash(pipe)
    store = _locate(pipe, run_id, pipeline_hash, force)
    owner = new_owner()
    store.acquire(run_id, owner, pipe.durable.lease_ttl_s)  # RunLeasedError: another live process
    try:
        checkpoint = store.load(run_id)
        assert checkpoint is not None
        data = _check_resumable(checkpoint, pipeline_hash, force)
        if data.get("attempts") is None:  # kept by the store, beside the document
            data["attempts"] = dict(checkpoint.attempts or {})
        data["parts"] = dict(checkpoint.parts or {})  # (what the document refers to by key)
        serializer = _serializer(pipe)
        state = serializer.decode(data["state"])
        stored_seq = getattr(store, "stored_seq", None)
        if callable(stored_seq):  # events a crashed segment persisted after its checkpoint
            data["seq"] = max(int(data["seq"]), int(stored_seq(run_id)))
        reopen = getattr(store, "reopen_run", None)
        if callable(reopen) and pipe.persist:
            reopen(run_id)
    except BaseException:
        store.release(run_id, owner)
        raise
    checkpointer = Checkpointer(
        store,
        serializer,
        pipe.durable.checkpoint_every,
        owner,
        run_id,
        pipe.name,
        pipeline_hash,
        _version(),
        pipe.durable.lease_ttl_s,
        restored=data,
        segment=int(data["segment"]) + 1,
    )
    token = _RESUME_VALUE.set(value)
    # the run's own start step (run(state, start=...)), so the plan is the one it ran with
    runner_args = {**runner_args, "start": data.get("start")}
    stream = _PipelineRunner(pipe, state=state, durable=checkpointer, **runner_args).stream()
    traced = ExitStack()
    otel = sys.modules.get("justpipe.observability.otel")
    if otel is not None and data.get("trace"):
        # OpenTelemetry: this segment's run span links to the previous segment's
        traced.enter_context(otel.continue_trace(data["trace"]))
    try:
        async for event in stream:
            yield event
    finally:
        await stream.aclose()
        checkpointer.detach()
        _reset(token)
        with suppress(ValueError):  # (iterated from another context than it started in)
            traced.close()


def _locate(pipe: Pipe[Any, Any], run_id: str, pipeline_hash: str, force: bool) -> CheckpointStore:
    store = store_of(pipe, pipeline_hash)
    if store.load(run_id) is not None:
        return store
    if pipe.durable.store is None:  # the default store is per pipeline hash: look beside it
        from justpipe.storage.persistence import RUNS_DB, resolve_storage_path

        found = find_checkpoint_file(resolve_storage_path(), run_id, RUNS_DB)
        if found is not None:
            old_hash = found.parent.name
            if not force:
                raise PipelineChangedError(_changed_message(run_id, old_hash, pipeline_hash))
            return SQLiteCheckpointStore(found)
    raise UnknownRunError(
        f"no durable run {run_id!r} in {store!r}: check the run id (the FINISH event's "
        "run_id), and that this Pipe uses the same checkpoint store (durable=...) and "
        "JUSTPIPE_STORAGE_PATH as the run."
    )


def _check_resumable(checkpoint: Checkpoint, pipeline_hash: str, force: bool) -> dict[str, Any]:
    run_id = checkpoint.run_id
    data: dict[str, Any] = json.loads(checkpoint.data)
    if data.get("format") != FORMAT:
        raise RunFinishedError(
            f"run {run_id!r}: its checkpoint has format {data.get('format')!r}, this version "
            f"reads format {FORMAT}; resume it with the justpipe version that wrote it "
            f"({data.get('version')})."
        )
    if checkpoint.status == FINISHED:
        note = f" Note: {data['note']}." if data.get("note") else ""
        raise RunFinishedError(
            f"run {run_id!r} already finished ({data.get('end')}); only a suspended run, or "
            f"one whose process died, can be resumed. Start a new run with pipe.run().{note}"
        )
    if checkpoint.pipeline_hash != pipeline_hash and not force:
        raise PipelineChangedError(
            _changed_message(run_id, checkpoint.pipeline_hash, pipeline_hash)
        )
    return data


def _changed_message(run_id: str, old: str, new: str) -> str:
    return (
        f"run {run_id!r} was checkpointed by a different pipeline definition (hash {old}, "
        f"this one is {new}): steps, edges or options changed since. Resume it with the "
        "pipeline it ran with, or pass pipe.resume(..., force=True) if the change is safe "
        "(the frontier's steps must still exist)."
    )


def _reset(token: Any) -> None:
    with suppress(ValueError):  # iterated from another context than it started in
        _RESUME_VALUE.reset(token)
