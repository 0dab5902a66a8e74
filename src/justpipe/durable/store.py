"""Checkpoint stores: where durable runs keep their checkpoints and leases.

A store is a small synchronous interface (`CheckpointStore`) so that a server database
can back it later: four operations on rows keyed by run id, each one atomic.

* ``save(checkpoint, owner)`` replaces the run's checkpoint, but only while `owner`
  holds the run's lease (the check and the write are one transaction: a process whose
  lease was taken over cannot overwrite the new owner's checkpoints);
* ``load(run_id)`` reads it back (``None``: no such run);
* ``acquire(run_id, owner, ttl_s)`` takes the run's lease, or raises `RunLeasedError`
  when another owner holds a lease that is still live; ``release`` gives it back.

The attempt counters (one count per step name the run has seen) grow with the run, so a
store may keep them beside the checkpoint instead of inside it: a store whose class says
``keeps_attempts = True`` receives, with each `save`, only the counts that changed since
the run's previous checkpoint (`Checkpoint.attempts`) and merges them into the run's
counters in the same transaction; its `load` returns every count of the run in
`Checkpoint.attempts`. That makes a checkpoint's cost independent of how many step names
the run has seen (`SQLiteCheckpointStore`: a ``durable_counters`` table, one row per name;
a server database: the same, upserted in the save's transaction). A store without the
attribute receives every count in the checkpoint document itself, as before.

Likewise, data that is written once and then only read (a map's items, which a resumed
map needs, however many of its workers completed since) may be kept beside the document:
a store whose class says ``keeps_parts = True`` receives with each `save` the *parts*
that are new since the previous checkpoint (`Checkpoint.parts`: key -> JSON text, None to
drop the key) and stores or drops them in the same transaction; its `load` returns every
part of the run. The document then refers to a part by its key (``"items_part"``), so a
checkpoint does not re-write a map's items after each of its workers. A store without the
attribute gets them inside the document.

What a store keeps is untrusted when it is read back (see docs/durable.md, Security): a
store keeps `Checkpoint.data` and the parts as opaque text and returns them byte for byte
(a signed checkpoint carries its signatures inside that text, so a store needs no code of
its own for signing), and a row it cannot turn back into a `Checkpoint` (a column of the
wrong type) is a `CorruptCheckpointError` from `load`, never a raw exception. `resume()`
checks everything else (`justpipe.durable.validation`).

A lease names its owner (``host:pid:nonce``) and an expiry. It is live until it
expires, except that a lease whose owner ran on this host in a process that no longer
exists is dead at once (so a crashed run can be resumed right away on the same
machine; on another machine, once the lease expires). A running durable run renews
its lease with each checkpoint and from a heartbeat.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "Checkpoint",
    "CheckpointSignatureError",
    "CheckpointStore",
    "CorruptCheckpointError",
    "DurableError",
    "InMemoryCheckpointStore",
    "Lease",
    "LeaseLostError",
    "MissingStepsError",
    "PipelineChangedError",
    "RunFinishedError",
    "RunLeasedError",
    "UndeclaredTypeError",
    "UnknownRunError",
    "lease_is_live",
    "new_owner",
]

DEFAULT_LEASE_TTL_S = 30.0
"""How long a durable run's lease lasts without renewal (a heartbeat renews it)."""

RUNNING, SUSPENDED, FINISHED = "running", "suspended", "finished"


class DurableError(Exception):
    """Base of the errors durable runs raise."""


class UnknownRunError(DurableError, LookupError):
    """`resume()` of a run id that no checkpoint store knows."""


class RunFinishedError(DurableError, ValueError):
    """`resume()` of a run that already finished (only suspended or crashed runs resume)."""


class PipelineChangedError(DurableError, ValueError):
    """`resume()` with a pipeline whose definition (hash) differs from the checkpoint's."""


class MissingStepsError(PipelineChangedError):
    """``resume(force=True)`` onto a pipeline that lacks steps the checkpoint refers to."""


class CorruptCheckpointError(DurableError, ValueError):
    """A stored checkpoint that cannot be used as it is.

    Unreadable text, a wrong shape or type (named by its place, e.g. ``frontier[2].scope``),
    a step this pipeline does not have, a value that cannot be rebuilt. `resume()` refuses
    it before anything runs: no event, no step, the stored row left as it was, the lease
    given back.
    """


class UndeclaredTypeError(CorruptCheckpointError):
    """A checkpoint value names a class the pipeline does not declare nor its serializer
    register (or holds a pickle the serializer does not allow); nothing was built."""


class CheckpointSignatureError(CorruptCheckpointError):
    """A checkpoint (or a part of it) is unsigned, or its signature does not match any of
    the serializer's keys: it was not written by a holder of the key, or was changed since."""


class RunLeasedError(DurableError, RuntimeError):
    """The run is being executed (or resumed) by another live process."""


class LeaseLostError(DurableError, RuntimeError):
    """A checkpoint write by a process whose lease on the run was taken over."""


