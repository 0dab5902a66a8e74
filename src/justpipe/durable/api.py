"""Durable runs from the Pipe's side: options, the default store, run and resume streams."""

from __future__ import annotations

import os
import sys
import typing
from collections.abc import AsyncGenerator
from contextlib import ExitStack, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from justpipe._kernel.runner import run_stream
from justpipe.durable.checkpointer import Checkpointer
from justpipe.durable.serializer import StateSerializer
from justpipe.durable.sqlite import (
    SQLiteCheckpointStore,
    file_has_table,
    find_checkpoint_file,
    move_run,
)
from justpipe.durable.store import (
    DEFAULT_LEASE_TTL_S,
    Checkpoint,
    CheckpointStore,
    PipelineChangedError,
    UnknownRunError,
    new_owner,
)
from justpipe.durable.validation import changed_message, read_checkpoint
from justpipe.storage.sqlite import SQLiteBackend
from justpipe.storage.url import PostgresLocation, SQLiteLocation, resolve_storage
from justpipe.types import Event, InjectionSource, NodeKind

if TYPE_CHECKING:
    from justpipe.pipe import Pipe

__all__ = ["Durable", "as_durable", "durable_resume", "durable_run", "resume_value"]

_RESUME_VALUE: ContextVar[Any] = ContextVar("justpipe_resume_value", default=None)
_STORE_ATTRIBUTE = "_durable_store"
_HASH_ATTRIBUTE = "_durable_hash"
_CODEC_ATTRIBUTE = "_durable_codec"


def resume_value() -> Any:
    """The `value` given to ``pipe.resume(run_id, value=...)``, in the resumed segment.

    Readable from every step (and hook) of the segment that `resume()` streams, and from
    the code iterating it; ``None`` in a run's first segment, or when no value was given.
    """
    return _RESUME_VALUE.get()


@dataclass(frozen=True)
class Durable:
    """How a Pipe's runs are durable: ``Pipe(..., durable=Durable(...))``.

    `store`: where checkpoints go (None: the run store, SQLite under
    ``JUSTPIPE_STORAGE_PATH`` or the database of ``JUSTPIPE_STORAGE_URL``, and the runs
    are persisted there too). `checkpoint_every`:
    N writes a checkpoint after every N processed completions (1, the default: after each);
    0 only when a segment starts, suspends or finishes (cheap; a crash then re-runs the
    segment from its start). `serializer`: how the state is written and read back (JSON;
    the dataclasses and pydantic models the state type declares, and those registered with
    ``StateSerializer(types=[...])``; ``signing_key=...`` to sign checkpoints;
    ``allow_pickle=True`` to accept anything picklable, see docs/durable.md, Security).
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
        "durable=True (the run store: JUSTPIPE_STORAGE_PATH or JUSTPIPE_STORAGE_URL) or "
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
    """The pipe's checkpoint store: the one it was given, or the run store's.

    The run store is the one `justpipe.storage.url.resolve_storage` names: the pipeline's
    SQLite file (``<root>/<pipeline_hash>/runs.db``), or the PostgreSQL database of
    ``JUSTPIPE_STORAGE_URL`` (every pipeline's checkpoints in one database).
    """
    durable: Durable = pipe.durable
    if durable.store is not None:
        return durable.store
    location = resolve_storage()
    cached = getattr(pipe, _STORE_ATTRIBUTE, None)
    if cached is not None and cached[0] == (location, pipeline_hash):
        return cached[1]  # type: ignore[no-any-return]
    store: CheckpointStore
    if isinstance(location, PostgresLocation):
        from justpipe.durable.postgres import PostgresCheckpointStore
        from justpipe.storage.postgres import shared_database

        store = PostgresCheckpointStore(shared_database(location))
    else:
        store = SQLiteCheckpointStore(_runs_db(location, pipeline_hash))
    setattr(pipe, _STORE_ATTRIBUTE, ((location, pipeline_hash), store))
    return store


def _runs_db(location: SQLiteLocation, pipeline_hash: str) -> Path:
    from justpipe.storage.persistence import RUNS_DB

    return location.root / pipeline_hash / RUNS_DB


def _serializer(pipe: Pipe[Any, Any]) -> StateSerializer:
    """The pipe's serializer, bound to what the pipe declares (worked out once per definition).

    A checkpoint may rebuild only the classes the pipeline declares (`declared_types`) or
    the serializer registers; the registered ones are part of the key, so a class
    registered after a run is taken into account by the next one.
    """
    serializer: StateSerializer = pipe.durable.serializer
    key = (pipe.registry.version, id(serializer), serializer.registered)
    cached = getattr(pipe, _CODEC_ATTRIBUTE, None)
    if cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    bound = serializer.for_types(*declared_types(pipe))
    setattr(pipe, _CODEC_ATTRIBUTE, (key, bound))
    return bound


def declared_types(pipe: Pipe[Any, Any]) -> list[Any]:
    """What a pipeline declares about the values its checkpoints hold.

    Its state type; for each sub-pipeline step, the child pipeline's (recursively) and the
    step's return annotation (the child's state); for each map, its function's return
    annotation and its worker's item parameter's (the items). The serializer admits
    the dataclasses and pydantic models these reach (`reachable_records`).
    """
    found: list[Any] = []
    seen: set[int] = set()
    pending: list[Any] = [pipe]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(getattr(current, "state_type", None))
        steps = current.registry.steps
        for step in steps.values():
            if step.kind is NodeKind.SUB:
                pending.append(step.pipeline)
                found.append(_hints(step.original_func).get("return"))
            elif step.kind is NodeKind.MAP:
                found.append(_hints(step.original_func).get("return"))
                found.append(_item_hint(current, step.each))
    return [annotation for annotation in found if annotation is not None]


def _item_hint(pipe: Pipe[Any, Any], worker: str) -> Any:
    """The annotation of a map worker's item parameter (None: no worker, no annotation)."""
    step = pipe.registry.steps.get(worker)
    sources = pipe.registry.injection_metadata.get(worker, {})
    item = next((p for p, src in sources.items() if src is InjectionSource.UNKNOWN), None)
    if step is None or item is None:
        return None
    return _hints(step.original_func).get(item)


