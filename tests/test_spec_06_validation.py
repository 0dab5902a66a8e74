"""Graph validation at `validate()` and at the start of every run (spec §6)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from helpers import collect, end_data, stages
from justpipe import DefinitionError, EventType, Meta, Pipe
from justpipe.observability import Observer
from justpipe.types import BarrierType, PipelineTerminalStatus, PipelineValidationWarning

Build = Callable[[Pipe[Any, Any]], object]


async def n(s: Any) -> None:
    pass


def pipe_of(build: Build, **options: Any) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(**options)
    build(pipe)
    return pipe


def validation_error(build: Build, start: str | None = None, **options: Any) -> str:
    with pytest.raises(DefinitionError) as info:
        pipe_of(build, **options).validate(start=start)
    return str(info.value)


def validation_warnings(build: Build, start: str | None = None, **options: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe_of(build, **options).validate(start=start)
    assert all(issubclass(w.category, PipelineValidationWarning) for w in caught)
    return [str(w.message) for w in caught]


# --------------------------------------------------------------------------- 1 unknown targets


def test_unknown_target_names_the_step_lists_steps_and_suggests_a_close_match() -> None:
    message = validation_error(lambda p: (p.step("a", to="fetch_dta")(n), p.step("fetch_data")(n)))
    assert "Step 'a' targets unknown step 'fetch_dta'" in message
    assert "Available steps: a, fetch_data" in message
    assert "Did you mean 'fetch_data'?" in message


def test_unknown_target_without_a_close_match_hints_at_defining_it() -> None:
    message = validation_error(lambda p: (p.step("a", to="zzz")(n), p.step("fetch_data")(n)))
    assert "targets unknown step 'zzz'" in message
    assert "Did you mean" not in message
    assert "@pipe.step" in message


# --------------------------------------------------------------------------- 2 maps and switches


def test_map_worker_with_transitions_is_rejected() -> None:
    message = validation_error(
        lambda p: (p.map("m", each="w")(n), p.step("w", to="x")(n), p.step("x")(n))
    )
    assert "'w'" in message
    assert "'m'" in message
    assert "to=" in message
    assert "sub" in message


def test_unknown_map_worker() -> None:
    message = validation_error(lambda p: (p.map("m", each="nope")(n), p.step("other")(n)))
    assert "Step 'm' (map) targets unknown step 'nope'" in message


def test_unknown_switch_default() -> None:
    message = validation_error(
        lambda p: (p.switch("sw", to={1: "ok"}, default="nope")(n), p.step("ok")(n))
    )
    assert "(switch) has unknown default route" in message
    assert "nope" in message


def test_unknown_switch_route() -> None:
    message = validation_error(
        lambda p: (p.switch("sw", to={1: "fetch_dta"})(n), p.step("fetch_data")(n))
    )
    assert "routes to unknown step" in message
    assert "fetch_dta" in message
    assert "Available steps:" in message


def test_callable_router_targets_are_not_validated() -> None:
    assert validation_warnings(lambda p: p.switch("sw", to=lambda v: "nowhere")(n)) == []


def test_stop_route_is_not_an_unknown_step() -> None:
    from justpipe import Stop

    assert (
        validation_warnings(lambda p: (p.switch("sw", to={1: Stop, 2: "x"})(n), p.step("x")(n)))
        == []
    )


# --------------------------------------------------------------------------- 3/4 entry points


def test_no_entry_points() -> None:
    message = validation_error(lambda p: (p.step("x", to="y")(n), p.step("y", to="x")(n)))
    assert "no entry points found" in message
    assert "Circular" in message


def test_unknown_start() -> None:
    message = validation_error(lambda p: p.step("a")(n), start="zz")
    assert "run(start=...) references unknown step" in message
    assert "zz" in message


def test_start_accepts_the_step_function() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    async def a(s: Any) -> None:
        pass

    @pipe.step
    async def b(s: Any) -> None:
        pass

    pipe.validate(start=b)


# --------------------------------------------------------------------------- 5 multiple roots


def test_multiple_roots_are_listed_sorted() -> None:
    message = validation_error(lambda p: (p.step("c")(n), p.step("a")(n), p.step("b")(n)))
    assert "Multiple root steps detected: a, b, c" in message


def test_multiple_roots_are_fine_with_a_start() -> None:
    def build(p: Pipe[Any, Any]) -> None:
        p.step("c")(n)
        p.step("a")(n)

    assert validation_warnings(build, start="a") == []


# --------------------------------------------------------------------------- 6 cycles


@pytest.mark.parametrize(
    ("build", "path"),
    [
        (
            lambda p: (p.step("r", to="a")(n), p.step("a", to="b")(n), p.step("b", to="a")(n)),
            "a -> b -> a",
        ),
        (lambda p: (p.step("r", to="a")(n), p.step("a", to="a")(n)), "a -> a"),
    ],
)
def test_cycles_are_reported_with_their_path(build: Build, path: str) -> None:
    message = validation_error(build)
    assert f"Circular dependency detected: {path}" in message


def test_cycle_through_a_switch_route_is_a_static_cycle() -> None:
    message = validation_error(
        lambda p: (p.step("r", to="a")(n), p.step("a", to="sw")(n), p.switch("sw", to={1: "a"})(n))
    )
    assert "Circular dependency detected: a -> sw -> a" in message


def test_cycle_detection_runs_from_start() -> None:
    message = validation_error(
        lambda p: (p.step("x", to="y")(n), p.step("y", to="x")(n)), start="x"
    )
    assert "Circular dependency detected: x -> y -> x" in message


# --------------------------------------------------------------------------- 7 reachability


def test_unreachable_steps_are_listed() -> None:
    message = validation_error(
        lambda p: (p.step("r")(n), p.step("x", to="y")(n), p.step("y", to="x")(n))
    )
    assert "Unreachable steps detected: x, y" in message


def test_start_skips_reachability() -> None:
    def build(p: Pipe[Any, Any]) -> None:
        p.step("a", to="b")(n)
        p.step("b")(n)
        p.step("island")(n)

    assert validation_warnings(build, start="b") == []


# --------------------------------------------------------------------------- 8 start scope barriers


def join_build(parent_kind: str, barrier: BarrierType = BarrierType.ALL) -> Build:
    def build(p: Pipe[Any, Any]) -> None:
        if parent_kind == "step":
            p.step("a", to="jn")(n)
        elif parent_kind == "switch":
            p.switch("a", to={1: "jn"})(n)
        else:
            p.map("a", each="jn")(n)
        p.step("b", to="jn")(n)
        p.step("jn", barrier_type=barrier)(n)

    return build


def test_strict_start_scope_all_barrier_is_an_error() -> None:
    message = validation_error(join_build("step"), start="b")
    assert "requires ALL parents" in message
    assert "cannot reach parent(s): a" in message


@pytest.mark.parametrize("parent_kind", ["step", "switch", "map"])
def test_non_strict_start_scope_all_barrier_warns(parent_kind: str) -> None:
    (message,) = validation_warnings(join_build(parent_kind), start="b", strict=False)
    assert "Step 'jn' requires ALL parents [a, b]" in message
    assert "cannot reach parent(s): a" in message


def test_any_barrier_is_not_a_start_scope_problem() -> None:
    assert validation_warnings(join_build("step", BarrierType.ANY), start="b") == []


async def test_unreachable_all_parent_means_the_join_silently_never_runs() -> None:
    pipe = pipe_of(join_build("step"), strict=False)
    with pytest.warns(PipelineValidationWarning, match="cannot reach parent"):
        events = await collect(pipe, start="b")
    assert stages(events, EventType.STEP_START) == ["b"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


# --------------------------------------------------------------------------- 9 shared state warning


@dataclasses.dataclass
class MutableState:
    items: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class FrozenState:
    items: list[int] = dataclasses.field(default_factory=list)


def map_build(p: Pipe[Any, Any]) -> None:
    p.map("m", each="w")(lambda s: [1])
    p.step("w")(n)


def test_map_with_a_mutable_dataclass_state_warns_on_every_validation() -> None:
    pipe = pipe_of(map_build, state_type=MutableState)
    for _ in range(2):
        with pytest.warns(PipelineValidationWarning):
            pipe.validate()


@pytest.mark.parametrize("state_type", [FrozenState, dict, None])
def test_no_shared_state_warning_for_other_state_types(state_type: Any) -> None:
    assert validation_warnings(map_build, state_type=state_type) == []


def test_no_shared_state_warning_without_a_map() -> None:
    assert validation_warnings(lambda p: p.step("a")(n), state_type=MutableState) == []


# --------------------------------------------------------------------------- order of checks


def test_unknown_targets_are_reported_before_cycles_and_roots() -> None:
    message = validation_error(
        lambda p: (p.step("x", to=["y", "ghost"])(n), p.step("y", to="x")(n))
    )
    assert "targets unknown step 'ghost'" in message


def test_empty_pipe_skips_validation() -> None:
    Pipe().validate()
    Pipe().validate(start="anything")


# --------------------------------------------------------------------------- when run() raises


class CountingObserver(Observer):
    def __init__(self) -> None:
        self.calls = 0

    async def on_pipeline_start(self, *args: Any) -> None:
        self.calls += 1

    async def on_event(self, *args: Any) -> None:
        self.calls += 1


async def test_definition_errors_surface_on_the_first_anext_without_side_effects() -> None:
    observer = CountingObserver()
    hooks: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.add_observer(observer)
    pipe.on_startup(lambda: hooks.append("startup"))
    pipe.on_shutdown(lambda: hooks.append("shutdown"))
    pipe.step("a", to="ghost")(n)
    stream = pipe.run({})
    with pytest.raises(DefinitionError, match="ghost"):
        await stream.__anext__()
    assert observer.calls == 0
    assert hooks == []


def test_creating_the_run_generator_does_not_validate() -> None:
    pipe = pipe_of(lambda p: p.step("a", to="ghost")(n))
    stream = pipe.run({})
    assert hasattr(stream, "__anext__")


@dataclasses.dataclass
class TwoMetaContext:
    first: Meta | None = None
    second: Meta | None = None


@dataclasses.dataclass(frozen=True)
class FrozenMetaContext:
    meta: Meta | None = None


@pytest.mark.parametrize(
    ("context", "fragment"),
    [(TwoMetaContext(), "Only one Meta field"), (FrozenMetaContext(), "frozen")],
)
async def test_bad_meta_context_raises_before_any_event(context: Any, fragment: str) -> None:
    observer = CountingObserver()
    pipe = pipe_of(lambda p: p.step("a")(n))
    pipe.add_observer(observer)
    stream = pipe.run({}, context)
    with pytest.raises(DefinitionError, match=fragment):
        await stream.__anext__()
    assert observer.calls == 0


async def test_validation_runs_on_every_run() -> None:
    pipe = pipe_of(map_build, state_type=MutableState)
    for _ in range(2):
        with pytest.warns(PipelineValidationWarning):
            await collect(pipe, MutableState())


def test_validation_error_names_the_offending_step() -> None:
    pipe = pipe_of(lambda p: p.step("a", to="ghost")(n))
    with pytest.raises(DefinitionError) as info:
        pipe.validate()
    assert info.value.step_name in {"a", "system"}
