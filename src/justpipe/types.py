"""Public types of justpipe: enums, events, results, control objects and errors.

Everything here is part of the drop-in contract with justpipe 0.12 (names, field
order, defaults and enum values); see docs/compatibility.md for deliberate changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BarrierMetrics",
    "BarrierType",
    "CancellationToken",
    "DefinitionError",
    "Event",
    "EventType",
    "FailureClassificationConfig",
    "FailureClassificationContext",
    "FailureKind",
    "FailureReason",
    "FailureRecord",
    "FailureSource",
    "FailureSourceClassifier",
    "HookSpec",
    "InjectionMetadata",
    "InjectionMetadataMap",
    "InjectionSource",
    "MapMetrics",
    "Meta",
    "NodeKind",
    "PipelineCancelled",
    "PipelineEndData",
    "PipelineMeta",
    "PipelineTerminalStatus",
    "PipelineValidationWarning",
    "QueueMetrics",
    "Raise",
    "Retry",
    "RuntimeMetrics",
    "ScopedMeta",
    "Skip",
    "StepContext",
    "StepInfo",
    "StepStatus",
    "StepTiming",
    "Stop",
    "Suspend",
    "TaskMetrics",
]


# --------------------------------------------------------------------------- enums


class EventType(Enum):
    START = "start"
    FINISH = "finish"
    SUSPEND = "suspend"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    STEP_START = "step_start"
    STEP_END = "step_end"
    STEP_ERROR = "step_error"
    TOKEN = "token"
    BARRIER_WAIT = "barrier_wait"
    BARRIER_RELEASE = "barrier_release"
    MAP_START = "map_start"
    MAP_WORKER = "map_worker"
    MAP_COMPLETE = "map_complete"
    STATE_CHANGE = "state_change"  # declared for compatibility; never emitted


class NodeKind(Enum):
    SYSTEM = "system"
    STEP = "step"
    MAP = "map"
    SWITCH = "switch"
    SUB = "sub"
    BARRIER = "barrier"


class BarrierType(Enum):
    ALL = "all"
    ANY = "any"


class InjectionSource(str, Enum):
    STATE = "state"
    CONTEXT = "context"
    ERROR = "error"
    STEP_NAME = "step_name"
    CANCEL = "cancel"
    UNKNOWN = "unknown"


class PipelineTerminalStatus(Enum):
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    CLIENT_CLOSED = "client_closed"


class FailureKind(Enum):
    NONE = "none"
    VALIDATION = "validation"
    STARTUP = "startup"
    STEP = "step"
    SHUTDOWN = "shutdown"
    INFRA = "infra"


class FailureSource(Enum):
    NONE = "none"
    USER_CODE = "user_code"
    FRAMEWORK = "framework"
    EXTERNAL_DEP = "external_dep"


class FailureReason(str, Enum):
    STARTUP_HOOK_ERROR = "startup_hook_error"
    STEP_ERROR = "step_error"
    SHUTDOWN_HOOK_ERROR = "shutdown_hook_error"
    VALIDATION_ERROR = "validation_error"
    CLASSIFIER_ERROR = "classifier_error"
    INTERNAL_ERROR = "internal_error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    CLIENT_CLOSED = "client_closed"
    NO_STEPS = "no_steps"


class StepStatus(str, Enum):
    SUCCESS = "success"
    ERROR = "error"


# --------------------------------------------------------------------------- errors


class DefinitionError(Exception):
    """The pipeline definition is invalid; the message names the step and the fix."""

    def __init__(self, message: str, *, step_name: str = "system") -> None:
        super().__init__(message)
        self.step_name = step_name


class PipelineValidationWarning(UserWarning):
    """A definition that runs, but probably not the way its author meant."""


class PipelineCancelled(Exception):
    """Raised by `CancellationToken.checkpoint()` once the token is cancelled."""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """One item of a run's event stream (immutable)."""

    type: EventType
    stage: str
    payload: Any = None
    timestamp: float = field(default_factory=time.time)
    run_id: str | None = None
    origin_run_id: str | None = None
    parent_run_id: str | None = None
    seq: int | None = None
    node_kind: NodeKind = NodeKind.SYSTEM
    invocation_id: str | None = None
    parent_invocation_id: str | None = None
    owner_invocation_id: str | None = None
    attempt: int = 1
    scope: tuple[str, ...] = field(default_factory=tuple)
    meta: dict[str, Any] | None = None


# --------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class FailureRecord:
    kind: FailureKind
    source: FailureSource
    reason: FailureReason
    error: str | None = None
    step: str | None = None


@dataclass(frozen=True)
class FailureClassificationContext:
    error: Exception | None
    kind: FailureKind
    reason: FailureReason
    step: str | None
    default_source: FailureSource


FailureSourceClassifier = Callable[[FailureClassificationContext], FailureSource | None]