def _hints(func: Any) -> dict[str, Any]:
    """A function's resolved annotations (those it cannot resolve left out)."""
    try:
        return typing.get_type_hints(func)
    except Exception:
        raw = getattr(func, "__annotations__", None) or {}
        return {name: hint for name, hint in raw.items() if not isinstance(hint, str)}


async def durable_run(
    pipe: Pipe[Any, Any], runner_args: dict[str, Any]
) -> AsyncGenerator[Event, None]:
    """A durable run's first segment: `pipe.run()` with a checkpointer attached."""
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
    stream = run_stream(pipe, journal=checkpointer, **runner_args)
    try:
        async for event in stream:
            yield event
    finally:
        await stream.aclose()
        waiting = checkpointer.ended()  # (the lease, if the stream never released it)
        if waiting is not None:
            await waiting
        _reset(token)


async def durable_resume(
    pipe: Pipe[Any, Any],
    run_id: str,
    value: Any,
    force: bool,
    runner_args: dict[str, Any],
) -> AsyncGenerator[Event, None]:
    """A later segment of a durable run (see `Pipe.resume`).

    Everything read from the store is checked (`validation.read_checkpoint`) before the
    runner exists: a refusal emits nothing, writes nothing, and gives the lease back.
    """
    pipeline_hash = _pipeline_hash(pipe)
    serializer = _serializer(pipe)
    store = _locate(pipe, run_id, pipeline_hash, force)
    owner = new_owner()
    ttl = pipe.durable.lease_ttl_s
    store.acquire(run_id, owner, ttl)  # RunLeasedError: another live process
    try:
        checkpoint = store.load(run_id)
        if checkpoint is None:  # (gone between the look-up and the lease)
            raise UnknownRunError(_unknown_message(run_id, store))
        restored = read_checkpoint(checkpoint, pipe, serializer, pipeline_hash, force)
        store = _keep_in_one_store(pipe, store, checkpoint, pipeline_hash, owner)
        data = restored.data
        stored_seq = getattr(store, "stored_seq", None)
        if callable(stored_seq):  # events a crashed segment persisted after its checkpoint
            data["seq"] = max(data["seq"], int(stored_seq(run_id)))
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
        ttl,
        restored=data,
        segment=data["segment"] + 1,
    )
    token = _RESUME_VALUE.set(value)
    # the run's own start step (run(state, start=...)), so the plan is the one it ran with
    runner_args = {**runner_args, "start": data.get("start")}
    stream = run_stream(pipe, state=restored.state, journal=checkpointer, **runner_args)
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
        waiting = checkpointer.ended()  # (the lease, if the stream never released it)
        if waiting is not None:
            await waiting
        _reset(token)
        with suppress(ValueError):  # (iterated from another context than it started in)
            traced.close()


