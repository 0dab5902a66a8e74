"""OpenTelemetryObserver against the real OpenTelemetry SDK (in-memory exporter and reader).

Every run is a trace: a run span, a span per invocation (map workers under their map,
retries as sibling attempts linked to the previous one, sub-pipelines under their sub
step), the justpipe.* attributes, error statuses, and the justpipe.* metrics. Plus the
W3C propagation helpers, across a real process boundary.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from extras import require
from helpers import collect, drain, end_data, run_with_watchdog
from justpipe import Pipe
from justpipe.types import EventType, PipelineTerminalStatus, Retry, Skip, Stop, Suspend

require("opentelemetry.sdk", "otel")

from opentelemetry import trace  # noqa: E402
from opentelemetry.metrics import NoOpMeterProvider  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode  # noqa: E402

from justpipe.observability.otel import (  # noqa: E402
    OpenTelemetryObserver,
    attach_context,
    continue_trace,
    current_invocation_carrier,
    inject_context,
    invocation_carrier,
    run_carrier,
    worker_trace_hook,
)


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    observer: OpenTelemetryObserver

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.tree()}"
        return found[0]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        span_id = _ctx(parent).span_id
        kids = [s for s in self.spans() if s.parent is not None and s.parent.span_id == span_id]
        return sorted(kids, key=lambda s: s.start_time or 0)

    def tree(self, span: ReadableSpan | None = None) -> Any:
        """(name, [children...]) from the root run span (or `span`)."""
        if span is None:
            roots = [s for s in self.spans() if s.parent is None]
            return [self.tree(root) for root in roots]
        return (span.name, [self.tree(kid) for kid in self.children(span)])

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = found.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        value: Any = getattr(point, "value", None)
                        if isinstance(point, HistogramDataPoint):
                            value = (point.count, point.sum)
                        points.append((dict(point.attributes or {}), value))
        return found

    def metric(self, name: str, **attributes: Any) -> Any:
        wanted = {f"justpipe.{k.replace('__', '.')}": v for k, v in attributes.items()}
        values = [
            value
            for attrs, value in self.metrics().get(name, [])
            if all(attrs.get(k) == v for k, v in wanted.items())
        ]
        assert len(values) == 1, f"{name} {wanted}: {self.metrics().get(name)}"
        return values[0]


def _ctx(span: ReadableSpan) -> Any:
    context = span.context
    assert context is not None
    return context


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    observer = OpenTelemetryObserver(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield Otel(exporter, reader, tracer_provider, observer)
    meter_provider.shutdown()
    tracer_provider.shutdown()


def names(spans: list[ReadableSpan]) -> list[str]:
    return [s.name for s in spans]


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


def steps_only(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if attr(s, "justpipe.phase") is None]


# --------------------------------------------------------------------------- span tree shape


async def test_chain_is_one_trace_with_a_span_per_invocation(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="chain")

    @pipe.step(to="b")
    async def a(state: dict[str, Any]) -> None:
        pass

    @pipe.step
    async def b(state: dict[str, Any]) -> None:
        pass

    otel.observer.instrument(pipe)
    events = await collect(pipe)
    run_id = events[-1].run_id

    run = otel.one("RUN chain")
    assert run.parent is None
    assert otel.tree() == [("RUN chain", [("startup", []), ("a", []), ("b", []), ("shutdown", [])])]
    assert {_ctx(s).trace_id for s in otel.spans()} == {_ctx(run).trace_id}
    assert attr(run, "justpipe.run_id") == run_id
    assert attr(run, "justpipe.pipeline.name") == "chain"
    assert attr(run, "justpipe.pipeline.hash") == pipe.describe()["pipeline_hash"]
    assert attr(run, "justpipe.run.status") == "success"
    assert attr(run, "cicd.pipeline.result") == "success"
    assert run.status.status_code is StatusCode.UNSET
    starts = {e.stage: e for e in events if e.type is EventType.STEP_START}
    span_a = otel.one("a")
    assert attr(span_a, "justpipe.invocation_id") == starts["a"].invocation_id
    assert attr(span_a, "justpipe.step.kind") == "step"
    assert attr(span_a, "justpipe.attempt") == 1
    assert attr(span_a, "justpipe.invocation.status") == "success"
    # span times are the events' own timestamps
    assert span_a.start_time == int(starts["a"].timestamp * 1e9)


async def test_parallel_branches_are_siblings_under_the_run(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="par")

    @pipe.step(to=["left", "right"])
    async def fork(state: dict[str, Any]) -> None:
        pass

    @pipe.step(to="join")
    async def left(state: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    @pipe.step(to="join")
    async def right(state: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    @pipe.step
    async def join(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    await collect(pipe)
    run = otel.one("RUN par")
    under_run = names(steps_only(otel.children(run)))
    assert sorted(under_run) == ["fork", "join", "left", "right"]
    assert otel.children(otel.one("left")) == []


async def test_map_workers_are_indexed_siblings_under_the_map_span(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="fan")

    @pipe.map(each="work", to="after")
    async def spread(state: dict[str, Any]) -> list[int]:
        return [10, 20, 30, 40]

    @pipe.step
    async def work(state: dict[str, Any], item: int) -> None:
        await asyncio.sleep(0)

    @pipe.step
    async def after(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    await collect(pipe)
    spread_span = otel.one("spread")
    workers = otel.children(spread_span)
    assert names(workers) == ["work"] * 4
    assert sorted(attr(w, "justpipe.map.index") for w in workers) == [0, 1, 2, 3]
    assert {attr(w, "justpipe.map.item_count") for w in workers} == {4}
    assert attr(spread_span, "justpipe.step.kind") == "map"
    assert attr(spread_span, "justpipe.map.item_count") == 4
    events = [e.name for e in spread_span.events]
    assert events == ["justpipe.map.start", "justpipe.map.complete"]
    assert spread_span.events[0].attributes == {
        "justpipe.map.item_count": 4,
        "justpipe.map.target": "work",
    }
    assert otel.one("after").parent == spread_span.parent  # the run span
    assert otel.metric("justpipe.map.items", step__name="spread") == 4


async def test_switch_target_links_to_the_switch_that_chose_it(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="sw")

    @pipe.switch(to={"x": "left", "y": "right"})
    async def route(state: dict[str, Any]) -> str:
        return "y"

    @pipe.step
    async def left(state: dict[str, Any]) -> None:
        pass

    @pipe.step
    async def right(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    await collect(pipe)
    run = otel.one("RUN sw")
    assert names(steps_only(otel.children(run))) == ["route", "right"]
    route_span, right_span = otel.one("route"), otel.one("right")
    assert attr(route_span, "justpipe.step.kind") == "switch"
    assert attr(right_span, "justpipe.parent_invocation_id") == attr(
        route_span, "justpipe.invocation_id"
    )
    assert [link.context.span_id for link in right_span.links] == [_ctx(route_span).span_id]
    assert otel.named("left") == []


def _sub_pipes(child_observer: OpenTelemetryObserver | None) -> Pipe[dict[str, Any], None]:
    child: Pipe[dict[str, Any], None] = Pipe(name="child")

    @child.step(to="c2")
    async def c1(state: dict[str, Any]) -> None:
        pass

    @child.step
    async def c2(state: dict[str, Any]) -> None:
        pass

    if child_observer is not None:
        child.add_observer(child_observer)
    parent: Pipe[dict[str, Any], None] = Pipe(name="parent")

    @parent.sub(pipeline=child, to="tail")
    async def nest(state: dict[str, Any]) -> dict[str, Any]:
        return state

    @parent.step
    async def tail(state: dict[str, Any]) -> None:
        pass

    return parent


@pytest.mark.parametrize("child_observed", [False, True], ids=["parent-only", "both"])
async def test_sub_pipeline_run_is_a_child_of_its_sub_step(
    otel: Otel, child_observed: bool
) -> None:
    parent = _sub_pipes(otel.observer if child_observed else None)
    otel.observer.instrument(parent)
    events = await collect(parent)
    child_run_id = next(e.origin_run_id for e in events if e.stage == "nest:system")

    assert otel.tree() == [
        (
            "RUN parent",
            [
                ("startup", []),
                ("nest", [("RUN child", [("c1", []), ("c2", []), ("shutdown", [])])]),
                ("tail", []),
                ("shutdown", []),
            ],
        )
    ]
    child_run = otel.one("RUN child")
    assert attr(child_run, "justpipe.run_id") == child_run_id
    assert attr(child_run, "justpipe.parent_run_id") == events[-1].run_id
    assert attr(child_run, "justpipe.run.status") == "success"
    c1 = otel.one("c1")
    assert attr(c1, "justpipe.origin_run_id") == child_run_id
    assert attr(c1, "justpipe.stage") == "nest:c1"
    # the child run is counted once, whoever observes it
    assert otel.metric("justpipe.runs", pipeline__name="child") == 1
    assert otel.metric("justpipe.runs", pipeline__name="parent") == 1


async def test_nested_sub_pipelines_keep_maps_and_retries_in_shape(otel: Otel) -> None:
    leaf: Pipe[dict[str, Any], None] = Pipe(name="leaf")
    failures: list[int] = []

    def again(error: Exception) -> Retry | None:
        failures.append(1)
        return Retry() if len(failures) == 1 else None

    @leaf.map(each="piece")
    async def split(state: dict[str, Any]) -> list[int]:
        return [0, 1]

    @leaf.step(on_error=again)
    async def piece(state: dict[str, Any], item: int) -> None:
        if item == 0 and not failures:
            raise ValueError("first try")

    mid: Pipe[dict[str, Any], None] = Pipe(name="mid")

    @mid.sub(pipeline=leaf, to="last")
    async def to_leaf(state: dict[str, Any]) -> dict[str, Any]:
        return state

    @mid.step
    async def last(state: dict[str, Any]) -> None:
        raise RuntimeError("mid fails")

    top: Pipe[dict[str, Any], None] = Pipe(name="top")

    @top.sub(pipeline=mid)
    async def to_mid(state: dict[str, Any]) -> dict[str, Any]:
        return state

    otel.observer.instrument(top)
    leaf.add_observer(otel.observer)
    await collect(top)
    pieces = sorted(
        otel.children(otel.one("split")),
        key=lambda s: (attr(s, "justpipe.map.index"), attr(s, "justpipe.attempt")),
    )
    assert [
        (attr(s, "justpipe.map.index"), attr(s, "justpipe.invocation.status")) for s in pieces
    ] == [(0, "retried"), (0, "success"), (1, "success")]
    assert [link.context.span_id for link in pieces[1].links] == [_ctx(pieces[0]).span_id]
    leaf_run, mid_run = otel.one("RUN leaf"), otel.one("RUN mid")
    assert leaf_run.parent is not None and mid_run.parent is not None
    assert leaf_run.parent.span_id == _ctx(otel.one("to_leaf")).span_id
    assert mid_run.parent.span_id == _ctx(otel.one("to_mid")).span_id
    assert attr(leaf_run, "justpipe.run.status") == "success"
    assert attr(mid_run, "justpipe.run.status") == "failed"
    assert mid_run.status.status_code is StatusCode.ERROR
    assert otel.one("last").status.status_code is StatusCode.ERROR
    assert attr(otel.one("last"), "justpipe.stage") == "to_mid:last"
    assert otel.metric("justpipe.runs", pipeline__name="leaf") == 1


async def test_a_child_observed_alone_traces_itself(otel: Otel) -> None:
    parent = _sub_pipes(otel.observer)  # only the child pipe has the observer
    await collect(parent)
    assert [s.name for s in otel.spans() if s.parent is None] == ["RUN child"]
    assert names(steps_only(otel.children(otel.one("RUN child")))) == ["c1", "c2"]


async def test_a_run_started_by_step_code_is_traced_by_its_own_observer(otel: Otel) -> None:
    inner: Pipe[dict[str, Any], None] = Pipe(name="inner")

    @inner.step
    async def deep(state: dict[str, Any]) -> None:
        pass

    inner.add_observer(otel.observer)
    outer: Pipe[dict[str, Any], None] = Pipe(name="outer")

    @outer.step
    async def drive(state: dict[str, Any]) -> None:
        await collect(inner)

    outer.add_observer(otel.observer)
    await collect(outer)
    assert len(otel.named("RUN inner")) == 1
    assert names(steps_only(otel.children(otel.one("RUN inner")))) == ["deep"]
    assert otel.metric("justpipe.runs", pipeline__name="inner") == 1


# --------------------------------------------------------------------------- retries and errors


async def test_each_retry_attempt_is_a_sibling_span_linked_to_the_previous(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="retry")
    calls: list[int] = []

    def again(error: Exception) -> Retry | None:
        return Retry() if len(calls) < 3 else None

    @pipe.step(on_error=again)
    async def flaky(state: dict[str, Any]) -> None:
        calls.append(1)
        raise ValueError(f"attempt {len(calls)}")

    pipe.add_observer(otel.observer)
    events = await collect(pipe)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    attempts = sorted(otel.named("flaky"), key=lambda s: attr(s, "justpipe.attempt"))
    assert [attr(s, "justpipe.attempt") for s in attempts] == [1, 2, 3]
    assert [attr(s, "justpipe.invocation.status") for s in attempts] == [
        "retried",
        "retried",
        "success",
    ]
    run = otel.one("RUN retry")
    assert all(s.parent is not None and s.parent.span_id == _ctx(run).span_id for s in attempts)
    assert attempts[0].links == ()
    for previous, current in itertools.pairwise(attempts):
        assert [link.context.span_id for link in current.links] == [_ctx(previous).span_id]
    # handled by on_error: not failed spans
    assert {s.status.status_code for s in attempts} == {StatusCode.UNSET}
    assert otel.metric("justpipe.retries", step__name="flaky") == 2


async def test_failed_invocation_and_run_are_errors_with_the_exception(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="fails")

    @pipe.step
    async def broken(state: dict[str, Any]) -> None:
        raise KeyError("missing thing")

    pipe.add_observer(otel.observer)
    events = await collect(pipe)
    assert end_data(events).status is PipelineTerminalStatus.FAILED
    span = otel.one("broken")
    assert span.status.status_code is StatusCode.ERROR
    assert attr(span, "error.type") == "KeyError"  # from the STEP_ERROR's framework meta
    assert attr(span, "justpipe.invocation.status") == "error"
    assert attr(span, "cicd.pipeline.task.run.result") == "failure"
    (exception,) = span.events
    assert exception.name == "exception"
    attributes = dict(exception.attributes or {})
    stacktrace = attributes.pop("exception.stacktrace")
    assert attributes == {"exception.message": "'missing thing'", "exception.type": "KeyError"}
    assert "in broken" in stacktrace and "KeyError: 'missing thing'" in stacktrace
    run = otel.one("RUN fails")
    assert run.status.status_code is StatusCode.ERROR
    assert attr(run, "error.type") == "step_error"
    assert attr(run, "justpipe.run.status") == "failed"
    assert attr(run, "justpipe.failure.kind") == "step"
    assert attr(run, "justpipe.failure.source") == "user_code"
    assert attr(run, "justpipe.failed_step") == "broken"
    assert attr(run, "cicd.pipeline.result") == "failure"
    assert otel.metric("justpipe.runs", run__status="failed") == 1
    count, _ = otel.metric("justpipe.invocation.duration", invocation__status="error")
    assert count == 1


async def test_step_timeout_is_a_timeout_error(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="slow")

    @pipe.step(timeout=0.01)
    async def sleepy(state: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    pipe.add_observer(otel.observer)
    await collect(pipe)
    span = otel.one("sleepy")
    assert span.status.status_code is StatusCode.ERROR
    assert attr(span, "error.type") == "TimeoutError"
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"] == "TimeoutError"


@pytest.mark.parametrize("handler_result", [None, Skip()], ids=["continue", "skip"])
async def test_errors_handled_by_on_error_are_not_failed_spans(
    otel: Otel, handler_result: Skip | None
) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="handled")

    @pipe.step(on_error=lambda error: handler_result)
    async def shaky(state: dict[str, Any]) -> None:
        raise RuntimeError("handled")

    pipe.add_observer(otel.observer)
    events = await collect(pipe)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    span = otel.one("shaky")
    assert span.status.status_code is StatusCode.UNSET
    assert attr(span, "error.type") is None
    assert attr(otel.one("RUN handled"), "justpipe.run.status") == "success"


async def test_startup_and_shutdown_hook_failures_error_their_phase_spans(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="hooks")

    @pipe.on_startup
    async def boot(state: dict[str, Any]) -> None:
        raise RuntimeError("no database")

    @pipe.on_shutdown
    async def down(state: dict[str, Any]) -> None:
        raise RuntimeError("cannot close")

    @pipe.step
    async def never(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    await collect(pipe)
    startup, shutdown = otel.one("startup"), otel.one("shutdown")
    assert startup.status.status_code is StatusCode.ERROR
    assert startup.events[0].attributes == {"exception.message": "no database"}
    assert shutdown.status.status_code is StatusCode.ERROR
    assert shutdown.events[0].attributes == {"exception.message": "cannot close"}
    run = otel.one("RUN hooks")
    assert attr(run, "justpipe.failure.kind") == "startup"
    assert attr(run, "error.type") == "startup_hook_error"
    assert otel.named("never") == []


# --------------------------------------------------------------------------- terminal statuses


async def test_run_timeout_is_distinguishable(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="late")

    @pipe.step
    async def stuck(state: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    pipe.add_observer(otel.observer)
    events = await collect(pipe, timeout=0.05)
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT
    run = otel.one("RUN late")
    assert attr(run, "justpipe.run.status") == "timeout"
    assert attr(run, "cicd.pipeline.result") == "timeout"
    assert attr(run, "error.type") == "timeout"
    assert run.status.status_code is StatusCode.ERROR
    assert "justpipe.timeout" in [e.name for e in run.events]
    stuck_span = otel.one("stuck")
    assert attr(stuck_span, "justpipe.invocation.status") == "timeout"


async def test_cancelled_run_is_distinguishable_and_not_an_error(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="cancel")

    @pipe.step
    async def halt(state: dict[str, Any], cancel: Any) -> None:
        cancel.cancel("enough")
        await cancel.checkpoint()

    pipe.add_observer(otel.observer)
    events = await collect(pipe)
    assert end_data(events).status is PipelineTerminalStatus.CANCELLED
    run = otel.one("RUN cancel")
    assert attr(run, "justpipe.run.status") == "cancelled"
    assert attr(run, "justpipe.failure.reason") == "cancelled"
    assert run.status.status_code is StatusCode.UNSET
    assert attr(otel.one("halt"), "justpipe.invocation.status") == "cancelled"


async def test_client_close_is_distinguishable(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="closed")
    gate = asyncio.Event()

    @pipe.step
    async def waits(state: dict[str, Any]) -> None:
        await gate.wait()

    pipe.add_observer(otel.observer)

    async def consume() -> None:
        stream = pipe.run({})
        async for event in stream:
            if event.type is EventType.STEP_START:
                break
        await stream.aclose()

    await run_with_watchdog(consume())
    run = otel.one("RUN closed")
    assert attr(run, "justpipe.run.status") == "client_closed"
    assert attr(run, "cicd.pipeline.result") == "cancellation"
    assert run.status.status_code is StatusCode.UNSET
    assert attr(otel.one("waits"), "justpipe.invocation.status") == "client_closed"
    assert otel.metric("justpipe.invocations.active", pipeline__name="closed") == 0


async def test_cancelled_consumer_still_ends_the_trace(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="abandoned")
    started = asyncio.Event()

    @pipe.step
    async def forever(state: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    pipe.add_observer(otel.observer)

    async def consume() -> None:
        async for _event in pipe.run({}):
            pass

    task = asyncio.create_task(consume())
    await run_with_watchdog(started.wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run_with_watchdog(task)
    run = otel.one("RUN abandoned")
    assert attr(run, "justpipe.run.status") == "cancelled"
    assert attr(otel.one("forever"), "justpipe.invocation.status") == "cancelled"
    assert otel.observer._runs == {}


async def test_internal_error_fails_the_run_span(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="crash")

    def breaks(event: Any) -> Any:
        return None if event.type is EventType.STEP_END else event

    pipe.add_event_hook(breaks)

    @pipe.step
    async def a(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    with pytest.raises(ExceptionGroup):
        await collect(pipe)
    run = otel.one("RUN crash")
    assert run.status.status_code is StatusCode.ERROR
    assert attr(run, "error.type") == "internal_error"
    assert attr(run, "justpipe.failure.kind") == "infra"
    assert attr(otel.one("a"), "justpipe.invocation.status") == "interrupted"
    assert otel.observer._runs == {}


async def test_suspended_run_is_distinguishable(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="pause")

    @pipe.step
    async def ask(state: dict[str, Any]) -> Suspend:
        return Suspend("waiting for approval")

    pipe.add_observer(otel.observer)
    await collect(pipe)
    run = otel.one("RUN pause")
    assert attr(run, "justpipe.run.status") == "success"
    assert attr(run, "justpipe.run.suspended") is True
    assert attr(run, "justpipe.suspend.reason") == "waiting for approval"
    assert [e.name for e in otel.one("ask").events] == ["justpipe.suspend"]
    assert otel.metric("justpipe.runs", run__suspended=True) == 1


async def test_a_resumed_durable_run_links_to_its_previous_segment(otel: Otel) -> None:
    from justpipe.durable import InMemoryCheckpointStore

    pipe: Pipe[dict[str, Any], None] = Pipe(name="hitl", durable=InMemoryCheckpointStore())

    @pipe.step(to="act")
    async def ask(state: dict[str, Any]) -> Suspend:
        return Suspend("waiting for approval")

    @pipe.step
    async def act(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    first = await collect(pipe)
    await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value="ok")))
    segment_one, segment_two = otel.named("RUN hitl")
    assert attr(segment_one, "justpipe.run.suspended") is True
    assert attr(segment_one, "justpipe.run.segment") is None
    assert attr(segment_two, "justpipe.run.segment") == 2
    assert attr(segment_two, "justpipe.run_id") == first[-1].run_id
    # its own trace, linked to the segment it continues (not one trace over hours)
    assert _ctx(segment_two).trace_id != _ctx(segment_one).trace_id
    (link,) = segment_two.links
    assert link.context.span_id == _ctx(segment_one).span_id
    assert [s.name for s in otel.children(segment_two) if s.name == "act"] == ["act"]


async def test_stop_is_a_plain_success(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="stop")

    @pipe.step(to="unreached")
    async def first(state: dict[str, Any]) -> type[Stop]:
        return Stop

    @pipe.step
    async def unreached(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    await collect(pipe)
    assert attr(otel.one("RUN stop"), "justpipe.run.suspended") is False
    assert otel.named("unreached") == []


async def test_barrier_timeout_is_an_error_span_of_the_join(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="late-join")
    released = asyncio.Event()

    @pipe.step(to=["quick", "held"])
    async def start(state: dict[str, Any]) -> None:
        pass

    @pipe.step(to="join")
    async def quick(state: dict[str, Any]) -> None:
        pass

    @pipe.step(to="join")
    async def held(state: dict[str, Any]) -> None:
        await released.wait()  # until the join has timed out

    @pipe.step(barrier_timeout=0.01)
    async def join(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)

    async def consume() -> None:
        async for event in pipe.run({}):
            if event.type is EventType.STEP_ERROR:
                released.set()

    await run_with_watchdog(consume())
    span = otel.one("join")
    assert span.status.status_code is StatusCode.ERROR
    assert attr(span, "error.type") == "TimeoutError"
    assert attr(span, "justpipe.invocation.status") == "error"
    assert attr(otel.one("RUN late-join"), "justpipe.failed_step") == "join"


async def test_two_observers_of_one_run_both_record_it_live(otel: Otel) -> None:
    second = InMemorySpanExporter()
    other_provider = TracerProvider()
    other_provider.add_span_processor(SimpleSpanProcessor(second))
    pipe: Pipe[dict[str, Any], None] = Pipe(name="twice")

    @pipe.step(to="b")
    async def a(state: dict[str, Any]) -> None:
        pass

    @pipe.step
    async def b(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    pipe.add_observer(OpenTelemetryObserver(tracer_provider=other_provider))
    seen_during_run: list[list[str]] = []
    async for event in pipe.run({}):
        if event.type is EventType.STEP_END and event.stage == "a":
            seen_during_run.append([s.name for s in second.get_finished_spans()])
    assert seen_during_run == [["startup", "a"]]  # not held back to the end
    assert sorted(s.name for s in second.get_finished_spans()) == sorted(
        s.name for s in otel.spans()
    )


async def test_a_sub_pipeline_suspend_marks_its_parent_suspended(otel: Otel) -> None:
    child: Pipe[dict[str, Any], None] = Pipe(name="asks")

    @child.step
    async def approve(state: dict[str, Any]) -> Suspend:
        return Suspend("needs a human")

    parent: Pipe[dict[str, Any], None] = Pipe(name="flow")

    @parent.sub(pipeline=child)
    async def review(state: dict[str, Any]) -> dict[str, Any]:
        return state

    parent.add_observer(otel.observer)
    await collect(parent)
    for name in ("RUN flow", "RUN review"):  # the child pipe's name is unknown: the step's
        assert attr(otel.one(name), "justpipe.run.suspended") is True
        assert attr(otel.one(name), "justpipe.suspend.reason") == "needs a human"


async def test_unknown_route_and_empty_map_still_make_well_formed_spans(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="odd")

    @pipe.map(each="item", to="route")
    async def nothing(state: dict[str, Any]) -> list[int]:
        return []

    @pipe.step
    async def item(state: dict[str, Any], value: int) -> None:
        pass

    @pipe.step
    async def route(state: dict[str, Any]) -> str:
        return "nowhere"

    pipe.add_observer(otel.observer)
    events = await collect(pipe)
    assert end_data(events).status is PipelineTerminalStatus.FAILED
    empty = otel.one("nothing")
    assert otel.children(empty) == []
    assert attr(empty, "justpipe.map.item_count") == 0
    missing = otel.one("nowhere")
    assert missing.status.status_code is StatusCode.ERROR
    assert [link.context.span_id for link in missing.links] == [_ctx(otel.one("route")).span_id]
    assert all(s.end_time is not None for s in otel.spans())


# --------------------------------------------------------------------------- events and tokens


async def test_tokens_are_counted_not_spanned(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="stream")

    @pipe.step
    async def talk(state: dict[str, Any]) -> Any:
        for word in ("a", "b", "c"):
            yield word

    pipe.add_observer(otel.observer)
    await collect(pipe)
    span = otel.one("talk")
    assert attr(span, "justpipe.tokens") == 3
    assert span.events == ()
    assert otel.metric("justpipe.tokens", step__name="talk") == 3


async def test_barrier_wait_and_release_are_run_span_events(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="join")

    @pipe.step(to=["x", "y"])
    async def split(state: dict[str, Any]) -> None:
        pass

    @pipe.step(to="meet")
    async def x(state: dict[str, Any]) -> None:
        pass

    @pipe.step(to="meet")
    async def y(state: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    @pipe.step(barrier_timeout=5.0)
    async def meet(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    await collect(pipe)
    run = otel.one("RUN join")
    barrier = [e for e in run.events if e.name.startswith("justpipe.barrier")]
    assert [e.name for e in barrier] == ["justpipe.barrier_wait", "justpipe.barrier_release"]
    assert barrier[0].attributes is not None
    assert barrier[0].attributes["justpipe.stage"] == "meet"
    assert barrier[0].attributes["justpipe.barrier_wait.expected_count"] == 2


# --------------------------------------------------------------------------- context


async def test_run_span_is_a_child_of_the_callers_span(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="inside")

    @pipe.step
    async def only(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    tracer = otel.tracer_provider.get_tracer("web")
    with tracer.start_as_current_span("GET /things") as request:
        await collect(pipe)
    run = otel.one("RUN inside")
    assert run.parent is not None
    assert run.parent.span_id == request.get_span_context().span_id
    assert _ctx(run).trace_id == request.get_span_context().trace_id


async def test_continued_run_links_to_the_earlier_run(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="durable")

    @pipe.step(to="second")
    async def first(state: dict[str, Any]) -> Suspend:
        return Suspend("later")

    @pipe.step
    async def second(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    events = await collect(pipe)
    carrier = run_carrier(events[-1].run_id or "")
    assert carrier is not None and "traceparent" in carrier
    with continue_trace(carrier):
        await collect(pipe, start="second")
    earlier, later = sorted(otel.named("RUN durable"), key=lambda s: s.start_time or 0)
    assert _ctx(later).trace_id != _ctx(earlier).trace_id
    assert [link.context.span_id for link in later.links] == [_ctx(earlier).span_id]


async def test_continued_from_takes_the_link_from_the_run(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    observer = OpenTelemetryObserver(
        tracer_provider=otel.tracer_provider,
        continued_from=lambda state, context, meta: state.get("trace"),
    )
    pipe: Pipe[dict[str, Any], None] = Pipe(name="resumable")

    @pipe.step
    async def work(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(observer)
    first = await collect(pipe, {})
    await collect(pipe, {"trace": run_carrier(first[-1].run_id or "")})
    await collect(pipe, {"trace": "not a carrier"})
    earlier, later, broken = sorted(otel.named("RUN resumable"), key=lambda s: s.start_time or 0)
    assert [link.context.span_id for link in later.links] == [_ctx(earlier).span_id]
    assert broken.links == ()  # traced all the same, the bad carrier logged
    assert "continued_from failed" in caplog.text
    with pytest.raises(TypeError, match="continued_from=lambda state, context, meta"):
        OpenTelemetryObserver(continued_from="state.trace")  # type: ignore[arg-type]


async def test_invocation_carrier_is_the_live_invocation_span(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="carrier")
    seen: dict[str, Any] = {}

    @pipe.step
    async def inside(state: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    pipe.add_observer(otel.observer)
    async for event in pipe.run({}):
        if event.type is EventType.STEP_START:
            seen["sync"] = current_invocation_carrier(event.invocation_id or "")
            seen["async"] = await invocation_carrier(event.invocation_id or "")
            seen["id"] = event.invocation_id
    assert current_invocation_carrier(seen["id"]) is None  # ended with its span
    span_id = _ctx(otel.one("inside")).span_id
    assert seen["sync"] == seen["async"]
    assert seen["sync"]["traceparent"].split("-")[2] == f"{span_id:016x}"
    assert await invocation_carrier("not-a-run:1") is None


async def test_invocation_carrier_waits_for_the_span_to_open(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="early")

    @pipe.step
    async def first(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    waiting: list[asyncio.Task[dict[str, str] | None]] = []
    async for event in pipe.run({}):
        if event.type is EventType.START:  # before the first invocation is published
            first_id = f"{event.run_id}:1"
            assert current_invocation_carrier(first_id) is None
            waiting.append(asyncio.create_task(invocation_carrier(first_id)))
            await asyncio.sleep(0)  # the waiter registers
            assert not waiting[0].done()
    carrier = await run_with_watchdog(waiting[0])
    assert carrier is not None
    span_id = _ctx(otel.one("first")).span_id
    assert carrier["traceparent"].split("-")[2] == f"{span_id:016x}"


def remote_work(carrier: dict[str, str]) -> list[tuple[str, int, int, int | None]]:
    """Runs in a worker process: a span under the carried context, exported in the child."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("worker")
    with attach_context(carrier), tracer.start_as_current_span("remote part"):
        inner = inject_context()
    assert "traceparent" in inner
    provider.shutdown()
    return [
        (
            s.name,
            _ctx(s).trace_id,
            _ctx(s).span_id,
            s.parent.span_id if s.parent is not None else None,
        )
        for s in exporter.get_finished_spans()
    ]


