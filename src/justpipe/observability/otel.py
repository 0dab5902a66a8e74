"""OpenTelemetry for justpipe: every run a trace, every invocation a span, and metrics.

    from justpipe.observability.otel import OpenTelemetryObserver
    pipe.add_observer(OpenTelemetryObserver())  # the global tracer and meter providers

Needs the optional extra ``justpipe[otel]`` (the OpenTelemetry API; bring an SDK and an
exporter). The core never imports OpenTelemetry. The span tree, attributes, metrics and
their mapping to the OpenTelemetry semantic conventions are described in
docs/opentelemetry.md.

Propagation to code running elsewhere (worker processes, Dask, Ray):
`inject_context()` / `attach_context(carrier)` carry the current context as W3C trace
context; `current_invocation_carrier(invocation_id)` (or `await
invocation_carrier(invocation_id)`) gives the carrier of a live invocation's span, and
`worker_trace_hook` attaches it in an executor's worker. Runs continued later link to the
run they continue: `run_carrier(run_id)`, then `continue_trace(carrier)` (or the
observer's `continued_from=`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, Tracer
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "justpipe.observability.otel needs the OpenTelemetry API, which is not installed: "
        "pip install 'justpipe[otel]' (and an SDK to export, e.g. opentelemetry-sdk)"
    ) from _missing

from justpipe._kernel.offload import register_carrier_provider
from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.types import (
    Event,
    EventType,
    NodeKind,
    PipelineEndData,
    PipelineTerminalStatus,
)

try:  # the API's stand-in before a global meter provider is set (private name)
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _ProxyMP
except ImportError:  # pragma: no cover - an API without it: treat nothing as a proxy
    _ProxyMP = type("_NoProxy", (), {})  # type: ignore[assignment,misc]

__all__ = [
    "OpenTelemetryObserver",
    "attach_context",
    "continue_trace",
    "current_invocation_carrier",
    "inject_context",
    "invocation_carrier",
    "run_carrier",
    "worker_trace_hook",
]

INSTRUMENTATION_NAME = "justpipe"
_log = logging.getLogger("justpipe")

# --------------------------------------------------------------------------- attribute names

RUN_ID = "justpipe.run_id"
ORIGIN_RUN_ID = "justpipe.origin_run_id"
PARENT_RUN_ID = "justpipe.parent_run_id"
PIPELINE_NAME = "justpipe.pipeline.name"
PIPELINE_HASH = "justpipe.pipeline.hash"
RUN_STATUS = "justpipe.run.status"
RUN_SUSPENDED = "justpipe.run.suspended"
RUN_SEGMENT = "justpipe.run.segment"
SUSPEND_REASON = "justpipe.suspend.reason"
FAILURE_KIND = "justpipe.failure.kind"
FAILURE_SOURCE = "justpipe.failure.source"
FAILURE_REASON = "justpipe.failure.reason"
FAILED_STEP = "justpipe.failed_step"
STEP_NAME = "justpipe.step.name"
STEP_KIND = "justpipe.step.kind"
STAGE = "justpipe.stage"
INVOCATION_ID = "justpipe.invocation_id"
PARENT_INVOCATION_ID = "justpipe.parent_invocation_id"
OWNER_INVOCATION_ID = "justpipe.owner_invocation_id"
ATTEMPT = "justpipe.attempt"
INVOCATION_STATUS = "justpipe.invocation.status"
MAP_INDEX = "justpipe.map.index"
MAP_ITEM_COUNT = "justpipe.map.item_count"
TOKENS = "justpipe.tokens"
PHASE = "justpipe.phase"
# OpenTelemetry semantic conventions (error.type and exception.* are stable; cicd.* is
# in development: see docs/opentelemetry.md)
ERROR_TYPE = "error.type"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_STACKTRACE = "exception.stacktrace"
EXCEPTION_MESSAGE = "exception.message"
CICD_PIPELINE_NAME = "cicd.pipeline.name"
CICD_PIPELINE_RUN_ID = "cicd.pipeline.run.id"
CICD_PIPELINE_RESULT = "cicd.pipeline.result"
CICD_PIPELINE_ACTION_NAME = "cicd.pipeline.action.name"
CICD_TASK_NAME = "cicd.pipeline.task.name"
CICD_TASK_RUN_ID = "cicd.pipeline.task.run.id"
CICD_TASK_RUN_RESULT = "cicd.pipeline.task.run.result"

# invocation statuses (justpipe.invocation.status)
SUCCESS = "success"
ERROR = "error"
CANCELLED = "cancelled"
RETRIED = "retried"  # abandoned for a new attempt (Retry)
INTERRUPTED = "interrupted"  # the run ended without an end event for it (timeout, close)

_CICD_RESULT = {
    PipelineTerminalStatus.SUCCESS: "success",
    PipelineTerminalStatus.FAILED: "failure",
    PipelineTerminalStatus.TIMEOUT: "timeout",
    PipelineTerminalStatus.CANCELLED: "cancellation",
    PipelineTerminalStatus.CLIENT_CLOSED: "cancellation",
}
_TASK_RESULT = {
    SUCCESS: "success",
    ERROR: "failure",
    CANCELLED: "cancellation",
    RETRIED: "failure",
    INTERRUPTED: "cancellation",
    "timeout": "timeout",
    "client_closed": "cancellation",
}
_ENDINGS: dict[str, dict[str, Any]] = {
    status: {INVOCATION_STATUS: status, CICD_TASK_RUN_RESULT: result}
    for status, result in _TASK_RESULT.items()
}
# messages the kernel gives its own exceptions, so failed spans get a real error.type
_KNOWN_ERRORS = (
    ("Step '", " timed out after ", "TimeoutError"),
    ("Barrier timeout for step '", "", "TimeoutError"),
)
_OTHER = "_OTHER"
_CLOSED_KEEP = 1024  # closed invocations remembered per run, for links to their spans
_RUNS_KEEP = 1024  # finished runs whose carrier `run_carrier` still answers for

_STEP_START = EventType.STEP_START
_STEP_END = EventType.STEP_END
_STEP_ERROR = EventType.STEP_ERROR
_TOKEN = EventType.TOKEN
_START = EventType.START
_FINISH = EventType.FINISH
_MAP_WORKER = EventType.MAP_WORKER


# --------------------------------------------------------------------------- propagation


def inject_context(
    carrier: dict[str, str] | None = None, context: otel_context.Context | None = None
) -> dict[str, str]:
    """The current (or given) context as a W3C trace-context carrier (``traceparent``...).

    Uses the globally configured propagator (by default W3C trace context and baggage).
    """
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier, context=context)
    return carrier


class AttachedContext:
    """A context made current by `attach_context`; ``detach()`` (or leave the ``with``)."""

    __slots__ = ("context", "_token")

    def __init__(self, context: otel_context.Context) -> None:
        self.context = context
        self._token: Token[Any] | None = otel_context.attach(context)

    def detach(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None

    def __enter__(self) -> AttachedContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def attach_context(carrier: Mapping[str, str] | None) -> AttachedContext:
    """Make the context carried by `carrier` current (in a worker: spans become its children).

    ``with attach_context(carrier): ...`` detaches on exit; a worker that serves one
    invocation per process may just call it. An empty or ``None`` carrier attaches the
    current context unchanged.
    """
    if carrier is not None and not isinstance(carrier, Mapping):
        raise TypeError(
            f"attach_context expects the dict made by inject_context() or "
            f"current_invocation_carrier(), got {type(carrier).__name__}"
        )
    context = propagate.extract(dict(carrier)) if carrier else otel_context.get_current()
    return AttachedContext(context)


def worker_trace_hook(info: Any) -> AttachedContext:
    """An executor trace hook: in the worker, make the invocation's shipped carrier current.

    For `justpipe.executors` (``trace_hook=worker_trace_hook``): entered around the step
    function in the worker with the call's `CallInfo`, whose ``carrier`` the kernel fills
    with ``await invocation_carrier(invocation_id)``; spans the function makes there are
    children of its invocation span. Module-level, so it pickles.
    """
    carrier = getattr(info, "carrier", None)
    return attach_context(carrier if carrier else None)


# invocation id -> span context of its live span (every observer, every run)
_INVOCATIONS: dict[str, SpanContext] = {}
_WAITERS: dict[str, list[asyncio.Future[dict[str, str] | None]]] = {}
_TRACED_RUNS: dict[str, int] = {}  # run id -> live observers of it (spans or metrics)
_SPANNED_RUNS: dict[str, int] = {}  # run id -> live observers making spans for it


def _count(counts: dict[str, int], run_id: str, delta: int) -> None:
    value = counts.get(run_id, 0) + delta
    if value > 0:
        counts[run_id] = value
    else:
        counts.pop(run_id, None)


_FINISHED_RUNS: OrderedDict[str, SpanContext] = OrderedDict()


def _carrier_of(span_context: SpanContext) -> dict[str, str]:
    return inject_context(context=trace.set_span_in_context(trace.NonRecordingSpan(span_context)))


def current_invocation_carrier(invocation_id: str) -> dict[str, str] | None:
    """The W3C carrier of the live span of `invocation_id`, or ``None``.

    ``None`` when no `OpenTelemetryObserver` traces that invocation, when its span has
    ended, or when it has not been opened yet: observers run in the run's loop and learn
    of an invocation from its STEP_START, which a step started eagerly may precede (use
    ``await invocation_carrier(invocation_id)`` from inside the invocation).
    """
    span_context = _INVOCATIONS.get(invocation_id)
    return None if span_context is None else _carrier_of(span_context)


async def invocation_carrier(invocation_id: str) -> dict[str, str] | None:
    """Like `current_invocation_carrier`, waiting for the span to open if its run is traced.

    Returns ``None`` at once when the invocation's run is not traced (or has ended).
    """
    found = current_invocation_carrier(invocation_id)
    if found is not None:
        return found
    run_id = invocation_id.rpartition(":")[0]
    if run_id not in _SPANNED_RUNS:
        return None
    waiter: asyncio.Future[dict[str, str] | None] = asyncio.get_running_loop().create_future()
    _WAITERS.setdefault(invocation_id, []).append(waiter)
    return await waiter


def _wake(invocation_id: str, carrier: dict[str, str] | None) -> None:
    for waiter in _WAITERS.pop(invocation_id, ()):
        if not waiter.done():
            waiter.set_result(carrier)


def run_carrier(run_id: str) -> dict[str, str] | None:
    """The W3C carrier of a run's span (live, or among the last finished ones), or ``None``.

    A durable run that is continued later keeps this next to its state and passes it to
    `continue_trace` when it resumes, so the new run links to this one.
    """
    span_context = _FINISHED_RUNS.get(run_id)
    if span_context is None:
        for observer_run in _LIVE.values():
            if observer_run.run_id == run_id and observer_run.span_context is not None:
                span_context = observer_run.span_context
                break
    return None if span_context is None else _carrier_of(span_context)


_CONTINUED: ContextVar[tuple[SpanContext, ...]] = ContextVar("justpipe_otel_links", default=())


def _links_from(carrier: object, where: str = "continued_from") -> tuple[SpanContext, ...]:
    """The span context in a carrier, as a one-element tuple (empty when there is none)."""
    if not carrier:
        return ()
    if not isinstance(carrier, Mapping):
        raise TypeError(
            f"{where} expects a carrier from run_carrier() (a dict), got {type(carrier).__name__}"
        )
    span_context = trace.get_current_span(propagate.extract(dict(carrier))).get_span_context()
    return (span_context,) if span_context.is_valid else ()


@contextmanager
def continue_trace(*carriers: Mapping[str, str] | None) -> Iterator[None]:
    """Runs started inside link their run span to the span(s) in `carriers`.

    The hook for runs continued later (resume after a suspend, durable runs): the new run
    gets its own trace (or the caller's current span as parent) with a link to the earlier
    run span, instead of growing one trace over hours. ``None`` or empty carriers are
    ignored::

        with continue_trace(saved_carrier):
            async for event in pipe.run(state, start="next_step"): ...
    """
    links: tuple[SpanContext, ...] = ()
    for carrier in carriers:
        links += _links_from(carrier, "continue_trace")
    token = _CONTINUED.set(_CONTINUED.get() + links)
    try:
        yield
    finally:
        _CONTINUED.reset(token)


# --------------------------------------------------------------------------- nesting

# The innermost live traced run of this context: set on the caller's context when a traced
# run starts, so that a run started below it (a sub-pipeline, iterated inside the sub step)
# knows it is nested. The parent traces a sub-pipeline from its forwarded events; the
# child's own observer holds its events back until the parent claims the run (seeing its
# forwarded events) or ends without claiming it (a run started by a step's own code), and
# then replays them itself.
_ENCLOSING: ContextVar[str | None] = ContextVar("justpipe_otel_run", default=None)


@dataclass(slots=True)
class _Held:
    observer: OpenTelemetryObserver
    meta: ObserverMeta
    enclosing: str
    parent: otel_context.Context
    links: tuple[SpanContext, ...]
    events: list[Event] = field(default_factory=list)
    ended: bool = False
    end: tuple[float | None, Exception | None] = (None, None)


_HELD: dict[str, _Held] = {}  # nested run id -> its held events


def _claim(run_id: str | None) -> None:
    if run_id is not None and _HELD:
        _HELD.pop(run_id, None)


# --------------------------------------------------------------------------- instruments


class _Instruments:
    __slots__ = (
        "runs",
        "run_duration",
        "invocation_duration",
        "in_flight",
        "active",
        "tokens",
        "retries",
        "map_items",
    )

    def __init__(self, meter: metrics.Meter) -> None:
        self.runs = meter.create_counter(
            "justpipe.runs", unit="{run}", description="Finished pipeline runs, by status."
        )
        self.run_duration = meter.create_histogram(
            "justpipe.run.duration",
            unit="s",
            description="Duration of pipeline runs (PipelineEndData.duration_s), by status.",
        )
        self.invocation_duration = meter.create_histogram(
            "justpipe.invocation.duration",
            unit="s",
            description="Duration of step invocations (STEP_START to its end), by step and status.",
        )
        # asynchronous: read when metrics are collected, so an invocation costs no
        # measurement for it (the observer keeps the live count per pipeline)
        self.active: dict[str, int] = {}
        self.in_flight = meter.create_observable_up_down_counter(
            "justpipe.invocations.active",
            callbacks=[self._observe_active],
            unit="{invocation}",
            description="Step invocations started and not yet ended, by pipeline.",
        )
        self.tokens = meter.create_counter(
            "justpipe.tokens", unit="{token}", description="TOKEN events streamed by steps."
        )
        self.retries = meter.create_counter(
            "justpipe.retries",
            unit="{retry}",
            description="Invocations abandoned for a new attempt (Retry).",
        )
        self.map_items = meter.create_counter(
            "justpipe.map.items", unit="{item}", description="Items fanned out by map steps."
        )

    def _observe_active(self, options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        for pipe_name, count in list(self.active.items()):
            yield metrics.Observation(count, {PIPELINE_NAME: pipe_name})


# --------------------------------------------------------------------------- per run


@dataclass(slots=True, eq=False)
class _Inv:
    """One open invocation (its span, when tracing)."""

    inv_id: str
    span: Span | None
    span_context: SpanContext | None
    name: str
    kind: str
    start: float
    attempt: int
    key: tuple[str, tuple[str, ...]]
    trace: _Trace
    parent: _Inv | None = None  # its parent invocation span (a map worker's map)
    context: otel_context.Context | None = None  # its span as a parent, once asked for
    tokens: int = 0
    item_count: int | None = None  # a map owner's item count


@dataclass(slots=True, eq=False)
class _Trace:
    """One run seen in the stream: the observed run, or a sub-pipeline run forwarded into it."""

    run_id: str
    pipe_name: str
    pipe_hash: str | None
    span: Span | None
    context: otel_context.Context | None  # the run span's context: parent of its spans
    start: float
    prefix: str = ""  # stage prefix of a forwarded run ("sub:")
    by_key: dict[tuple[str, tuple[str, ...]], _Inv] = field(default_factory=dict)
    by_name: dict[str, _Inv] = field(default_factory=dict)  # latest open invocation per step
    maps: dict[str, _Inv] = field(default_factory=dict)  # worker name -> open map owner
    last_end: float | None = None
    startup: Span | None = None
    shutdown_errors: list[Event] = field(default_factory=list)
    suspend_reason: str | None = None
    timed_out: bool = False


@dataclass(slots=True, eq=False)
class _Run:
    """State of one observed run (one `on_pipeline_start` ... end)."""

    run_id: str
    tracer: Tracer | None
    instruments: _Instruments | None
    root: _Trace
    pipe_name: str
    invs: dict[str, _Inv] = field(default_factory=dict)
    # the last closed invocations (an OrderedDict: evicting its oldest entry is O(1))
    closed: OrderedDict[str, SpanContext] = field(default_factory=OrderedDict)
    children: dict[str, _Trace] = field(default_factory=dict)
    finished_children: set[str] = field(default_factory=set)
    subs: dict[str, _Inv] = field(default_factory=dict)  # full stage -> open sub invocation
    attrs: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    marker: Token[str | None] | None = None
    done: bool = False

    @property
    def span_context(self) -> SpanContext | None:
        return None if self.root.span is None else self.root.span.get_span_context()


_LIVE: dict[int, _Run] = {}  # id(run) -> run, for run_carrier
_METERS: dict[int, tuple[metrics.MeterProvider, _Instruments]] = {}


def _ns(timestamp: float) -> int:
    return int(timestamp * 1e9)


def _error_type(event: Event) -> str | None:
    """The exception class of a STEP_ERROR, when it can be known from the event."""
    meta = event.meta
    if isinstance(meta, dict):
        framework = meta.get("framework")
        if isinstance(framework, dict):
            exc = framework.get("exception")
            if isinstance(exc, BaseException):
                return type(exc).__qualname__
            named = framework.get("error_type")
            if isinstance(named, str) and named:
                return named
    text = event.payload if isinstance(event.payload, str) else ""
    for head, middle, name in _KNOWN_ERRORS:
        if text.startswith(head) and middle in text:
            return name
    return None


def _map_index(stage: str, scope: tuple[str, ...]) -> int | None:
    """A map worker's index, from the last scope element ``"<worker>[<i>]"``."""
    if not scope:
        return None
    last = scope[-1]
    if (
        not last.endswith("]")
        or not last.startswith(stage)
        or last[len(stage) : len(stage) + 1] != "["
    ):
        return None
    try:
        return int(last[len(stage) + 1 : -1])
    except ValueError:
        return None


# --------------------------------------------------------------------------- the observer


def _check_provider(value: object, api_class: type, argument: str, example: str) -> None:
    if value is None or isinstance(value, api_class):
        return
    if isinstance(value, type):
        hint = f"got the class {value.__name__}; pass an instance, e.g. {argument}={example}"
    elif argument == "tracer_provider" and isinstance(value, Tracer):
        hint = f"got a Tracer; pass the provider it came from, e.g. {argument}={example}"
    elif argument == "meter_provider" and isinstance(value, metrics.Meter):
        hint = f"got a Meter; pass the provider it came from, e.g. {argument}={example}"
    else:
        hint = f"got {type(value).__name__}; pass e.g. {argument}={example}"
    raise TypeError(
        f"OpenTelemetryObserver({argument}=...) must be an "
        f"{api_class.__module__}.{api_class.__name__} or None (the global one): {hint}"
    )


class OpenTelemetryObserver(Observer):
    """Trace every run (a span per run, per invocation) and record justpipe metrics.

    `tracer_provider` / `meter_provider`: OpenTelemetry providers, or ``None`` for the
    global ones (looked up when each run starts, so setting them later works). With no
    provider configured (or a no-op one) the observer does nothing per event.

    `continued_from(state, context, meta)`, optional: the carrier (`run_carrier`) of an
    earlier run that this run continues, or ``None``, read when each run starts (e.g.
    from where a durable runtime keeps it in the state); the run span links to it, as
    inside `continue_trace`.

    One instance may observe any number of pipes and concurrent runs. See
    docs/opentelemetry.md for the spans, attributes and metrics.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        continued_from: Callable[[Any, Any, ObserverMeta], Mapping[str, str] | None] | None = None,
    ) -> None:
        if continued_from is not None and not callable(continued_from):
            raise TypeError(
                "OpenTelemetryObserver(continued_from=...) must be a function "
                "(state, context, meta) -> carrier or None, e.g. "
                "continued_from=lambda state, context, meta: state.get('trace_carrier'); "
                f"got {type(continued_from).__name__}"
            )
        self._continued_from = continued_from
        _check_provider(
            tracer_provider,
            trace.TracerProvider,
            "tracer_provider",
            "opentelemetry.sdk.trace.TracerProvider()",
        )
        _check_provider(
            meter_provider,
            metrics.MeterProvider,
            "meter_provider",
            "opentelemetry.sdk.metrics.MeterProvider(metric_readers=[...])",
        )
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracers: dict[int, tuple[trace.TracerProvider, Tracer]] = {}
        self._runs: dict[str, _Run] = {}
        self._pipes: dict[str, Any] = {}  # pipe name -> Pipe, from instrument()
        self._hashes: dict[str, str | None] = {}

    # ------------------------------------------------------------------ setup

    def instrument(self, pipe: Any) -> Any:
        """``pipe.add_observer(self)``, and learn the pipe (and its sub-pipelines) by name.

        Only adds what observers cannot see: the pipeline hash on run spans and the names of
        sub-pipelines. Returns `pipe`.
        """
        pipe.add_observer(self)
        self._learn(pipe)
        return pipe

    def _learn(self, pipe: Any) -> None:
        name = getattr(pipe, "name", None)
        if not isinstance(name, str) or name in self._pipes:
            return
        self._pipes[name] = pipe
        registry = getattr(pipe, "registry", None)
        for step in getattr(registry, "steps", {}).values():
            child = getattr(step, "pipeline", None)
            if child is not None:
                self._learn(child)

    def _hash(self, pipe_name: str) -> str | None:
        if pipe_name in self._hashes:
            return self._hashes[pipe_name]
        pipe = self._pipes.get(pipe_name)
        value: str | None = None
        if pipe is not None:
            try:
                value = str(pipe.describe()["pipeline_hash"])
            except Exception:
                value = None
            self._hashes[pipe_name] = value
        return value

    def _sub_pipe_name(self, parent_pipe: str, sub_step: str) -> str | None:
        pipe = self._pipes.get(parent_pipe)
        if pipe is None:
            return None
        step = getattr(getattr(pipe, "registry", None), "steps", {}).get(sub_step)
        child = getattr(step, "pipeline", None)
        name = getattr(child, "name", None)
        return name if isinstance(name, str) else None

    def _tracer(self) -> Tracer | None:
        provider = self._tracer_provider or trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
        cached = self._tracers.get(id(provider))
        if cached is not None and cached[0] is provider:
            return cached[1]
        from justpipe import __version__

        tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__)
        self._tracers[id(provider)] = (provider, tracer)
        return tracer

    def _instruments(self) -> _Instruments | None:
        provider = self._meter_provider or metrics.get_meter_provider()
        if isinstance(provider, (metrics.NoOpMeterProvider, _ProxyMP)):
            return None
        cached = _METERS.get(id(provider))
        if cached is not None and cached[0] is provider:
            return cached[1]
        from justpipe import __version__

        # one set of instruments per provider, shared by every observer that uses it
        instruments = _Instruments(provider.get_meter(INSTRUMENTATION_NAME, __version__))
        _METERS[id(provider)] = (provider, instruments)
        return instruments

    # ------------------------------------------------------------------ callbacks

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        run_id = meta.run_id or ""
        tracer = self._tracer()
        instruments = self._instruments()
        if tracer is None and instruments is None:
            return  # nothing configured: this run costs one dict lookup per event
        links = _CONTINUED.get()
        if self._continued_from is not None:
            try:
                links = links + _links_from(self._continued_from(state, context, meta))
            except Exception as exc:  # the run is still traced, without the link
                _log.warning("OpenTelemetryObserver continued_from failed: %r", exc)
        enclosing = _ENCLOSING.get()
        if (
            enclosing is not None
            and enclosing != run_id  # another observer of this same run
            and enclosing in _TRACED_RUNS
            and run_id not in _HELD
        ):
            # nested in a traced run: hold the events until that run claims it or ends
            _HELD[run_id] = _Held(self, meta, enclosing, otel_context.get_current(), links)
            return
        self._begin(meta, tracer, instruments, otel_context.get_current(), links)

    def _begin(
        self,
        meta: ObserverMeta,
        tracer: Tracer | None,
        instruments: _Instruments | None,
        parent: otel_context.Context,
        links: tuple[SpanContext, ...],
        *,
        mark: bool = True,
    ) -> _Run:
        run_id = meta.run_id or ""
        started = meta.started_at if meta.started_at is not None else 0.0
        pipe_hash = self._hash(meta.pipe_name)
        span = None
        span_ctx = None
        if tracer is not None:
            attributes: dict[str, Any] = {
                RUN_ID: run_id,
                PIPELINE_NAME: meta.pipe_name,
                CICD_PIPELINE_NAME: meta.pipe_name,
                CICD_PIPELINE_RUN_ID: run_id,
                CICD_PIPELINE_ACTION_NAME: "RUN",
            }
            if pipe_hash is not None:
                attributes[PIPELINE_HASH] = pipe_hash
            if meta.segment > 1:  # a durable run's resumed segment (linked to the last one)
                attributes[RUN_SEGMENT] = meta.segment
            span = tracer.start_span(
                f"RUN {meta.pipe_name}",
                context=parent,
                attributes=attributes,
                links=[Link(link, {"justpipe.link": "continues"}) for link in links],
                start_time=_ns(started) if started else None,
            )
            span_ctx = trace.set_span_in_context(span, parent)
        root = _Trace(run_id, meta.pipe_name, pipe_hash, span, span_ctx, started)
        if tracer is not None:
            root.startup = tracer.start_span(
                "startup",
                context=span_ctx,
                attributes={PHASE: "startup", RUN_ID: run_id},
                start_time=_ns(started) if started else None,
            )
        run = _Run(run_id, tracer, instruments, root, meta.pipe_name)
        self._runs[run_id] = run
        _LIVE[id(run)] = run
        _count(_TRACED_RUNS, run_id, 1)
        if tracer is not None:
            _count(_SPANNED_RUNS, run_id, 1)
        if mark:
            run.marker = _ENCLOSING.set(run_id)
        return run

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        run = self._runs.get(meta.run_id or "")
        if run is None:
            if _HELD:
                held = _HELD.get(meta.run_id or "")
                if held is not None and held.observer is self:
                    held.events.append(event)
            return
        self._handle(run, event)

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        self._ended(meta, duration_s, None)

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        self._ended(meta, None, error)

    def _ended(self, meta: ObserverMeta, duration_s: float | None, error: Exception | None) -> None:
        run_id = meta.run_id or ""
        run = self._runs.pop(run_id, None)
        if run is None:
            held = _HELD.get(run_id)
            if held is not None and held.observer is self:
                held.ended = True
                held.end = (duration_s, error)
            return
        if not run.done:  # no FINISH seen: end from what the callback says
            status = PipelineTerminalStatus.FAILED if error is not None else None
            self._finish(run, None, status, str(error) if error is not None else None, None)
        self._release(run)

    def _release(self, run: _Run) -> None:
        _LIVE.pop(id(run), None)
        _count(_TRACED_RUNS, run.run_id, -1)
        if run.tracer is not None:
            _count(_SPANNED_RUNS, run.run_id, -1)
        if run.marker is not None:
            # ValueError: ended in another context (a cancelled consumer's cleanup)
            with suppress(ValueError):
                _ENCLOSING.reset(run.marker)
            run.marker = None
        for inv_id in [i for i in _WAITERS if i.startswith(run.run_id)]:
            _wake(inv_id, None)
        # nested runs it never claimed were started by step code: they trace themselves now
        for nested_id, held in list(_HELD.items()):
            if held.enclosing == run.run_id:
                del _HELD[nested_id]
                held.observer._replay(held)

    def _replay(self, held: _Held) -> None:
        tracer = self._tracer()
        instruments = self._instruments()
        if tracer is None and instruments is None:
            return
        run = self._begin(held.meta, tracer, instruments, held.parent, held.links, mark=False)
        for event in held.events:
            self._handle(run, event)
        if held.ended:
            self._runs.pop(run.run_id, None)
            if not run.done:
                error = held.end[1]
                status = PipelineTerminalStatus.FAILED if error is not None else None
                self._finish(run, None, status, str(error) if error is not None else None, None)
            self._release(run)

    # ------------------------------------------------------------------ events

    def _handle(self, run: _Run, event: Event) -> None:
        if event.parent_run_id is None:
            trace_ = run.root
        else:
            found = self._forwarded(run, event)
            if found is None:
                return
            trace_ = found
        kind = event.type
        if kind is _STEP_START:
            self._open(run, trace_, event)
        elif kind is _STEP_END:
            self._close(run, trace_, event, SUCCESS)
        elif kind is _TOKEN:
            inv = self._by_stage(trace_, event)
            if inv is not None:
                inv.tokens += 1
        elif kind is _STEP_ERROR:
            self._step_error(run, trace_, event)
        elif kind is _MAP_WORKER:
            return
        elif kind is EventType.MAP_START or kind is EventType.MAP_COMPLETE:
            self._map_event(run, trace_, event)
        elif kind is EventType.BARRIER_WAIT or kind is EventType.BARRIER_RELEASE:
            self._run_event(trace_, event)
        elif kind is _START:
            self._started(trace_, event.timestamp, None)
        elif kind is _FINISH:
            payload = event.payload
            if trace_ is run.root:
                if isinstance(payload, PipelineEndData):
                    self._finish(run, payload, payload.status, payload.error, event.timestamp)
            else:
                self._finish_child(run, trace_, event)
        elif kind is EventType.SUSPEND:
            trace_.suspend_reason = str(event.payload)
            if run.root.suspend_reason is None:  # a sub-pipeline's suspend stops its parent
                run.root.suspend_reason = str(event.payload)
            inv = self._by_stage(trace_, event)
            target = inv.span if inv is not None else trace_.span
            if target is not None:
                target.add_event(
                    "justpipe.suspend",
                    {SUSPEND_REASON: str(event.payload)},
                    timestamp=_ns(event.timestamp),
                )
        elif kind is EventType.CANCELLED:
            self._run_event(trace_, event)
            if event.invocation_id is not None:
                self._close(run, trace_, event, CANCELLED)
        elif kind is EventType.TIMEOUT:
            trace_.timed_out = True
            self._run_event(trace_, event)

    def _forwarded(self, run: _Run, event: Event) -> _Trace | None:
        origin = event.origin_run_id or event.parent_run_id or ""
        found = run.children.get(origin)
        if found is not None:
            return found
        if origin in run.finished_children:
            return None
        _claim(origin)
        prefix = event.stage.rpartition(":")[0]
        parent: _Inv | None = None
        if origin == event.parent_run_id and event.owner_invocation_id is not None:
            parent = run.invs.get(event.owner_invocation_id)
        if parent is None:
            parent = run.subs.get(prefix)
        parent_trace = parent.trace if parent is not None else run.root
        sub_step = prefix.rpartition(":")[2]
        pipe_name = self._sub_pipe_name(parent_trace.pipe_name, sub_step) or sub_step
        started = event.timestamp
        span = None
        context = None
        if run.tracer is not None:
            if parent is not None and parent.span is not None:
                parent_context = trace.set_span_in_context(parent.span)
            else:
                parent_context = parent_trace.context or otel_context.get_current()
            attributes: dict[str, Any] = {
                RUN_ID: origin,
                PARENT_RUN_ID: run.run_id if parent_trace is run.root else parent_trace.run_id,
                PIPELINE_NAME: pipe_name,
                CICD_PIPELINE_NAME: pipe_name,
                CICD_PIPELINE_RUN_ID: origin,
                CICD_PIPELINE_ACTION_NAME: "RUN",
                STAGE: prefix,
            }
            pipe_hash = self._hash(pipe_name)
            if pipe_hash is not None:
                attributes[PIPELINE_HASH] = pipe_hash
            span = run.tracer.start_span(
                f"RUN {pipe_name}",
                context=parent_context,
                attributes=attributes,
                start_time=_ns(started),
            )
            context = trace.set_span_in_context(span)
        child = _Trace(origin, pipe_name, None, span, context, started, prefix=prefix + ":")
        run.children[origin] = child
        _count(_TRACED_RUNS, origin, 1)
        if run.tracer is not None:
            _count(_SPANNED_RUNS, origin, 1)
        return child

    def _own(self, trace_: _Trace, stage: str) -> str:
        prefix = trace_.prefix
        return stage[len(prefix) :] if prefix and stage.startswith(prefix) else stage

    def _by_stage(self, trace_: _Trace, event: Event) -> _Inv | None:
        """The open invocation a TOKEN or SUSPEND (events without ids) belongs to: by stage."""
        return trace_.by_name.get(self._own(trace_, event.stage))

    def _attrs(self, run: _Run, *key: str) -> dict[str, Any]:
        """Metric attributes, built once per distinct combination."""
        found = run.attrs.get(key)
        if found is None:
            names = (PIPELINE_NAME, STEP_NAME, STEP_KIND, INVOCATION_STATUS)
            found = dict(zip(names, key, strict=False))
            run.attrs[key] = found
        return found

    def _open(self, run: _Run, trace_: _Trace, event: Event) -> None:
        inv_id = event.invocation_id
        if inv_id is None:
            return
        stage = self._own(trace_, event.stage)
        forwarded = event.parent_run_id is not None
        scope = event.scope[trace_.prefix.count(":") :] if forwarded else event.scope
        key = (stage, scope)
        index = _map_index(stage, scope)
        # a new attempt (Retry): the previous attempt is still open, same step and scope
        previous: _Inv | None = None
        if forwarded:  # forwarded events lose the child's lineage: same key, still open
            candidate = trace_.by_key.get(key)
            if candidate is not None and candidate.attempt < event.attempt:
                previous = candidate
        elif event.parent_invocation_id is not None:
            candidate = run.invs.get(event.parent_invocation_id)
            if candidate is not None and candidate.key == key:
                previous = candidate
        parent: _Inv | None
        if previous is not None:
            parent = previous.parent
        elif index is not None:
            parent = (
                trace_.maps.get(stage)
                if forwarded
                else run.invs.get(event.owner_invocation_id or "")
            )
        else:
            parent = None
        kind = event.node_kind.value
        span: Span | None = None
        span_context: SpanContext | None = None
        tracer = run.tracer
        if tracer is not None:
            if parent is not None and parent.span is not None:
                parent_context = parent.context
                if parent_context is None:
                    parent_context = parent.context = trace.set_span_in_context(parent.span)
            else:
                parent_context = trace_.context or otel_context.get_current()
            attributes: dict[str, Any] = {
                STEP_NAME: stage,
                STEP_KIND: kind,
                INVOCATION_ID: inv_id,
                ATTEMPT: event.attempt,
                RUN_ID: run.run_id,
                CICD_TASK_NAME: stage,
                CICD_TASK_RUN_ID: inv_id,
            }
            links: list[Link] = []
            if forwarded:
                attributes[ORIGIN_RUN_ID] = trace_.run_id
                attributes[STAGE] = event.stage
            else:
                if event.parent_invocation_id is not None:
                    attributes[PARENT_INVOCATION_ID] = event.parent_invocation_id
                if event.owner_invocation_id not in (None, inv_id):
                    attributes[OWNER_INVOCATION_ID] = event.owner_invocation_id
            if index is not None:
                attributes[MAP_INDEX] = index
                if parent is not None and parent.item_count is not None:
                    attributes[MAP_ITEM_COUNT] = parent.item_count
            if previous is not None:
                if previous.span_context is not None:
                    links.append(Link(previous.span_context, {"justpipe.link": "previous_attempt"}))
            elif not forwarded and event.parent_invocation_id not in (
                None,
                event.owner_invocation_id,
            ):
                cause = run.closed.get(event.parent_invocation_id or "")
                if cause is None:
                    cause_inv = run.invs.get(event.parent_invocation_id or "")
                    cause = cause_inv.span_context if cause_inv is not None else None
                if cause is not None:
                    links.append(Link(cause, {"justpipe.link": "caused_by"}))
            span = tracer.start_span(
                stage,
                context=parent_context,
                attributes=attributes,
                links=links,
                start_time=_ns(event.timestamp),
            )
            span_context = span.get_span_context()
        if previous is not None:
            self._end_inv(run, previous, RETRIED, event.timestamp, None)
            if run.instruments is not None:
                run.instruments.retries.add(1, self._attrs(run, trace_.pipe_name, stage))
        inv = _Inv(
            inv_id, span, span_context, stage, kind, event.timestamp, event.attempt, key, trace_
        )
        inv.parent = parent
        run.invs[inv_id] = inv
        trace_.by_key[key] = inv
        trace_.by_name[stage] = inv
        if event.node_kind is NodeKind.SUB:
            run.subs[event.stage] = inv
        if run.instruments is not None:
            active = run.instruments.active
            active[trace_.pipe_name] = active.get(trace_.pipe_name, 0) + 1
        if span_context is not None:
            _INVOCATIONS[inv_id] = span_context
            if _WAITERS:
                _wake(inv_id, _carrier_of(span_context))

    def _close(self, run: _Run, trace_: _Trace, event: Event, status: str) -> None:
        inv = run.invs.get(event.invocation_id or "")
        if inv is not None:
            self._end_inv(run, inv, status, event.timestamp, event if status == ERROR else None)

    def _end_inv(
        self, run: _Run, inv: _Inv, status: str, timestamp: float, error: Event | None
    ) -> None:
        run.invs.pop(inv.inv_id, None)
        trace_ = inv.trace
        if trace_.by_key.get(inv.key) is inv:
            del trace_.by_key[inv.key]
        if trace_.by_name.get(inv.name) is inv:
            del trace_.by_name[inv.name]
        if inv.kind == "sub":
            for stage, sub in list(run.subs.items()):
                if sub is inv:
                    del run.subs[stage]
        trace_.last_end = timestamp
        span = inv.span
        if span is not None:
            ending = _ENDINGS.get(status)
            if ending is None:
                ending = {INVOCATION_STATUS: status, CICD_TASK_RUN_RESULT: "failure"}
            if inv.tokens:
                ending = {**ending, TOKENS: inv.tokens}
            span.set_attributes(ending)
            if error is not None:
                _record_error(span, error, _error_type(error))
            elif status == "timeout":
                span.set_attribute(ERROR_TYPE, "timeout")
                span.set_status(Status(StatusCode.ERROR, "the run timed out"))
            span.end(end_time=_ns(timestamp))
            _INVOCATIONS.pop(inv.inv_id, None)
            if _WAITERS:
                _wake(inv.inv_id, None)
            if inv.span_context is not None:
                closed = run.closed
                closed[inv.inv_id] = inv.span_context
                if len(closed) > _CLOSED_KEEP:
                    closed.popitem(last=False)
        instruments = run.instruments
        if instruments is not None:
            pipe_name = trace_.pipe_name
            instruments.active[pipe_name] -= 1
            instruments.invocation_duration.record(
                max(0.0, timestamp - inv.start),
                self._attrs(run, pipe_name, inv.name, inv.kind, status),
            )
            if inv.tokens:
                instruments.tokens.add(inv.tokens, self._attrs(run, pipe_name, inv.name))

    def _step_error(self, run: _Run, trace_: _Trace, event: Event) -> None:
        if event.invocation_id is not None:
            self._close(run, trace_, event, ERROR)
            return
        stage = self._own(trace_, event.stage)
        if stage == "startup":
            self._started(trace_, event.timestamp, event)
        elif stage == "shutdown":
            trace_.shutdown_errors.append(event)
        elif stage == "system":  # "No steps registered"
            self._started(trace_, event.timestamp, None)
            if trace_.span is not None:
                _record_error(trace_.span, event, None, status=False)
        elif run.tracer is not None:  # a barrier timeout: the join's failure, no invocation
            span = run.tracer.start_span(
                stage,
                context=trace_.context,
                attributes={STEP_NAME: stage, STEP_KIND: event.node_kind.value, RUN_ID: run.run_id},
                start_time=_ns(event.timestamp),
            )
            span.set_attribute(INVOCATION_STATUS, ERROR)
            _record_error(span, event, _error_type(event))
            span.end(end_time=_ns(event.timestamp))

    def _started(self, trace_: _Trace, timestamp: float, error: Event | None) -> None:
        startup = trace_.startup
        if startup is None:
            return
        trace_.startup = None
        if error is not None:
            _record_error(startup, error, None)
        startup.end(end_time=_ns(timestamp))
        trace_.last_end = timestamp

    def _map_event(self, run: _Run, trace_: _Trace, event: Event) -> None:
        inv = run.invs.get(event.invocation_id or "")
        payload = event.payload if isinstance(event.payload, dict) else {}
        count = payload.get("item_count")
        target = payload.get("target")
        if inv is None:
            return
        started = event.type is EventType.MAP_START
        if started:
            inv.item_count = count if isinstance(count, int) else None
            if isinstance(target, str):
                trace_.maps[target] = inv
        counted = isinstance(count, int) and (started or inv.item_count is None)
        if counted and run.instruments is not None and count:
            run.instruments.map_items.add(count, self._attrs(run, trace_.pipe_name, inv.name))
        if not started:
            if isinstance(target, str) and trace_.maps.get(target) is inv:
                del trace_.maps[target]
            if isinstance(count, int):
                inv.item_count = count
        span = inv.span
        if span is not None:
            attributes: dict[str, Any] = {}
            if isinstance(count, int):
                attributes[MAP_ITEM_COUNT] = count
                span.set_attribute(MAP_ITEM_COUNT, count)
            if isinstance(target, str):
                attributes["justpipe.map.target"] = target
            name = "justpipe.map.start" if started else "justpipe.map.complete"
            span.add_event(name, attributes, timestamp=_ns(event.timestamp))

    def _run_event(self, trace_: _Trace, event: Event) -> None:
        if event.type is not EventType.BARRIER_WAIT and event.type is not EventType.BARRIER_RELEASE:
            trace_.last_end = event.timestamp
        span = trace_.span
        if span is None:
            return
        attributes: dict[str, Any] = {STAGE: self._own(trace_, event.stage)}
        payload = event.payload
        if isinstance(payload, dict):
            for name, value in payload.items():
                if isinstance(value, (bool, int, float, str)):
                    attributes[f"justpipe.{event.type.value}.{name}"] = value
        elif isinstance(payload, str):
            attributes["justpipe.message"] = payload
        span.add_event(f"justpipe.{event.type.value}", attributes, timestamp=_ns(event.timestamp))

    # ------------------------------------------------------------------ run end

    def _finish_child(self, run: _Run, trace_: _Trace, event: Event) -> None:
        payload = event.payload
        data = payload if isinstance(payload, PipelineEndData) else None
        status = data.status if data is not None else None
        self._close_trace(run, trace_, data, status, None, event.timestamp)
        run.children.pop(trace_.run_id, None)
        run.finished_children.add(trace_.run_id)

    def _finish(
        self,
        run: _Run,
        data: PipelineEndData | None,
        status: PipelineTerminalStatus | None,
        error: str | None,
        timestamp: float | None,
    ) -> None:
        run.done = True
        end = timestamp if timestamp is not None else time.time()
        for child in list(run.children.values()):
            self._close_trace(run, child, None, status, None, end)
        run.children.clear()
        self._close_trace(run, run.root, data, status, error, end)
        span_context = run.span_context
        if span_context is not None:
            _FINISHED_RUNS[run.run_id] = span_context
            if len(_FINISHED_RUNS) > _RUNS_KEEP:
                _FINISHED_RUNS.popitem(last=False)

    def _close_trace(
        self,
        run: _Run,
        trace_: _Trace,
        data: PipelineEndData | None,
        status: PipelineTerminalStatus | None,
        error: str | None,
        end: float,
    ) -> None:
        status = status or PipelineTerminalStatus.SUCCESS
        if trace_.timed_out and status is PipelineTerminalStatus.SUCCESS:
            status = PipelineTerminalStatus.TIMEOUT
        cut = _CUT_STATUS.get(status, INTERRUPTED)
        for inv in [inv for inv in run.invs.values() if inv.trace is trace_]:
            self._end_inv(run, inv, cut, end, None)
        self._started(trace_, end, None)
        tracer = run.tracer
        if tracer is not None and trace_.context is not None:
            begin = trace_.last_end if trace_.last_end is not None else trace_.start
            shutdown = tracer.start_span(
                "shutdown",
                context=trace_.context,
                attributes={PHASE: "shutdown", RUN_ID: trace_.run_id},
                start_time=_ns(min(begin, end)),
            )
            for failure in trace_.shutdown_errors:
                _record_error(shutdown, failure, None)
            shutdown.end(end_time=_ns(end))
        suspended = trace_.suspend_reason is not None
        span = trace_.span
        if span is not None:
            attributes: dict[str, Any] = {
                RUN_STATUS: status.value,
                CICD_PIPELINE_RESULT: _CICD_RESULT[status],
                RUN_SUSPENDED: suspended,
            }
            if trace_.suspend_reason is not None:
                attributes[SUSPEND_REASON] = trace_.suspend_reason
            if data is not None:
                if data.reason is not None:
                    attributes[FAILURE_REASON] = data.reason.value
                if status is PipelineTerminalStatus.FAILED:
                    attributes[FAILURE_KIND] = data.failure_kind.value
                    attributes[FAILURE_SOURCE] = data.failure_source.value
                    if data.failed_step is not None:
                        attributes[FAILED_STEP] = data.failed_step
                error = error if error is not None else data.error
            span.set_attributes(attributes)
            if status is PipelineTerminalStatus.FAILED:
                reason = data.reason.value if data is not None and data.reason else _OTHER
                span.set_attribute(ERROR_TYPE, reason)
                span.set_status(Status(StatusCode.ERROR, error))
            elif status is PipelineTerminalStatus.TIMEOUT:
                span.set_attribute(ERROR_TYPE, "timeout")
                span.set_status(Status(StatusCode.ERROR, "the run timed out"))
            span.end(end_time=_ns(end))
        if trace_ is not run.root:
            _count(_TRACED_RUNS, trace_.run_id, -1)
            if run.tracer is not None:
                _count(_SPANNED_RUNS, trace_.run_id, -1)
            for inv_id in [i for i in _WAITERS if i.startswith(trace_.run_id)]:
                _wake(inv_id, None)
        instruments = run.instruments
        if instruments is not None:
            attributes = {
                PIPELINE_NAME: trace_.pipe_name,
                RUN_STATUS: status.value,
                RUN_SUSPENDED: suspended,
            }
            instruments.runs.add(1, attributes)
            duration = data.duration_s if data is not None else max(0.0, end - trace_.start)
            instruments.run_duration.record(duration, attributes)


_CUT_STATUS = {
    PipelineTerminalStatus.TIMEOUT: "timeout",
    PipelineTerminalStatus.CANCELLED: CANCELLED,
    PipelineTerminalStatus.CLIENT_CLOSED: "client_closed",
}


def _record_error(span: Span, event: Event, error_type: str | None, *, status: bool = True) -> None:
    """Status ERROR with ``error.type``, and the exception as an ``exception`` span event."""
    message = str(event.payload)
    meta = event.meta
    framework = meta.get("framework") if isinstance(meta, dict) else None
    exc = framework.get("exception") if isinstance(framework, dict) else None
    if status:
        span.set_attribute(ERROR_TYPE, error_type or _OTHER)
        span.set_status(Status(StatusCode.ERROR, message))
    if isinstance(exc, BaseException):
        span.record_exception(exc, timestamp=_ns(event.timestamp))
        return
    attributes = {EXCEPTION_MESSAGE: message}
    if error_type is not None:
        attributes[EXCEPTION_TYPE] = error_type
    stacktrace = framework.get("traceback") if isinstance(framework, dict) else None
    if isinstance(stacktrace, str) and stacktrace:  # the kernel's formatted traceback
        attributes[EXCEPTION_STACKTRACE] = stacktrace
    span.add_event("exception", attributes, timestamp=_ns(event.timestamp))


# offloaded steps (justpipe.executors) ship their invocation's carrier to the worker
register_carrier_provider(invocation_carrier)
