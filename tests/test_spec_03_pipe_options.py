"""`Pipe(...)` construction options and freezing after the first run (spec §3)."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from typing import Any

import pytest

from helpers import collect, end_data, of_type, pairs, stages
from justpipe import DefinitionError, EventType, Pipe, Retry
from justpipe.observability import Observer, ObserverMeta
from justpipe.types import (
    CancellationToken,
    FailureClassificationConfig,
    FailureSource,
    Meta,
    PipelineTerminalStatus,
    PipelineValidationWarning,
    StepContext,
)


def two_roots(**options: Any) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(**options)

    @pipe.step
    async def a(s: Any) -> None:
        pass

    @pipe.step
    async def b(s: Any) -> None:
        pass

    return pipe


# --------------------------------------------------------------------------- name


async def test_name_reaches_step_context_and_observer_meta() -> None:
    seen: dict[str, Any] = {}

    def spy(func: Any, ctx: StepContext) -> Any:
        seen["ctx"] = ctx
        return func

    class Obs(Observer):
        async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
            seen["meta"] = meta

    pipe: Pipe[Any, Any] = Pipe(name="orders", middleware=[spy])
    pipe.add_observer(Obs())

    @pipe.step
    async def a(s: Any) -> None:
        pass

    await collect(pipe)
    assert seen["ctx"].pipe_name == "orders"
    assert seen["ctx"].name == "a"
    assert seen["meta"].pipe_name == "orders"
    assert pipe.describe()["name"] == "orders"


# --------------------------------------------------------------------------- strict / multi-root


async def test_strict_pipe_rejects_multiple_roots_at_run() -> None:
    with pytest.raises(DefinitionError, match="Multiple root steps detected: a, b"):
        await collect(two_roots())


async def test_allow_multi_root_runs_every_root_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        events = await collect(two_roots(allow_multi_root=True))
    assert sorted(stages(events, EventType.STEP_END)) == ["a", "b"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


@pytest.mark.parametrize("allow", [False, True])
async def test_non_strict_pipe_warns_about_multiple_roots_even_when_allowed(allow: bool) -> None:
    pipe = two_roots(strict=False, allow_multi_root=allow)
    with pytest.warns(PipelineValidationWarning, match="Multiple root steps detected: a, b"):
        events = await collect(pipe)
    assert sorted(stages(events, EventType.STEP_START)) == ["a", "b"]


def test_validate_arguments_override_the_pipe_settings() -> None:
    pipe = two_roots()
    pipe.validate(allow_multi_root=True)
    with pytest.warns(PipelineValidationWarning):
        pipe.validate(strict=False)
    with pytest.raises(DefinitionError):
        pipe.validate()
    lenient = two_roots(strict=False)
    with pytest.raises(DefinitionError):
        lenient.validate(strict=True)


# --------------------------------------------------------------------------- middleware / retries


async def test_default_middleware_retries_a_failing_step() -> None:
    calls: list[int] = []
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(retries=2, retry_wait_min=0, retry_wait_max=0)
    async def flaky(s: Any) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("again")

    events = await collect(pipe)
    assert len(calls) == 3
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_explicit_middleware_list_removes_automatic_retries() -> None:
    calls: list[int] = []
    pipe: Pipe[Any, Any] = Pipe(middleware=[])

    @pipe.step(retries=2)
    async def flaky(s: Any) -> None:
        calls.append(1)
        raise ValueError("no retry")

    events = await collect(pipe)
    assert calls == [1]
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_middleware_list_mutated_after_a_run_applies_to_the_next_run() -> None:
    # runs reuse a cached plan; a middleware list changed in place must not be ignored
    seen: list[str] = []
    pipe: Pipe[Any, Any] = Pipe(middleware=[])

    @pipe.step
    async def only(s: Any) -> None:
        seen.append("body")

    def tag(func: Any, ctx: StepContext) -> Any:
        async def wrapped(**kwargs: Any) -> Any:
            seen.append(f"mw:{ctx.name}")
            return await func(**kwargs)

        return wrapped

    await collect(pipe)
    assert seen == ["body"]
    pipe.middleware.append(tag)
    await collect(pipe)
    assert seen == ["body", "mw:only", "body"]
    pipe.middleware.clear()
    await collect(pipe)
    assert seen == ["body", "mw:only", "body", "body"]


# --------------------------------------------------------------------------- queue size


def streaming_pipe(log: list[str], **options: Any) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(**options)

    @pipe.step
    async def a(s: Any) -> Any:
        for i in range(4):
            log.append(f"yield {i}")
            yield i
        log.append("done")

    return pipe


async def consume(pipe: Pipe[Any, Any], log: list[str], **run_kwargs: Any) -> None:
    async for event in pipe.run({}, **run_kwargs):
        suffix = event.payload if event.type is EventType.TOKEN else ""
        log.append(f"got {event.type.value}{suffix}")


EXPECTED_QUEUE_1 = [
    "got start",
    "yield 0",
    "got step_start",
    "yield 1",
    "got token0",
    "yield 2",
    "got token1",
    "yield 3",
    "got token2",
    "done",
    "got token3",
    "got step_end",
    "got finish",
]
EXPECTED_UNBOUNDED = [
    "got start",
    "yield 0",
    "yield 1",
    "yield 2",
    "yield 3",
    "done",
    "got step_start",
    "got token0",
    "got token1",
    "got token2",
    "got token3",
    "got step_end",
    "got finish",
]


async def test_queue_size_one_blocks_the_producer_until_the_consumer_reads() -> None:
    log: list[str] = []
    await asyncio.wait_for(consume(streaming_pipe(log, queue_size=1), log), 10)
    assert log == EXPECTED_QUEUE_1


async def test_run_queue_size_overrides_the_pipe_setting() -> None:
    log: list[str] = []
    await asyncio.wait_for(consume(streaming_pipe(log), log, queue_size=1), 10)
    assert log == EXPECTED_QUEUE_1
    log.clear()
    await asyncio.wait_for(consume(streaming_pipe(log, queue_size=1), log, queue_size=0), 10)
    assert log == EXPECTED_UNBOUNDED


async def test_queue_size_zero_is_unbounded() -> None:
    log: list[str] = []
    await asyncio.wait_for(consume(streaming_pipe(log, queue_size=0), log), 10)
    assert log == EXPECTED_UNBOUNDED


# --------------------------------------------------------------------------- max_map_items


def async_gen_map(n: int, **options: Any) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(**options)

    @pipe.map(each="work")
    async def produce(s: Any) -> Any:
        async def gen() -> Any:
            for i in range(n):
                yield i

        return gen()

    @pipe.step
    async def work(s: Any, item: int) -> None:
        s.setdefault("items", []).append(item)

    return pipe


async def test_async_generator_map_over_max_map_items_is_a_step_error() -> None:
    state: dict[str, Any] = {}
    events = await collect(async_gen_map(4, max_map_items=3), state)
    errors = of_type(events, EventType.STEP_ERROR)
    assert [e.stage for e in errors] == ["produce"]
    assert "exceeded maximum of 3 items" in errors[0].payload
    assert "items" not in state
    assert end_data(events).failed_step == "produce"


async def test_async_generator_map_at_the_limit_runs() -> None:
    state: dict[str, Any] = {}
    events = await collect(async_gen_map(3, max_map_items=3), state)
    assert sorted(state["items"]) == [0, 1, 2]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_max_map_items_does_not_cap_list_results() -> None:
    pipe: Pipe[Any, Any] = Pipe(max_map_items=2)

    @pipe.map(each="work")
    async def produce(s: Any) -> list[int]:
        return [1, 2, 3, 4]

    @pipe.step
    async def work(s: Any, item: int) -> None:
        s.setdefault("items", []).append(item)

    state: dict[str, Any] = {}
    await collect(pipe, state)
    assert sorted(state["items"]) == [1, 2, 3, 4]


# --------------------------------------------------------------------------- debug


def single_step(**options: Any) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(**options)

    @pipe.step
    async def only(s: Any) -> None:
        pass

    return pipe


async def test_debug_true_logs_the_run_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    await collect(single_step(debug=True))
    err = capsys.readouterr().err
    assert "START" in err
    assert "STEP_END" in err
    assert "Pipeline completed in" in err


@pytest.mark.parametrize("value", ["1", "true", " YES ", "On"])
async def test_justpipe_debug_env_enables_the_logger(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUSTPIPE_DEBUG", value)
    await collect(single_step())
    assert "Pipeline completed in" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "no", ""])
async def test_falsy_justpipe_debug_env_stays_quiet(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUSTPIPE_DEBUG", value)
    await collect(single_step())
    assert capsys.readouterr().err == ""


async def test_debug_false_overrides_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUSTPIPE_DEBUG", "1")
    await collect(single_step(debug=False))
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- cancellation token


async def test_cancellation_token_is_shared_by_every_run_and_never_reset() -> None:
    token = CancellationToken()
    pipe: Pipe[Any, Any] = Pipe(cancellation_token=token)

    @pipe.step
    async def a(s: Any, cancel: CancellationToken) -> None:
        await cancel.checkpoint()

    first = await collect(pipe)
    assert end_data(first).status is PipelineTerminalStatus.SUCCESS
    token.cancel("closed for the day")
    for _ in range(2):
        events = await collect(pipe)
        assert end_data(events).status is PipelineTerminalStatus.CANCELLED
        assert of_type(events, EventType.CANCELLED)[0].payload == "closed for the day"
    assert pipe.cancellation_token is token


# --------------------------------------------------------------------------- failure classification


class VendorError(Exception):
    pass


VendorError.__module__ = "acme_sdk.errors"


async def test_failure_classification_prefixes_mark_external_dependencies() -> None:
    config = FailureClassificationConfig(external_dependency_prefixes=("acme_sdk",))
    pipe: Pipe[Any, Any] = Pipe(failure_classification=config)

    @pipe.step
    async def call_vendor(s: Any) -> None:
        raise VendorError("503")

    data = end_data(await collect(pipe))
    assert data.failure_source is FailureSource.EXTERNAL_DEP


# --------------------------------------------------------------------------- metadata


async def test_metadata_is_readable_from_steps_and_describe() -> None:
    @dataclasses.dataclass
    class Ctx:
        meta: Meta | None = None

    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx, metadata={"team": "search"})
    seen: list[Any] = []

    @pipe.step
    async def a(s: Any, ctx: Ctx) -> None:
        assert ctx.meta is not None
        seen.append(ctx.meta.pipeline.get("team"))
        seen.append(ctx.meta.pipeline.get("missing", "dflt"))

    await collect(pipe, {}, Ctx())
    assert seen == ["search", "dflt"]
    assert pipe.describe()["metadata"] == {"team": "search"}


# --------------------------------------------------------------------------- max_retries


async def test_max_retries_caps_retry_driven_reexecution() -> None:
    calls: list[int] = []
    pipe: Pipe[Any, Any] = Pipe(max_retries=3)

    @pipe.step
    async def again(s: Any) -> Any:
        calls.append(1)
        return Retry()

    with pytest.warns(UserWarning, match=r"exceeded max retries \(3\)"):
        events = await collect(pipe)
    assert len(calls) == 3
    assert [e.attempt for e in of_type(events, EventType.STEP_START)] == [1, 2, 3]


# --------------------------------------------------------------------------- freezing

FROZEN = "frozen after first run"


async def frozen_pipe() -> Pipe[Any, Any]:
    pipe = single_step()
    await collect(pipe)
    return pipe


async def noop(s: Any) -> None:
    pass


def noop_mw(func: Any, ctx: StepContext) -> Any:
    return func


REGISTRATIONS = {
    "step": lambda p: p.step("late")(noop),
    "map": lambda p: p.map("late", each="only")(noop),
    "switch": lambda p: p.switch("late", to={"x": "only"})(noop),
    "sub": lambda p: p.sub("late", pipeline=Pipe())(noop),
    "on_startup": lambda p: p.on_startup(lambda: None),
    "on_shutdown": lambda p: p.on_shutdown(lambda: None),
    "on_error": lambda p: p.on_error(lambda: None),
    "add_middleware": lambda p: p.add_middleware(noop_mw),
    "registry.add_middleware": lambda p: p.registry.add_middleware(noop_mw),
    "add_event_hook": lambda p: p.add_event_hook(lambda e: e),
    "add_observer": lambda p: p.add_observer(Observer()),
}


@pytest.mark.parametrize("what", list(REGISTRATIONS))
async def test_definition_is_frozen_after_the_first_run(what: str) -> None:
    pipe = await frozen_pipe()
    with pytest.raises(RuntimeError, match=FROZEN):
        REGISTRATIONS[what](pipe)


async def test_introspection_keeps_working_after_freezing() -> None:
    pipe = await frozen_pipe()
    assert [info.name for info in pipe.steps()] == ["only"]
    assert pipe.topology == {}
    assert "graph" in pipe.graph()
    assert pipe.describe()["nodes"].keys() == {"only"}
    events = await collect(pipe)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_a_run_that_fails_validation_does_not_freeze() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="missing")
    async def a(s: Any) -> None:
        pass

    with pytest.raises(DefinitionError, match="targets unknown step 'missing'"):
        await collect(pipe)

    @pipe.step
    async def missing(s: Any) -> None:
        pass

    events = await collect(pipe)
    assert pairs(events)[1:-1] == [
        ("step_start", "a"),
        ("step_end", "a"),
        ("step_start", "missing"),
        ("step_end", "missing"),
    ]


async def test_freezing_happens_only_after_validation_passes_even_for_empty_pipes() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    events = await collect(pipe)
    assert end_data(events).status is PipelineTerminalStatus.FAILED
    with pytest.raises(RuntimeError, match=FROZEN):
        pipe.step("late")(noop)
