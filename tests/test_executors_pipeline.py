"""Steps on executors inside real runs: the same events, on_result, failures, stopping.

The engines are the real ones (`engines.py`: one process pool, one Dask LocalCluster,
one local Ray per test session). Step functions are module-level so the workers can
import them from this module.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from extras import require
from helpers import collect, end_data, of_type
from justpipe import EventType, Pipe
from justpipe.executors import DaskExecutor, Executor, ProcessExecutor, RayExecutor
from justpipe.types import DefinitionError, PipelineTerminalStatus

ALL = ("process", "dask", "ray")
STREAMING = ("process", "ray")


def on(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("executor", names, indirect=True)


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> Executor:
    fixture = {"process": "process_executor", "dask": "dask_executor", "ray": "ray_executor"}
    ex: Executor = request.getfixturevalue(fixture[request.param])
    return ex


# --------------------------------------------------------------------------- step functions


def square(item: int) -> int:
    return item * item


async def async_square(item: int) -> int:
    await asyncio.sleep(0)
    return item * item


async def spell(word: str) -> AsyncIterator[str]:
    for ch in word:
        yield ch


def fail_on(item: int) -> int:
    if item == 3:
        raise KeyError(f"no {item}")
    return item


def die_on(item: int) -> int:
    if item == 2:
        os._exit(3)
    return item


def sleepy(item: int) -> int:
    time.sleep(5)
    return item


def touch_late(path: str) -> None:
    time.sleep(1.5)
    Path(path).write_text("ran to the end")


def flaky(path: str) -> int:
    """Fails twice (counted in a file: each attempt is a fresh remote call), then works."""
    p = Path(path)
    n = int(p.read_text()) if p.exists() else 0
    p.write_text(str(n + 1))
    if n < 2:
        raise ConnectionError(f"attempt {n + 1} failed")
    return n + 1


@dataclass
class Squares:
    items: list[Any] = field(default_factory=lambda: list(range(6)))
    out: dict[int, int] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    pulled: int = 0
    first_result_after: int | None = None
    path: str = ""


def keep(state: Squares, item: int, result: int) -> None:
    state.out[item] = result


def fan_pipe(
    fn: Any, executor: Any, *, streaming: bool = False, on_error: Any = None
) -> Pipe[Squares, None]:
    """start -> map(6 items, max_concurrency=3) of `fn` -> done; optionally a token step."""
    pipe: Pipe[Squares, None] = Pipe(Squares, name="fan")
    options: dict[str, Any] = {"on_result": keep, "on_error": on_error}
    if executor is not None:
        options["executor"] = executor

    @pipe.step(to="fan")
    async def start(s: Squares) -> None:
        pass

    @pipe.map(each="work", max_concurrency=3, to="speak" if streaming else "done")
    async def fan(s: Squares) -> list[Any]:
        return s.items

    pipe.step("work", **options)(fn)
    if streaming:
        stream_options = {} if executor is None else {"executor": executor}
        pipe.step("speak", to="done", **stream_options)(spell_step)

    @pipe.step
    async def done(s: Squares) -> None:
        pass

    return pipe


async def spell_step(word: str = "hey") -> AsyncIterator[str]:
    async for ch in spell(word):
        yield ch


def shape(events: list[Any]) -> tuple[list[Any], dict[Any, list[Any]], list[Any]]:
    """A run's events, comparable across engines (not times, not ids, not completion order).

    Concurrent map workers finish in whatever order the engine returns them, so each
    worker invocation's own events are compared per item (by scope); everything else in
    stream order. Lineage is compared structurally: each STEP_START is closed by exactly
    one STEP_END/STEP_ERROR of the same invocation, and each worker's parent is the map.
    """
    by_id = {e.invocation_id: e for e in events if e.type is EventType.STEP_START}
    order: list[Any] = []
    workers: dict[Any, list[Any]] = {}
    lineage: list[Any] = []
    for e in events:
        payload = e.payload
        if e.type in (EventType.STEP_END, EventType.FINISH):
            payload = getattr(payload, "status", type(payload).__name__)
        elif isinstance(payload, dict) and "owner_invocation_id" in payload:  # MAP_COMPLETE
            owner = payload["owner_invocation_id"] == e.invocation_id
            payload = {**payload, "owner_invocation_id": owner}
        key = (e.type, e.stage, payload, e.attempt, e.scope)
        if e.scope and e.stage == "work":
            workers.setdefault(e.scope, []).append(key)
        else:
            order.append(key)
        if e.type in (EventType.STEP_END, EventType.STEP_ERROR) and e.invocation_id in by_id:
            start = by_id.pop(e.invocation_id)
            parent = start.parent_invocation_id
            starts = [x for x in events if x.type is EventType.STEP_START]
            parent_stage = next((x.stage for x in starts if x.invocation_id == parent), None)
            lineage.append((e.stage, e.scope, start.attempt, parent_stage))
    assert not by_id, f"unclosed invocations: {sorted(by_id)}"
    return order, workers, sorted(lineage, key=repr)


# --------------------------------------------------------------------------- the same events


@on(*ALL)
async def test_an_offloaded_map_gives_the_events_of_a_local_run(executor: Executor) -> None:
    local_state, remote_state = Squares(), Squares()
    local = await collect(fan_pipe(square, None), local_state, watchdog=60)
    remote = await collect(fan_pipe(square, executor), remote_state, watchdog=60)
    assert shape(remote) == shape(local)
    assert remote_state.out == local_state.out == {i: i * i for i in range(6)}
    ends = [e for e in of_type(remote, EventType.STEP_END) if e.stage == "work"]
    assert len(ends) == 6
    for end in ends:  # where it ran, for observers, without a new Event field
        assert end.meta["framework"]["executor"] == executor.name
        assert end.meta["framework"]["worker"]


@on(*STREAMING)
async def test_an_offloaded_async_generator_streams_its_tokens_in_order(
    executor: Executor,
) -> None:
    local = await collect(fan_pipe(async_square, None, streaming=True), Squares(), watchdog=60)
    remote = await collect(
        fan_pipe(async_square, executor, streaming=True), Squares(), watchdog=60
    )
    assert shape(remote) == shape(local)
    assert [e.payload for e in of_type(remote, EventType.TOKEN)] == list("hey")


async def test_a_streaming_step_on_dask_is_refused_before_the_run(
    dask_executor: DaskExecutor,
) -> None:
    pipe = fan_pipe(square, dask_executor, streaming=True)
    with pytest.raises(DefinitionError, match=r"Step 'speak'.*ProcessExecutor or RayExecutor"):
        await collect(pipe, Squares(), watchdog=60)


# --------------------------------------------------------------------------- binding


async def test_executor_names_bind_per_run(
    process_executor: ProcessExecutor, dask_executor: DaskExecutor
) -> None:
    pipe = fan_pipe(square, "cpu")
    pipe.executors["cpu"] = process_executor
    first = await collect(pipe, Squares(), watchdog=60)
    second = await collect(pipe, Squares(), executors={"cpu": dask_executor}, watchdog=60)
    placed = [
        {
            e.meta["framework"]["executor"]
            for e in of_type(run, EventType.STEP_END)
            if e.stage == "work"
        }
        for run in (first, second)
    ]
    assert placed == [{"process"}, {"dask"}]


async def test_an_unknown_executor_name_names_the_step_and_the_known_names(
    process_executor: ProcessExecutor,
) -> None:
    pipe = fan_pipe(square, "gpu")
    pipe.executors["cpu"] = process_executor
    with pytest.raises(DefinitionError, match=r"Step 'work'.*'gpu'.*known executors: 'cpu'"):
        await collect(pipe, Squares(), watchdog=60)


def test_wrong_executor_arguments_are_type_errors() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    with pytest.raises(TypeError, match=r"Step 'work'.*ProcessExecutor"):
        pipe.step("work", executor=42)(square)
    with pytest.raises(TypeError, match=r"Step 'work'.*on_result"):
        pipe.step("work", on_result="keep")(square)
    with pytest.raises(TypeError, match=r"Pipe\(executors=\.\.\.\)"):
        Pipe(executors={"cpu": object()})
    with pytest.raises(TypeError, match=r"run\(executors=\.\.\.\)"):
        pipe.run({}, executors=["cpu"])  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match=r"Step 'fan' \(@pipe.map\).*worker step"):

        @pipe.map(each="work", executor="cpu")
        async def fan(s: Any) -> list[int]:
            return []


def test_an_on_result_parameter_that_cannot_be_injected_is_a_definition_error() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    def merge(state: Any, value: Any) -> None:
        pass

    with pytest.raises(DefinitionError, match=r"Step 'work'.*'value'.*item.*result"):
        pipe.step("work", on_result=merge)(square)


def test_offloading_a_step_that_takes_state_warns_that_it_gets_a_copy() -> None:
    pipe: Pipe[Squares, None] = Pipe(Squares)

    def reads_state(state: Squares, item: int) -> int:
        return item

    with pytest.warns(UserWarning, match=r"Step 'reads_state'.*copy.*on_result"):
        pipe.step(executor="cpu")(reads_state)


# --------------------------------------------------------------------------- on_result, locally too


async def test_on_result_merges_a_local_steps_values_without_a_warning() -> None:
    state = Squares()
    events = await collect(fan_pipe(square, None), state)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert state.out == {i: i * i for i in range(6)}


async def test_on_results_own_return_value_goes_through_the_table() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    def route(result: int) -> str:
        return "after" if result == 7 else "never"

    @pipe.step(on_result=route)
    async def seven(s: Any) -> int:
        return 7

    @pipe.step
    async def after(s: Any) -> None:
        s["after"] = True

    @pipe.step
    async def never(s: Any) -> None:
        s["never"] = True

    state: dict[str, Any] = {}
    await collect(pipe, state, start="seven")
    assert state == {"after": True}


# --------------------------------------------------------------------------- laziness


def slow_square(item: int) -> int:
    time.sleep(0.002)
    return item * item


async def test_a_lazy_source_stays_lazy_on_a_process_pool(
    process_executor: ProcessExecutor,
) -> None:
    pipe: Pipe[Squares, None] = Pipe(Squares, name="lazy")

    def note(state: Squares, item: int, result: int) -> None:
        if state.first_result_after is None:
            state.first_result_after = state.pulled
        state.out[item] = result

    @pipe.map(each="work", max_concurrency=4)
    async def fan(s: Squares) -> Iterator[int]:
        def items() -> Iterator[int]:
            for i in range(400):
                s.pulled += 1
                yield i

        return items()

    pipe.step("work", executor=process_executor, on_result=note)(slow_square)
    state = Squares()
    events = await collect(pipe, state, watchdog=120)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert len(state.out) == 400
    # when the first result came back, the pool had pulled at most one item per worker
    assert state.first_result_after is not None and state.first_result_after <= 4


# --------------------------------------------------------------------------- failures


@on(*ALL)
async def test_a_remote_exception_is_the_invocations_step_error_with_its_type(
    executor: Executor,
) -> None:
    seen: list[BaseException] = []

    def handler(error: Exception) -> None:
        seen.append(error)
        raise error

    pipe = fan_pipe(fail_on, executor, on_error=handler)
    state = Squares()
    events = await collect(pipe, state, watchdog=60)
    errors = [e for e in of_type(events, EventType.STEP_ERROR) if e.stage == "work"]
    assert len(errors) == 1
    assert type(seen[0]) is KeyError
    assert "fail_on" in "".join(getattr(seen[0], "__notes__", []))  # the remote traceback
    assert end_data(events).status is PipelineTerminalStatus.FAILED
    assert sorted(state.out) == [0, 1, 2, 4, 5]


def flaky_step(s: dict[str, str]) -> int:
    return flaky(s["path"])


@on(*ALL)
async def test_retries_call_the_remote_function_again(executor: Executor, tmp_path: Path) -> None:
    pipe: Pipe[Any, None] = Pipe(name="retry")
    results: list[int] = []

    def keep_result(result: int) -> None:
        results.append(result)

    with pytest.warns(UserWarning, match="copy"):
        pipe.step(
            "flaky",
            executor=executor,
            on_result=keep_result,
            retries=2,
            retry_wait_min=0,
            retry_wait_max=0,
        )(flaky_step)
    counter = tmp_path / "attempts"
    events = await collect(pipe, {"path": str(counter)}, watchdog=60)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert results == [3]
    assert counter.read_text() == "3"  # two failed remote calls, then the third worked


async def test_a_dead_worker_fails_only_its_own_invocation(
    process_executor: ProcessExecutor,
) -> None:
    state = Squares()
    events = await collect(fan_pipe(die_on, process_executor), state, watchdog=60)
    errors = [e for e in of_type(events, EventType.STEP_ERROR) if e.stage == "work"]
    assert len(errors) == 1
    assert "lost its worker" in errors[0].payload
    assert sorted(state.out) == [0, 1, 3, 4, 5]
    again = Squares()
    await collect(fan_pipe(square, process_executor), again, watchdog=60)
    assert len(again.out) == 6  # the pool recovered


async def test_an_unpicklable_item_fails_its_invocation_with_a_clear_error(
    process_executor: ProcessExecutor,
) -> None:
    state = Squares(items=[1, threading.Lock(), 3])
    events = await collect(fan_pipe(square, process_executor), state, watchdog=60)
    errors = [e for e in of_type(events, EventType.STEP_ERROR) if e.stage == "work"]
    assert len(errors) == 1
    assert "work" in errors[0].payload and "lock" in errors[0].payload.lower()
    assert sorted(state.out) == [1, 3]


# --------------------------------------------------------------------------- stopping


@on("process", "ray")
async def test_a_step_timeout_stops_the_remote_work(executor: Executor, tmp_path: Path) -> None:
    pipe: Pipe[Any, Any] = Pipe(name="slow")
    marker = tmp_path / "late"
    with pytest.warns(UserWarning, match="copy"):
        pipe.step("late", executor=executor, timeout=0.3)(_late_step)
    events = await collect(pipe, {"path": str(marker)}, watchdog=60)
    errors = of_type(events, EventType.STEP_ERROR)
    assert len(errors) == 1 and "timed out" in errors[0].payload
    await asyncio.sleep(2.0)
    assert not marker.exists()  # the remote call was stopped, not left running


def _late_step(s: Any) -> None:
    touch_late(s["path"])


async def test_a_run_timeout_ends_a_run_of_remote_sleepers(
    process_executor: ProcessExecutor,
) -> None:
    events = await collect(fan_pipe(sleepy, process_executor), Squares(), timeout=0.5, watchdog=60)
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT


async def test_closing_the_stream_leaves_the_pool_usable(process_executor: ProcessExecutor) -> None:
    pipe = fan_pipe(sleepy, process_executor)
    stream = pipe.run(Squares())
    async for event in stream:
        if event.type is EventType.MAP_WORKER:
            break
    await stream.aclose()
    again = Squares()
    await collect(fan_pipe(square, process_executor), again, watchdog=60)
    assert len(again.out) == 6


# --------------------------------------------------------------------------- backpressure


class CountingExecutor(ProcessExecutor):
    """A process pool that records how many calls were submitted at once."""

    def __init__(self) -> None:
        super().__init__(2)
        self.live = 0
        self.peak = 0

    async def call(self, fn: Any, kwargs: dict[str, Any], *, info: Any) -> Any:
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            return await super().call(fn, kwargs, info=info)
        finally:
            self.live -= 1


def nap_square(item: int) -> int:
    time.sleep(0.01)
    return item * item


async def test_without_max_concurrency_at_most_capacity_calls_are_submitted() -> None:
    pipe: Pipe[Squares, None] = Pipe(Squares, name="unbounded")

    @pipe.map(each="work")  # no max_concurrency: one task per item, all spawned at once
    async def fan(s: Squares) -> list[int]:
        return list(range(20))

    async with CountingExecutor() as executor:
        pipe.step("work", executor=executor, on_result=keep)(nap_square)
        state = Squares()
        events = await collect(pipe, state, watchdog=60)
        assert end_data(events).status is PipelineTerminalStatus.SUCCESS
        assert len(state.out) == 20
        assert executor.peak == executor.capacity == 2


# --------------------------------------------------------------------------- tracing


def current_span_ids() -> tuple[int, int]:
    """In the worker: the trace and span id of the context the trace hook made current."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return context.trace_id, context.span_id