def _locate(pipe: Pipe[Any, Any], run_id: str, pipeline_hash: str, force: bool) -> CheckpointStore:
    store = store_of(pipe, pipeline_hash)
    if store.load(run_id) is not None:
        return store
    location = resolve_storage()
    if pipe.durable.store is None and isinstance(location, SQLiteLocation):
        # the default SQLite store is per pipeline hash: look beside it (one PostgreSQL
        # database holds every pipeline's: `load` found it, whatever its hash)
        from justpipe.storage.persistence import RUNS_DB

        found = find_checkpoint_file(location.root, run_id, RUNS_DB)
        if found is not None:
            old_hash = found.parent.name
            if not force:
                raise PipelineChangedError(changed_message(run_id, old_hash, pipeline_hash))
            return SQLiteCheckpointStore(found)
    raise UnknownRunError(_unknown_message(run_id, store))


def _unknown_message(run_id: str, store: CheckpointStore) -> str:
    return (
        f"no durable run {run_id!r} in {store!r}: check the run id (the FINISH event's "
        "run_id), and that this Pipe uses the same checkpoint store (durable=...) and "
        "JUSTPIPE_STORAGE_URL / JUSTPIPE_STORAGE_PATH as the run."
    )


def _keep_in_one_store(
    pipe: Pipe[Any, Any],
    store: CheckpointStore,
    checkpoint: Checkpoint,
    pipeline_hash: str,
    owner: str,
) -> CheckpointStore:
    """A forced resume of a changed pipeline: the run moves to where this pipeline keeps runs.

    The run store is per pipeline hash, so the new segment's persisted events (and, with
    the default store, its checkpoints) would go to another file than the run's earlier
    segments: the run would be listed twice, its old row left running. Instead its rows
    move, before anything runs, into this pipeline's file; returns the store that now
    holds the run's checkpoint and lease. In a PostgreSQL run store (one database) the
    run's row is filed under this pipeline instead.
    """
    old_hash = checkpoint.pipeline_hash
    if old_hash == pipeline_hash:
        return store
    ttl_s = pipe.durable.lease_ttl_s
    if pipe.durable.store is None and isinstance(store, SQLiteCheckpointStore):
        target = store_of(pipe, pipeline_hash)
        assert isinstance(target, SQLiteCheckpointStore)
        if file_has_table(store.db_path, "runs"):
            SQLiteBackend(target.db_path).close()  # (creates the run store's tables)
        try:
            move_run(store.db_path, target.db_path, checkpoint.run_id, (owner, ttl_s))
        except BaseException:
            target.release(checkpoint.run_id, owner)  # (the caller releases it in `store`)
            raise
        store.close()
        return target
    location = resolve_storage()
    if not pipe.persist:
        return store
    if isinstance(location, PostgresLocation):  # one database: the run changes pipeline
        from justpipe.storage.postgres import shared_database

        shared_database(location).move_run(checkpoint.run_id, pipeline_hash, pipe.name)
        return store
    old_db = _runs_db(location, old_hash)
    if file_has_table(old_db, "runs"):
        new_db = _runs_db(location, pipeline_hash)
        SQLiteBackend(new_db).close()
        move_run(old_db, new_db, checkpoint.run_id)
    return store


def _reset(token: Any) -> None:
    with suppress(ValueError):  # iterated from another context than it started in
        _RESUME_VALUE.reset(token)
