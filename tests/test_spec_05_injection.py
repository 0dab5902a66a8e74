"""Dependency injection: which value each parameter receives (spec §5)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from helpers import collect, end_data, of_type
from justpipe import DefinitionError, EventType, Pipe
from justpipe.types import CancellationToken, InjectionSource, PipelineTerminalStatus


class BaseState:
    pass


@dataclasses.dataclass(frozen=True)
class State(BaseState):
    seen: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Context:
    label: str = "ctx"


def typed_pipe(**options: Any) -> Pipe[State, Context]:
    return Pipe(State, Context, **options)


def metadata(pipe: Pipe[Any, Any], step: str) -> dict[str, InjectionSource]:
    return dict(pipe.registry.injection_metadata[step])


async def run_one(pipe: Pipe[Any, Any], state: Any = None, context: Any = None) -> Any:
    state = State() if state is None else state
    events = await collect(pipe, state, context)
    return state, events


# --------------------------------------------------------------------------- analysis


def test_type_based_matches_in_priority_order() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def a(x: State, y: Context, z: CancellationToken, w: Exception) -> None:
        pass

    assert metadata(pipe, "a") == {
        "x": InjectionSource.STATE,
        "y": InjectionSource.CONTEXT,
        "z": InjectionSource.CANCEL,
        "w": InjectionSource.ERROR,
    }


def test_base_class_annotation_receives_the_state() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def a(anything: BaseState) -> None:
        pass

    assert metadata(pipe, "a") == {"anything": InjectionSource.STATE}


def test_object_annotation_matches_the_state() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def a(thing: object) -> None:
        pass

    assert metadata(pipe, "a") == {"thing": InjectionSource.STATE}


def test_none_annotation_is_the_state_with_the_default_state_type() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def a(value: None) -> None:
        pass

    assert metadata(pipe, "a") == {"value": InjectionSource.STATE}


def test_base_exception_annotation_is_an_error_but_a_subclass_is_not() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def a(problem: BaseException) -> None:
        pass

    @pipe.step
    async def b(problem: ValueError) -> None:
        pass

    @pipe.step
    async def c(error: ValueError) -> None:
        pass

    assert metadata(pipe, "a") == {"problem": InjectionSource.ERROR}
    assert metadata(pipe, "b") == {"problem": InjectionSource.UNKNOWN}
    assert metadata(pipe, "c") == {"error": InjectionSource.ERROR}


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("s", InjectionSource.STATE),
        ("state", InjectionSource.STATE),
        ("c", InjectionSource.CONTEXT),
        ("ctx", InjectionSource.CONTEXT),
        ("context", InjectionSource.CONTEXT),
        ("e", InjectionSource.ERROR),
        ("error", InjectionSource.ERROR),
        ("exception", InjectionSource.ERROR),
        ("step_name", InjectionSource.STEP_NAME),
        ("stage", InjectionSource.STEP_NAME),
        ("cancel", InjectionSource.CANCEL),
        ("cancellation_token", InjectionSource.CANCEL),
        ("item", InjectionSource.UNKNOWN),
    ],
)
def test_name_fallback(name: str, source: InjectionSource) -> None:
    pipe = typed_pipe()
    namespace: dict[str, Any] = {}
    exec(f"async def fn({name}): pass", namespace)
    pipe.step("fn")(namespace["fn"])
    assert metadata(pipe, "fn") == {name: source}


@pytest.mark.parametrize("annotation", ["dict[str, Any]", "Any", "list[int]", "int"])
def test_non_matching_annotations_fall_back_to_the_name(annotation: str) -> None:
    pipe = typed_pipe()
    namespace: dict[str, Any] = {"Any": Any}
    exec(f"async def fn(state: {annotation}, other: {annotation}): pass", namespace)
    pipe.step("fn")(namespace["fn"])
    assert metadata(pipe, "fn") == {
        "state": InjectionSource.STATE,
        "other": InjectionSource.UNKNOWN,
    }


def test_any_state_type_never_matches_by_type() -> None:
    pipe: Pipe[Any, Any] = Pipe(Any)

    @pipe.step
    async def a(x: Any) -> None:
        pass

    assert metadata(pipe, "a") == {"x": InjectionSource.UNKNOWN}


def test_parameters_with_defaults_and_varargs_are_ignored() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def a(state: State, unknown: int = 3, *args: Any, **kwargs: Any) -> None:
        pass

    assert metadata(pipe, "a") == {"state": InjectionSource.STATE}


def test_unresolvable_hints_fall_back_to_raw_annotations() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def a(state: NotDefinedAnywhere, item: AlsoMissing) -> None:  # type: ignore[name-defined] # noqa: F821
        pass

    assert metadata(pipe, "a") == {"state": InjectionSource.STATE, "item": InjectionSource.UNKNOWN}


def test_one_unknown_parameter_is_allowed_two_are_not() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def ok(state: State, item: int) -> None:
        pass

    async def too_many(state: State, first: int, second: int) -> None:
        pass

    with pytest.raises(DefinitionError, match="unrecognized parameters") as info:
        pipe.step(too_many)
    assert "too_many" in str(info.value)
    assert "first" in str(info.value)
    assert "second" in str(info.value)


@pytest.mark.parametrize("decorator", ["map", "switch", "sub"])
def test_every_step_kind_allows_one_unknown_parameter(decorator: str) -> None:
    child: Pipe[Any, Any] = Pipe()
    child.step("x")(lambda s: None)
    pipe = typed_pipe()
    table: dict[str, dict[str, Any]] = {
        "map": {"each": "w"},
        "switch": {"to": {"a": "w"}},
        "sub": {"pipeline": child},
    }
    options = table[decorator]
    register = getattr(pipe, decorator)

    async def one(state: State, extra: int) -> None:
        pass

    async def two(state: State, extra: int, more: int) -> None:
        pass

    register("one", **options)(one)
    with pytest.raises(DefinitionError, match="unrecognized parameters"):
        register("two", **options)(two)


@pytest.mark.parametrize("hook", ["on_startup", "on_shutdown", "on_error"])
def test_hooks_allow_no_unknown_parameter(hook: str) -> None:
    pipe = typed_pipe()

    def fn(state: State, db: Any) -> None:
        pass

    with pytest.raises(DefinitionError, match="unrecognized parameters"):
        getattr(pipe, hook)(fn)


def test_local_error_handler_allows_no_unknown_parameter() -> None:
    pipe = typed_pipe()

    def handler(error: Exception, retry_count: int) -> None:
        pass

    with pytest.raises(DefinitionError, match="unrecognized parameters"):
        pipe.step("a", on_error=handler)(lambda s: None)


# --------------------------------------------------------------------------- values at call time


async def test_steps_receive_state_context_token_and_none_for_error_and_name() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def a(
        s: State,
        c: Context,
        token: CancellationToken,
        error: Exception,
        step_name: str,
        stage: str,
    ) -> None:
        s.seen.update(c=c, token=token, error=error, step_name=step_name, stage=stage)

    state, context = State(), Context()
    await run_one(pipe, state, context)
    assert state.seen == {
        "c": context,
        "token": pipe.cancellation_token,
        "error": None,
        "step_name": None,
        "stage": None,
    }


async def test_state_is_passed_by_reference_between_steps() -> None:
    pipe = typed_pipe()

    @pipe.step(to="b")
    async def a(s: State) -> None:
        s.seen["a"] = s

    @pipe.step
    async def b(s: State) -> None:
        s.seen["b"] = s

    state, _ = await run_one(pipe)
    assert state.seen["a"] is state
    assert state.seen["b"] is state


async def test_context_defaults_to_none() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    seen: list[Any] = []

    @pipe.step
    async def a(ctx: Any) -> None:
        seen.append(ctx)

    await collect(pipe)
    assert seen == [None]


async def test_hooks_get_none_for_error_and_step_name() -> None:
    seen: dict[str, Any] = {}
    pipe = typed_pipe()

    @pipe.on_startup
    def up(s: State, error: Exception, step_name: str, cancel: CancellationToken) -> None:
        seen["up"] = (s, error, step_name, cancel)

    pipe.step("a")(lambda s: None)
    state, _ = await run_one(pipe)
    assert seen["up"] == (state, None, None, pipe.cancellation_token)


async def test_local_handler_receives_the_exception_and_the_failing_step_name() -> None:
    seen: dict[str, Any] = {}
    pipe = typed_pipe()
    boom = ValueError("boom")

    def handler(error: Exception, step_name: str, s: State, c: Context, cancel: Any) -> None:
        seen.update(error=error, step_name=step_name, s=s, c=c, cancel=cancel)

    @pipe.step(on_error=handler)
    async def failing(s: State) -> None:
        raise boom

    state, context = State(), Context()
    await run_one(pipe, state, context)
    assert seen == {
        "error": boom,
        "step_name": "failing",
        "s": state,
        "c": context,
        "cancel": pipe.cancellation_token,
    }


async def test_global_handler_receives_no_cancellation_token() -> None:
    seen: dict[str, Any] = {}
    pipe = typed_pipe()
    boom = ValueError("boom")

    @pipe.on_error
    def handler(
        exception: Exception, stage: str, state: State, ctx: Context, cancel: CancellationToken
    ) -> None:
        seen.update(exception=exception, stage=stage, state=state, ctx=ctx, cancel=cancel)

    @pipe.step
    async def failing(s: State) -> None:
        raise boom

    state, context = State(), Context()
    await run_one(pipe, state, context)
    assert seen == {
        "exception": boom,
        "stage": "failing",
        "state": state,
        "ctx": context,
        "cancel": None,
    }


# --------------------------------------------------------------------------- map items


async def test_map_item_goes_to_the_first_unknown_parameter() -> None:
    pipe = typed_pipe()

    @pipe.map(each="worker")
    async def fan(s: State) -> list[str]:
        return ["x", "y"]

    @pipe.step
    async def worker(value: str, s: State, cancel: CancellationToken) -> None:
        s.seen[value] = cancel

    state, events = await run_one(pipe)
    assert state.seen == {"x": pipe.cancellation_token, "y": pipe.cancellation_token}
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_map_worker_without_an_unknown_parameter_is_called_without_the_item() -> None:
    pipe = typed_pipe()
    calls: list[int] = []

    @pipe.map(each="worker")
    async def fan(s: State) -> list[int]:
        return [1, 2, 3]

    @pipe.step
    async def worker(s: State) -> None:
        calls.append(1)

    await run_one(pipe)
    assert calls == [1, 1, 1]


async def test_unknown_parameter_outside_a_map_is_a_missing_argument_step_error() -> None:
    pipe = typed_pipe()

    @pipe.step
    async def lonely(s: State, item: int) -> None:
        pass

    _, events = await run_one(pipe)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "lonely"
    assert "item" in error.payload
    assert end_data(events).status is PipelineTerminalStatus.FAILED