@dataclass(frozen=True)
class Checkpoint:
    """One durable run's latest checkpoint.

    `data` is the JSON document the checkpointer wrote (state, counters, frontier...);
    the other fields are what a store indexes. `status`: ``running`` (being executed,
    or its process died), ``suspended`` or ``finished``.

    `attempts`, for a store that keeps the attempt counters (``keeps_attempts = True``,
    see the module docstring): given to `save`, the counts that changed since the run's
    previous checkpoint (to merge into the run's counters); returned by `load`, all of
    the run's counts. None otherwise (the document holds them).

    `parts`, for a store that keeps parts (``keeps_parts = True``): given to `save`, the
    parts new since the previous checkpoint (key -> JSON text; None: drop that key);
    returned by `load`, every part of the run.
    """

    run_id: str
    pipe_name: str
    pipeline_hash: str
    status: str
    segment: int
    data: str
    updated_at: float = 0.0
    attempts: Mapping[str, int] | None = None
    parts: Mapping[str, str | None] | None = None


@dataclass(frozen=True)
class Lease:
    run_id: str
    owner: str
    expires_at: float


@runtime_checkable
class CheckpointStore(Protocol):
    """Where durable runs keep their checkpoints (see the module docstring).

    Optional, on the class: ``keeps_attempts = True`` (the store merges the changed attempt
    counts of `Checkpoint.attempts` into the run's and loads them all back),
    ``keeps_parts = True`` (likewise for `Checkpoint.parts`, stored or dropped by key) and
    ``saves_events = True`` (`save` takes a third argument, the run's events since the
    previous checkpoint, see `SQLiteCheckpointStore.save`).
    """

    def save(self, checkpoint: Checkpoint, owner: str) -> None: ...

    def load(self, run_id: str) -> Checkpoint | None: ...

    def acquire(self, run_id: str, owner: str, ttl_s: float) -> None: ...

    def release(self, run_id: str, owner: str) -> None: ...

    def lease(self, run_id: str) -> Lease | None: ...


def new_owner() -> str:
    """A lease owner id for this process: ``host:pid:nonce``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def lease_is_live(lease: Lease | None, now: float | None = None) -> bool:
    """Whether `lease` still protects its run (see the module docstring)."""
    if lease is None:
        return False
    if (time.time() if now is None else now) >= lease.expires_at:
        return False
    host, _, rest = lease.owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        return _pid_alive(int(pid_text))
    return True


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def leased_message(run_id: str, lease: Lease) -> str:
    left = max(0.0, lease.expires_at - time.time())
    return (
        f"run {run_id!r} is being executed by another live process ({lease.owner}, lease "
        f"valid for {left:.0f}s more): wait for it to suspend or finish, or, if that process "
        "is hung, for its lease to expire."
    )


class InMemoryCheckpointStore:
    """A checkpoint store in this process's memory (tests, and runs that need no restart)."""

    keeps_attempts = True
    """`save()` merges `Checkpoint.attempts` (the changed counts) into the run's counters."""

    keeps_parts = True
    """`save()` stores (or drops) `Checkpoint.parts` by key; `load()` returns them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checkpoints: dict[str, Checkpoint] = {}
        self._counters: dict[str, dict[str, int]] = {}
        self._parts: dict[str, dict[str, str]] = {}
        self._leases: dict[str, Lease] = {}
        self.saves = 0  # how many checkpoints were written (tests read it)

    def save(self, checkpoint: Checkpoint, owner: str) -> None:
        with self._lock:
            lease = self._leases.get(checkpoint.run_id)
            if lease is None or lease.owner != owner:
                raise LeaseLostError(
                    f"run {checkpoint.run_id!r}: this process ({owner}) no longer holds its "
                    f"lease (held by {lease.owner if lease else 'nobody'}); not checkpointing."
                )
            changed = checkpoint.attempts
            if changed:
                self._counters.setdefault(checkpoint.run_id, {}).update(changed)
            if checkpoint.parts:
                kept = self._parts.setdefault(checkpoint.run_id, {})
                for key, text in checkpoint.parts.items():
                    if text is None:
                        kept.pop(key, None)
                    else:
                        kept[key] = text
            self._checkpoints[checkpoint.run_id] = replace(
                checkpoint, updated_at=time.time(), attempts=None, parts=None
            )
            self.saves += 1

    def load(self, run_id: str) -> Checkpoint | None:
        with self._lock:
            found = self._checkpoints.get(run_id)
            if found is None:
                return None
            return replace(
                found,
                attempts=dict(self._counters.get(run_id, {})),
                parts=dict(self._parts.get(run_id, {})),
            )

    def acquire(self, run_id: str, owner: str, ttl_s: float) -> None:
        with self._lock:
            held = self._leases.get(run_id)
            if held is not None and held.owner != owner and lease_is_live(held):
                raise RunLeasedError(leased_message(run_id, held))
            self._leases[run_id] = Lease(run_id, owner, time.time() + ttl_s)

    def release(self, run_id: str, owner: str) -> None:
        with self._lock:
            held = self._leases.get(run_id)
            if held is not None and held.owner == owner:
                del self._leases[run_id]

    def lease(self, run_id: str) -> Lease | None:
        with self._lock:
            return self._leases.get(run_id)

    def __repr__(self) -> str:
        return f"InMemoryCheckpointStore({len(self._checkpoints)} runs)"
