"""Bad input: every definition/argument error names the culprit and says how to fix it.

One case per DefinitionError / TypeError / ValueError of spec §4-§6 and the message
fragments of §20, plus our own argument checks (wrong option types and ranges,
which upstream accepted silently and failed on later, or never).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from helpers import assert_helpful, collect, drain
from justpipe import DefinitionError, Meta, Pipe
from justpipe.types import BarrierType, CancellationToken


async def n(s: Any) -> None:
    pass


def child_pipe() -> Pipe[Any, Any]:
    child: Pipe[Any, Any] = Pipe()
    child.step("c")(n)
    return child


Register = Callable[[Pipe[Any, Any]], Any]


# ---------------------------------------------------------------------- decoration time (§4, §6)


async def two_unknown(s: Any, first: Any, second: Any) -> None:
    pass


def hook_with_db(db: Any) -> None:
    pass


def register_duplicate(p: Pipe[Any, Any]) -> None:
    p.step("dup")(n)
    p.step("dup")(n)


DECORATION_ERRORS: list[Any] = [
    pytest.param(register_duplicate, "'dup'", ["already registered"], id="duplicate-name"),
    pytest.param(lambda p: p.step("a", to={"x": "y"})(n), "'a'", ["switch"], id="to-dict"),
    pytest.param(lambda p: p.step("a", to=5)(n), "'a'", ["int"], id="to-int"),
    pytest.param(lambda p: p.step("a", to=[object()])(n), "'a'", ["object"], id="to-list-object"),
    pytest.param(lambda p: p.map("m")(n), "'m'", ["each"], id="map-without-each"),
    pytest.param(lambda p: p.map("m", each=5)(n), "'m'", ["each"], id="map-each-int"),
    pytest.param(lambda p: p.switch("sw")(n), "'sw'", ["to"], id="switch-without-to"),
    pytest.param(
        lambda p: p.switch("sw", to=5)(n), "'sw'", ["dict", "callable"], id="switch-to-int"
    ),
    pytest.param(lambda p: p.switch("sw", to=["a"])(n), "'sw'", ["dict"], id="switch-to-list"),
    pytest.param(lambda p: p.switch("sw", to={1: 5})(n), "'sw'", ["int"], id="switch-route-int"),
    pytest.param(
        lambda p: p.switch("sw", to={1: "a"}, default=5)(n),
        "'sw'",
        ["default"],
        id="switch-default-int",
    ),
    pytest.param(lambda p: p.sub("sb")(n), "'sb'", ["pipeline"], id="sub-without-pipeline"),
    pytest.param(
        lambda p: p.step(two_unknown),
        "two_unknown",
        ["unrecognized parameters", "first", "second"],
        id="too-many-unknown",
    ),
    pytest.param(
        lambda p: p.map("m", each="w")(two_unknown),
        "'m'",
        ["unrecognized parameters"],
        id="map-too-many-unknown",
    ),
    pytest.param(
        lambda p: p.on_startup(hook_with_db),
        "hook_with_db",
        ["unrecognized parameters", "db"],
        id="startup-hook-unknown",
    ),
    pytest.param(
        lambda p: p.on_shutdown(hook_with_db),
        "hook_with_db",
        ["unrecognized parameters"],
        id="shutdown-hook-unknown",
    ),
    pytest.param(
        lambda p: p.on_error(hook_with_db),
        "hook_with_db",
        ["unrecognized parameters"],
        id="global-handler-unknown",
    ),
    pytest.param(
        lambda p: p.step("a", on_error=hook_with_db)(n),
        None,
        ["unrecognized parameters", "db"],
        id="local-handler-unknown",
    ),
    # our own checks: wrong option types and ranges
    pytest.param(
        lambda p: p.step("a", barrier_type="any")(n),
        "'a'",
        ["barrier_type", "BarrierType.ANY"],
        id="barrier-type-string",
    ),
    pytest.param(
        lambda p: p.step("a", barrier_type=1)(n), "'a'", ["barrier_type"], id="barrier-type-int"
    ),
    pytest.param(
        lambda p: p.map("m", each="w", max_concurrency=-1)(n),
        "'m'",
        ["max_concurrency"],
        id="max-concurrency-negative",
    ),
    pytest.param(
        lambda p: p.map("m", each="w", max_concurrency="2")(n),
        "'m'",
        ["max_concurrency"],
        id="max-concurrency-string",
    ),
    pytest.param(
        lambda p: p.map("m", each="w", max_concurrency=1.5)(n),
        "'m'",
        ["max_concurrency"],
        id="max-concurrency-float",
    ),
    pytest.param(
        lambda p: p.map("m", each="w", max_concurrency=True)(n),
        "'m'",
        ["max_concurrency"],
        id="max-concurrency-bool",
    ),
    pytest.param(lambda p: p.step("a", timeout="x")(n), "'a'", ["timeout"], id="timeout-string"),
    pytest.param(lambda p: p.step("a", timeout=-1)(n), "'a'", ["timeout"], id="timeout-negative"),
    pytest.param(lambda p: p.step("a", timeout=True)(n), "'a'", ["timeout"], id="timeout-bool"),
    pytest.param(
        lambda p: p.step("a", barrier_timeout="soon")(n),
        "'a'",
        ["barrier_timeout"],
        id="barrier-timeout-string",
    ),
    pytest.param(
        lambda p: p.step("a", barrier_timeout=-2)(n),
        "'a'",
        ["barrier_timeout"],
        id="barrier-timeout-negative",
    ),
    pytest.param(lambda p: p.step("a", retries="3")(n), "'a'", ["retries"], id="retries-string"),
    pytest.param(lambda p: p.step("a", retries=-1)(n), "'a'", ["retries"], id="retries-negative"),
    pytest.param(
        lambda p: p.step("a", on_error="handler")(n),
        "'a'",
        ["on_error"],
        id="on-error-not-callable",
    ),
    pytest.param(lambda p: p.sub("sb", pipeline=5)(n), "'sb'", ["pipeline"], id="pipeline-int"),
    pytest.param(
        lambda p: p.sub("sb", pipeline="child")(n), "'sb'", ["pipeline"], id="pipeline-string"
    ),
    pytest.param(lambda p: p.map(n), "@pipe.map", ["parentheses"], id="bare-map"),
    pytest.param(lambda p: p.switch(n), "@pipe.switch", ["parentheses"], id="bare-switch"),
    pytest.param(lambda p: p.sub(n), "@pipe.sub", ["parentheses"], id="bare-sub"),
]


@pytest.mark.parametrize(("register", "culprit", "fragments"), DECORATION_ERRORS)
def test_decoration_errors(register: Register, culprit: str | None, fragments: list[str]) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    with pytest.raises(DefinitionError) as info:
        register(pipe)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    assert_helpful(message, culprit)


@pytest.mark.parametrize("decorator", ["switch", "sub"])
def test_bare_decorator_hint_matches_the_decorator(decorator: str) -> None:
    with pytest.raises(DefinitionError) as info:
        getattr(Pipe(), decorator)(n)
    assert "each=" not in str(info.value)


def test_decoration_error_carries_the_step_name() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    with pytest.raises(DefinitionError) as info:
        pipe.step("named", timeout="x")(n)
    assert info.value.step_name == "named"


def test_failed_registration_leaves_the_pipe_unchanged() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    with pytest.raises(DefinitionError):
        pipe.step("a", to="b", timeout=-1)(n)
    assert list(pipe.steps()) == []
    assert pipe.topology == {}


@pytest.mark.parametrize("value", [5, None, "text"])
def test_decorating_a_non_callable_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="function"):
        Pipe().step("x")(value)


def test_unnamable_step_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="step name"):
        Pipe().step(5)(n)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- Pipe(...) arguments


@pytest.mark.parametrize(
    ("options", "error", "culprit"),
    [
        ({"queue_size": -1}, ValueError, "queue_size"),
        ({"queue_size": "10"}, TypeError, "queue_size"),
        ({"queue_size": 1.5}, TypeError, "queue_size"),
        ({"max_retries": 0}, ValueError, "max_retries"),
        ({"max_retries": "3"}, TypeError, "max_retries"),
        ({"max_map_items": 0}, ValueError, "max_map_items"),
        ({"max_map_items": "many"}, TypeError, "max_map_items"),
        ({"flush_interval": 0}, ValueError, "flush_interval"),
        ({"name": 5}, TypeError, "name"),
        ({"name": ""}, ValueError, "name"),
        ({"cancellation_token": "token"}, TypeError, "cancellation_token"),
        ({"failure_classification": {}}, TypeError, "failure_classification"),
        ({"metadata": ["a"]}, TypeError, "metadata"),
    ],
)
def test_pipe_argument_errors(
    options: dict[str, Any], error: type[Exception], culprit: str
) -> None:
    with pytest.raises(error) as info:
        Pipe(**options)
    assert_helpful(str(info.value), culprit)


def test_middleware_must_be_a_list() -> None:
    with pytest.raises(TypeError) as info:
        Pipe(middleware=5)  # type: ignore[arg-type]
    assert_helpful(str(info.value), "middleware")


def test_queue_size_zero_and_valid_values_are_accepted() -> None:
    assert Pipe(queue_size=0).queue_size == 0
    Pipe(max_retries=1, max_map_items=1, flush_interval=1, cancellation_token=CancellationToken())


# --------------------------------------------------------------------------- run(...) arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "culprit"),
    [
        ({"queue_size": -1}, ValueError, "queue_size"),
        ({"queue_size": "1"}, TypeError, "queue_size"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": "x"}, TypeError, "timeout"),
    ],
)
async def test_run_argument_errors(
    kwargs: dict[str, Any], error: type[Exception], culprit: str
) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(n)
    with pytest.raises(error) as info:
        await drain(pipe.run({}, **kwargs))
    assert_helpful(str(info.value), culprit)


# --------------------------------------------------------------------------- registration helpers


def test_add_middleware_requires_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        Pipe().add_middleware(5)  # type: ignore[arg-type]


def test_add_event_hook_requires_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        Pipe().add_event_hook("hook")  # type: ignore[arg-type]


def test_add_observer_lists_missing_hooks() -> None:
    class Partial:
        async def on_event(self, *a: Any) -> None: ...

    with pytest.raises(TypeError, match="missing required hooks") as info:
        Pipe().add_observer(Partial())  # type: ignore[arg-type]
    message = str(info.value)
    for name in ("on_pipeline_start", "on_pipeline_end", "on_pipeline_error"):
        assert name in message
    assert "on_event," not in message
    assert not message.endswith("on_event")


def test_add_observer_requires_async_methods() -> None:
    class Sync:
        async def on_pipeline_start(self, *a: Any) -> None: ...
        def on_event(self, *a: Any) -> None: ...
        async def on_pipeline_end(self, *a: Any) -> None: ...
        async def on_pipeline_error(self, *a: Any) -> None: ...

    with pytest.raises(TypeError, match=r"on_event.*async def") as info:
        Pipe().add_observer(Sync())  # type: ignore[arg-type]
    assert "Sync.on_event" in str(info.value)


# --------------------------------------------------------------------------- validation (§6)


def build_unknown_target(p: Pipe[Any, Any]) -> None:
    p.step("a", to="fetch_dta")(n)
    p.step("fetch_data")(n)


def build_worker_trap(p: Pipe[Any, Any]) -> None:
    p.map("m", each="w")(n)
    p.step("w", to="x")(n)
    p.step("x")(n)


def build_cycle(p: Pipe[Any, Any]) -> None:
    p.step("r", to="a")(n)
    p.step("a", to="b")(n)
    p.step("b", to="a")(n)


def build_no_roots(p: Pipe[Any, Any]) -> None:
    p.step("x", to="y")(n)
    p.step("y", to="x")(n)


def build_join(p: Pipe[Any, Any]) -> None:
    p.step("a", to="jn")(n)
    p.step("b", to="jn")(n)
    p.step("jn")(n)


VALIDATION_ERRORS: list[Any] = [
    pytest.param(
        build_unknown_target,
        None,
        "'a'",
        ["targets unknown step 'fetch_dta'", "Available steps:", "Did you mean"],
        id="unknown-target",
    ),
    pytest.param(build_worker_trap, None, "'w'", ["'m'"], id="worker-with-transitions"),
    pytest.param(
        lambda p: (p.map("m", each="ghost")(n), p.step("x")(n)),
        None,
        "'m'",
        ["(map) targets unknown step", "ghost"],
        id="unknown-map-worker",
    ),
    pytest.param(
        lambda p: (p.switch("sw", to={1: "x"}, default="ghost")(n), p.step("x")(n)),
        None,
        "'sw'",
        ["(switch) has unknown default route", "ghost"],
        id="unknown-switch-default",
    ),
    pytest.param(
        lambda p: (p.switch("sw", to={1: "ghost"})(n), p.step("x")(n)),
        None,
        "'sw'",
        ["routes to unknown step", "Available steps:", "ghost"],
        id="unknown-switch-route",
    ),
    pytest.param(build_no_roots, None, None, ["no entry points found"], id="no-entry-points"),
    pytest.param(
        lambda p: p.step("a")(n),
        "ghost",
        "ghost",
        ["run(start=...) references unknown step"],
        id="unknown-start",
    ),
    pytest.param(
        lambda p: (p.step("a")(n), p.step("b")(n)),
        None,
        None,
        ["Multiple root steps detected: a, b"],
        id="multiple-roots",
    ),
    pytest.param(
        build_cycle, None, None, ["Circular dependency detected: a -> b -> a"], id="cycle"
    ),
    pytest.param(
        lambda p: (p.step("r")(n), p.step("x", to="y")(n), p.step("y", to="x")(n)),
        None,
        None,
        ["Unreachable steps detected: x, y"],
        id="unreachable",
    ),
    pytest.param(
        build_join,
        "b",
        "'jn'",
        ["requires ALL parents", "cannot reach parent(s): a"],
        id="start-scope-barrier",
    ),
]


@pytest.mark.parametrize(("build", "start", "culprit", "fragments"), VALIDATION_ERRORS)
async def test_validation_errors(
    build: Register, start: str | None, culprit: str | None, fragments: list[str]
) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    build(pipe)
    with pytest.raises(DefinitionError) as direct:
        pipe.validate(start=start)
    with pytest.raises(DefinitionError) as at_run:
        await collect(pipe, start=start)
    assert str(direct.value) == str(at_run.value)
    message = str(direct.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    assert_helpful(message, culprit)


# --------------------------------------------------------------------------- Meta (§12)


@dataclasses.dataclass
class TwoMeta:
    first: Meta | None = None
    second: Meta | None = None


@dataclasses.dataclass(frozen=True)
class FrozenMeta:
    meta: Meta | None = None


@pytest.mark.parametrize(
    ("context", "culprit", "fragment"),
    [(TwoMeta(), "TwoMeta", "Only one Meta field"), (FrozenMeta(), "FrozenMeta", "frozen")],
)
async def test_meta_context_errors(context: Any, culprit: str, fragment: str) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(n)
    with pytest.raises(DefinitionError, match=fragment) as info:
        await collect(pipe, {}, context)
    assert_helpful(str(info.value), culprit)


# --------------------------------------------------------------------------- freezing (§3, §20)


async def test_registering_after_a_run_says_it_is_frozen_and_what_to_do() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(n)
    await collect(pipe)
    with pytest.raises(RuntimeError, match="frozen after first run") as info:
        pipe.step("b")(n)
    assert_helpful(str(info.value), "'b'")


def test_barrier_type_enum_values_are_accepted() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", barrier_type=BarrierType.ANY)(n)
    pipe.step("b", barrier_type=BarrierType.ALL)(n)
    pipe.step("c", barrier_type=None)(n)