@dataclass(frozen=True)
class FailureClassificationConfig:
    source_classifier: FailureSourceClassifier | None = None
    external_dependency_prefixes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class QueueMetrics:
    max_depth: int


@dataclass(frozen=True)
class TaskMetrics:
    started: int
    completed: int
    peak_active: int


@dataclass(frozen=True)
class StepTiming:
    count: int
    total_s: float
    min_s: float
    max_s: float

    @property
    def avg_s(self) -> float:
        return self.total_s / self.count if self.count else 0.0


@dataclass(frozen=True)
class BarrierMetrics:
    waits: int
    releases: int
    timeouts: int
    total_wait_s: float
    max_wait_s: float


@dataclass(frozen=True)
class MapMetrics:
    maps_started: int
    maps_completed: int
    workers_started: int
    peak_workers: int


@dataclass(frozen=True)
class RuntimeMetrics:
    queue: QueueMetrics
    tasks: TaskMetrics
    step_latency: dict[str, StepTiming]
    barriers: dict[str, BarrierMetrics]
    maps: MapMetrics
    events: dict[str, int]
    tokens: int
    suspends: int


@dataclass(frozen=True)
class PipelineEndData:
    """Payload of the run's FINISH event."""

    status: PipelineTerminalStatus
    duration_s: float
    error: str | None = None
    reason: FailureReason | None = None
    failure_kind: FailureKind = FailureKind.NONE
    failure_source: FailureSource = FailureSource.NONE
    failed_step: str | None = None
    errors: list[FailureRecord] = field(default_factory=list)
    metrics: RuntimeMetrics | None = None


# --------------------------------------------------------------------------- control objects


@dataclass(frozen=True)
class Stop:
    """Return `Stop` (the class or an instance) to end the run gracefully."""


@dataclass
class Suspend:
    """Return `Suspend(reason)` to end the run with a SUSPEND event; resume via `run(start=...)`."""

    reason: str


@dataclass
class Retry:
    """Returned by an error handler: run the failed step again."""


@dataclass
class Skip:
    """Returned by a step or handler: do not run this step's static successors."""


@dataclass
class Raise:
    """Returned by an error handler: report `exception` (or the original error) as a step error."""

    exception: Exception | None = None


@dataclass
class _Next:
    """Private routing result: continue with `target` (a step name or function)."""

    target: str | Callable[..., Any] | None


# --------------------------------------------------------------------------- definitions


@dataclass
class StepContext:
    """What middleware learns about the step it wraps."""

    name: str
    kwargs: dict[str, Any]
    pipe_name: str
    retries: int | dict[str, Any] = 0


InjectionMetadata = dict[str, InjectionSource]
InjectionMetadataMap = dict[str, dict[str, InjectionSource]]


@dataclass
class StepInfo:
    name: str
    timeout: float | None
    retries: int | dict[str, Any]
    barrier_timeout: float | None
    has_error_handler: bool
    targets: list[str]
    kind: NodeKind
    sub_pipeline_hash: str | None = None


@dataclass
class HookSpec:
    func: Callable[..., Any]
    injection_metadata: dict[str, InjectionSource]


# --------------------------------------------------------------------------- cancellation


class CancellationToken:
    """Cooperative cancellation shared by every run of one Pipe.

    The runtime never checks it by itself: steps call ``await token.checkpoint()``.
    """

    __slots__ = ("_reason",)

    def __init__(self) -> None:
        self._reason: str | None = None

    def cancel(self, reason: str = "Cancelled") -> None:
        if self._reason is None:
            self._reason = reason

    def is_cancelled(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    async def checkpoint(self) -> None:
        """Raise `PipelineCancelled` once cancelled (does not yield to the loop otherwise)."""
        if self._reason is not None:
            raise PipelineCancelled(self._reason)

    def __repr__(self) -> str:
        return f"CancellationToken(cancelled={self.is_cancelled()!r}, reason={self._reason!r})"


# --------------------------------------------------------------------------- structured metadata


@runtime_checkable
class ScopedMeta(Protocol):
    """Per-step or per-run metadata writer."""

    def set(self, key: str, value: Any) -> None: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def add_tag(self, tag: str) -> None: ...

    def record_metric(self, name: str, value: float) -> None: ...

    def increment(self, name: str, amount: float = 1) -> None: ...


@runtime_checkable
class PipelineMeta(Protocol):
    """Read-only view of ``Pipe(metadata=...)``."""

    def get(self, key: str, default: Any = None) -> Any: ...


@runtime_checkable
class Meta(Protocol):
    """Declare one field of this type on the context class to receive structured metadata."""

    @property
    def step(self) -> ScopedMeta: ...

    @property
    def run(self) -> ScopedMeta: ...

    @property
    def pipeline(self) -> PipelineMeta: ...