def traced_executor(name: str, request: pytest.FixtureRequest) -> Executor:
    """A fresh executor of engine `name` whose workers attach the shipped trace context."""
    from justpipe.observability.otel import worker_trace_hook

    if name == "process":
        return ProcessExecutor(1, trace_hook=worker_trace_hook)
    if name == "dask":
        client = request.getfixturevalue("dask_client")
        return DaskExecutor(client=client, trace_hook=worker_trace_hook)
    request.getfixturevalue("ray_session")
    return RayExecutor(trace_hook=worker_trace_hook)


@pytest.mark.parametrize("engine", ALL)
async def test_an_offloaded_invocation_carries_its_span_to_the_worker(
    engine: str, request: pytest.FixtureRequest
) -> None:
    require("opentelemetry.sdk", "otel")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from justpipe.observability.otel import OpenTelemetryObserver

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[tuple[int, int]] = []

    def keep_ids(result: tuple[int, int]) -> None:
        seen.append(tuple(result))  # type: ignore[arg-type]

    pipe: Pipe[Any, None] = Pipe(name="traced")
    pipe.add_observer(OpenTelemetryObserver(tracer_provider=provider))
    async with traced_executor(engine, request) as executor:
        pipe.step("remote", executor=executor, on_result=keep_ids)(_traced_step)
        events = await collect(pipe, {}, watchdog=60)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "remote"]
    assert seen == [(span.context.trace_id, span.context.span_id)]


def _traced_step() -> tuple[int, int]:
    return current_span_ids()