async def test_context_crosses_a_process_boundary_to_the_invocation_span(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="remote")
    carriers: asyncio.Queue[dict[str, str] | None] = asyncio.Queue()
    results: list[Any] = []

    @pipe.step
    async def offload(state: dict[str, Any]) -> None:
        carrier = await carriers.get()  # what an executor gets for its invocation
        assert carrier is not None
        loop = asyncio.get_running_loop()
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            results.extend(await loop.run_in_executor(pool, remote_work, carrier))

    pipe.add_observer(otel.observer)

    async def consume() -> None:
        async for event in pipe.run({}):
            if event.type is EventType.STEP_START:
                carriers.put_nowait(current_invocation_carrier(event.invocation_id or ""))

    await run_with_watchdog(consume(), timeout=60.0)
    ((name, trace_id, span_id, parent_id),) = results
    invocation = otel.one("offload")
    assert name == "remote part"
    assert trace_id == _ctx(invocation).trace_id
    assert parent_id == _ctx(invocation).span_id
    assert span_id != _ctx(invocation).span_id


@dataclass
class ShippedInfo:
    """What an executor ships to its worker (`justpipe.executors.CallInfo` has `carrier`)."""

    carrier: dict[str, str] | None


@pytest.mark.backend_agnostic
def test_worker_trace_hook_parents_worker_spans_to_the_carrier(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("invocation") as invocation:
        info = ShippedInfo(inject_context())
    with worker_trace_hook(info), tracer.start_as_current_span("in worker"):
        pass
    with worker_trace_hook(ShippedInfo(None)), tracer.start_as_current_span("untraced"):
        pass
    worker = otel.one("in worker")
    assert worker.parent is not None
    assert worker.parent.span_id == invocation.get_span_context().span_id
    assert otel.one("untraced").parent is None


async def test_metrics_only_observer_makes_no_spans_and_no_carriers() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    observer = OpenTelemetryObserver(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=meter_provider
    )
    pipe: Pipe[dict[str, Any], None] = Pipe(name="metered")
    carriers: list[Any] = []

    @pipe.step
    async def one(state: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    pipe.add_observer(observer)
    async for event in pipe.run({}):
        if event.type is EventType.STEP_START:
            carriers.append(await invocation_carrier(event.invocation_id or ""))
    assert carriers == [None]
    data = reader.get_metrics_data()
    assert data is not None
    runs = [
        point.value
        for r in data.resource_metrics
        for sc in r.scope_metrics
        for m in sc.metrics
        if m.name == "justpipe.runs"
        for point in m.data.data_points
        if isinstance(point, NumberDataPoint)
    ]
    assert runs == [1]


async def test_no_op_providers_leave_the_observer_idle() -> None:
    observer = OpenTelemetryObserver(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
    )
    pipe: Pipe[dict[str, Any], None] = Pipe(name="idle")

    @pipe.step
    async def one(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(observer)
    seen: list[int] = []
    async for _event in pipe.run({}):
        seen.append(len(observer._runs))
    assert set(seen) == {0}
    assert await invocation_carrier("idle:1") is None


@pytest.mark.backend_agnostic
def test_attach_context_rejects_a_non_mapping() -> None:
    with pytest.raises(TypeError, match="inject_context"):
        attach_context("traceparent")  # type: ignore[arg-type]


@pytest.mark.backend_agnostic
def test_inject_and_attach_round_trip_in_process(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("outer") as outer:
        carrier = inject_context()
    assert trace.get_current_span().get_span_context().is_valid is False
    with attach_context(carrier), tracer.start_as_current_span("inner"):
        pass
    inner = otel.one("inner")
    assert inner.parent is not None
    assert inner.parent.span_id == outer.get_span_context().span_id


# --------------------------------------------------------------------------- metrics


async def test_metrics_values(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="counted")

    @pipe.step(to="b")
    async def a(state: dict[str, Any]) -> None:
        pass

    @pipe.step
    async def b(state: dict[str, Any]) -> None:
        pass

    pipe.add_observer(otel.observer)
    first = await collect(pipe)
    await collect(pipe)
    assert otel.metric("justpipe.runs", pipeline__name="counted", run__status="success") == 2
    count, total = otel.metric("justpipe.run.duration", run__status="success")
    assert count == 2
    assert total >= end_data(first).duration_s
    count, _ = otel.metric("justpipe.invocation.duration", step__name="a", step__kind="step")
    assert count == 2
    assert otel.metric("justpipe.invocations.active", pipeline__name="counted") == 0
    units = {m.name: m.unit for m in _metric_objects(otel)}
    assert units == {
        "justpipe.runs": "{run}",
        "justpipe.run.duration": "s",
        "justpipe.invocation.duration": "s",
        "justpipe.invocations.active": "{invocation}",
    }


def _metric_objects(otel: Otel) -> list[Any]:
    data = otel.reader.get_metrics_data()
    assert data is not None
    return [m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics]


async def test_one_observer_serves_concurrent_runs(otel: Otel) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="many")

    @pipe.step
    async def hop(state: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    pipe.add_observer(otel.observer)
    await asyncio.gather(*(collect(pipe) for _ in range(5)))
    runs = otel.named("RUN many")
    assert len({_ctx(r).trace_id for r in runs}) == 5
    for run in runs:
        assert names(steps_only(otel.children(run))) == ["hop"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"tracer_provider": "console"},
            "tracer_provider=opentelemetry.sdk.trace.TracerProvider()",
        ),
        ({"tracer_provider": TracerProvider}, "pass an instance"),
        ({"meter_provider": 3}, "meter_provider=opentelemetry.sdk.metrics.MeterProvider("),
        ({"meter_provider": MeterProvider}, "pass an instance"),
    ],
)
def test_wrong_provider_types_name_the_fix(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TypeError, match="OpenTelemetryObserver") as info:
        OpenTelemetryObserver(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.backend_agnostic
def test_a_tracer_instead_of_its_provider_names_the_fix() -> None:
    tracer = TracerProvider().get_tracer("x")
    with pytest.raises(TypeError, match="got a Tracer; pass the provider"):
        OpenTelemetryObserver(tracer_provider=tracer)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- packaging


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.backend_agnostic
def test_the_core_never_imports_opentelemetry() -> None:
    done = _python(
        "import sys, justpipe, justpipe.observability, justpipe.pipe\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "print(loaded)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.backend_agnostic
def test_without_the_extra_the_import_error_names_it() -> None:
    done = _python(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry':\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import justpipe.observability.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'justpipe[otel]'" in done.stdout


@pytest.mark.backend_agnostic
def test_global_providers_and_the_no_provider_path() -> None:
    done = _python(
        "import asyncio\n"
        "from justpipe import Pipe\n"
        "from justpipe.observability.otel import OpenTelemetryObserver\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import "
        "InMemorySpanExporter\n"
        "pipe = Pipe(name='g')\n"
        "@pipe.step\n"
        "async def s(state): pass\n"
        "observer = OpenTelemetryObserver()\n"
        "pipe.add_observer(observer)\n"
        "async def run():\n"
        "    async for _ in pipe.run({}): pass\n"
        "asyncio.run(run())\n"
        "print('unset', len(observer._runs), len(observer._tracers))\n"
        "exporter = InMemorySpanExporter()\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "trace.set_tracer_provider(provider)\n"
        "asyncio.run(run())\n"
        "print('set', sorted(s.name for s in exporter.get_finished_spans()))\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "unset 0 0"
    assert lines[1] == "set ['RUN g', 's', 'shutdown', 'startup']"
