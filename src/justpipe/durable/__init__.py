"""Durable runs: checkpoint as you go, resume in another process after a suspend or a crash.

``Pipe(State, name=..., durable=True)`` checkpoints every run into the run store (under
``JUSTPIPE_STORAGE_PATH``, or the PostgreSQL database of ``JUSTPIPE_STORAGE_URL``);
``pipe.resume(run_id, value=...)`` continues one, in any process, as the same run (same
``run_id``, ``seq`` going on). See docs/durable.md.
"""

from justpipe.durable.api import Durable, resume_value
from justpipe.durable.checkpointer import SuspendedEndData, done_indices
from justpipe.durable.serializer import StateSerializationError, StateSerializer
from justpipe.durable.sqlite import SQLiteCheckpointStore
from justpipe.durable.store import (
    Checkpoint,
    CheckpointSignatureError,
    CheckpointStore,
    CorruptCheckpointError,
    DurableError,
    InMemoryCheckpointStore,
    Lease,
    LeaseLostError,
    MissingStepsError,
    PipelineChangedError,
    RunFinishedError,
    RunLeasedError,
    UndeclaredTypeError,
    UnknownRunError,
)

__all__ = [
    "Checkpoint",
    "CheckpointSignatureError",
    "CheckpointStore",
    "CorruptCheckpointError",
    "Durable",
    "DurableError",
    "InMemoryCheckpointStore",
    "Lease",
    "LeaseLostError",
    "MissingStepsError",
    "PipelineChangedError",
    "RunFinishedError",
    "RunLeasedError",
    "SQLiteCheckpointStore",
    "StateSerializationError",
    "StateSerializer",
    "SuspendedEndData",
    "UndeclaredTypeError",
    "UnknownRunError",
    "done_indices",
    "resume_value",
]
