"""Every public parameter is checked where the user wrote it (issue 20, defect 6).

One table per entry point: `Pipe(...)`, the decorators and hooks, `run()`, `resume()`
and the executors. A rejected value raises TypeError / ValueError / DefinitionError at
the call that received it (never later, inside the event stream), naming the
parameter (and the step) and saying what to pass; the values justpipe 0.12 accepted
and did something sensible with (an infinite timeout, `1` as a flag, a huge
`queue_size`) are still accepted. The first tests are the cases the issue found.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import typing
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NewType, TypeVar

import pytest

from helpers import assert_helpful, collect, end_data
from justpipe import DefinitionError, Pipe
from justpipe.executors import DaskExecutor, ProcessExecutor, RayExecutor, ThreadExecutor
from justpipe.types import PipelineTerminalStatus

tenacity = pytest.importorskip("tenacity")


async def step(state: Any) -> None:
    pass


async def stream(state: Any) -> AsyncIterator[int]:
    yield 1


def two_steps(**options: Any) -> Pipe[Any, None]:
    """a -> b, with `options` on a."""
    pipe: Pipe[Any, None] = Pipe(dict, name="checked")
    options.setdefault("to", "b")
    pipe.step("a", **options)(step)
    pipe.step("b")(step)
    return pipe


# --------------------------------------------------------------------------- the cases


def test_a_nan_step_timeout_is_refused_at_the_decorator() -> None:
    with pytest.raises(DefinitionError, match="NaN") as info:
        two_steps(timeout=math.nan)
    assert info.value.step_name == "a"
    assert_helpful(str(info.value), "timeout")


def test_a_nan_run_timeout_is_refused_at_the_call() -> None:
    pipe = two_steps()
    with pytest.raises(ValueError, match="NaN") as info:
        pipe.run({}, timeout=math.nan)
    assert_helpful(str(info.value), "run(timeout=...)")


@pytest.mark.parametrize("where", ["pipe", "run"])
async def test_a_queue_size_beyond_the_channel_runs_unbounded(where: str) -> None:
    """0.12 took any int (an asyncio.Queue); the compiled channel counts in ssize_t."""
    pipe: Pipe[Any, None] = Pipe(dict, queue_size=10**30) if where == "pipe" else Pipe(dict)
    pipe.step("a")(step)
    options = {"queue_size": 10**30} if where == "run" else {}
    events = await collect(pipe, {}, **options)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


def test_unknown_tenacity_arguments_are_refused_at_the_decorator() -> None:
    with pytest.raises(DefinitionError, match="'bogus'") as info:
        two_steps(retries={"bogus": 1})
    assert info.value.step_name == "a"
    assert_helpful(str(info.value), "retries")


@pytest.mark.parametrize("value", ["false", "no", "0", "", 2, 1.0, [], "True"])
def test_persist_takes_a_bool_not_a_string(value: Any) -> None:
    with pytest.raises(TypeError) as info:
        Pipe(persist=value)
    assert_helpful(str(info.value), "Pipe(persist=...)")


@pytest.mark.parametrize("to", [0, False, "", [""], ["b", ""], 1.5, {"b"}])
def test_a_falsy_or_empty_to_is_refused(to: Any) -> None:
    with pytest.raises(DefinitionError) as info:
        two_steps(to=to)
    assert info.value.step_name == "a"
    assert_helpful(str(info.value), "to=")


def test_an_empty_step_name_is_refused() -> None:
    with pytest.raises(DefinitionError) as info:
        Pipe().step("")(step)
    assert_helpful(str(info.value), "step")


# --------------------------------------------------------------------------- Pipe(...)


class State:
    pass


PIPE_REJECTED: list[Any] = [
    ({"state_type": {}}, TypeError, "state_type"),
    ({"state_type": State()}, TypeError, "state_type"),
    ({"state_type": "orders"}, TypeError, "Pipe(name='orders')"),
    ({"context_type": 5}, TypeError, "context_type"),
    ({"name": ""}, ValueError, "name"),
    ({"name": 5}, TypeError, "name"),
    ({"strict": "no"}, TypeError, "strict"),
    ({"strict": None}, TypeError, "strict"),
    ({"allow_multi_root": "yes"}, TypeError, "allow_multi_root"),
    ({"middleware": 5}, TypeError, "middleware"),
    ({"middleware": [5]}, TypeError, "middleware"),
    ({"queue_size": -1}, ValueError, "queue_size"),
    ({"queue_size": 1.5}, TypeError, "queue_size"),
    ({"queue_size": True}, TypeError, "queue_size"),
    ({"queue_size": "10"}, TypeError, "queue_size"),
    ({"max_map_items": 0}, ValueError, "max_map_items"),
    ({"max_map_items": math.inf}, TypeError, "max_map_items"),
    ({"debug": "false"}, TypeError, "debug"),
    ({"cancellation_token": "token"}, TypeError, "cancellation_token"),
    ({"failure_classification": {}}, TypeError, "failure_classification"),
    ({"metadata": ["a"]}, TypeError, "metadata"),
    ({"persist": "false"}, TypeError, "persist"),
    ({"flush_interval": 0}, ValueError, "flush_interval"),
    ({"flush_interval": 2.5}, TypeError, "flush_interval"),
    ({"max_retries": 0}, ValueError, "max_retries"),
    ({"max_retries": True}, TypeError, "max_retries"),
    ({"executors": [ThreadExecutor()]}, TypeError, "executors"),
    ({"executors": {"": ThreadExecutor()}}, TypeError, "executor names"),
    ({"executors": {"io": "thread"}}, TypeError, "'io'"),
]


@pytest.mark.parametrize(("options", "error", "culprit"), PIPE_REJECTED)
def test_pipe_rejects(options: dict[str, Any], error: type[Exception], culprit: str) -> None:
    with pytest.raises(error) as info:
        Pipe(**options)
    assert_helpful(str(info.value), culprit)


T = TypeVar("T")
UserId = NewType("UserId", int)

PIPE_ACCEPTED: list[Any] = [
    {"state_type": dict[str, int]},
    {"state_type": typing.Optional[State]},  # noqa: UP045 - the typing form itself
    {"state_type": State | None},
    {"state_type": Any},
    {"state_type": T},
    {"state_type": UserId},
    {"context_type": type(None)},
    {"strict": 0, "allow_multi_root": 1},
    {"debug": False, "persist": 0},
    {"queue_size": 0, "max_map_items": 10**30, "flush_interval": 10**30, "max_retries": 10**30},
    {"middleware": []},
]


@pytest.mark.parametrize("options", PIPE_ACCEPTED)
def test_pipe_accepts(options: dict[str, Any]) -> None:
    Pipe(**options)


def test_persist_zero_and_one_work_as_0_12_did(tmp_path: Path) -> None:
    assert Pipe(persist=0).persist is False
    assert Pipe(persist=1).persist is True


# --------------------------------------------------------------------------- decorators


class Observerish:
    pass


def hook_stream(state: Any) -> Any:
    yield 1


async def async_hook_stream(state: Any) -> AsyncIterator[int]:
    yield 1


Register = Callable[[Pipe[Any, Any]], Any]

DECORATOR_REJECTED: list[Any] = [
    # step name and edges
    pytest.param(lambda p: p.step("")(step), "''", id="name-empty"),
    pytest.param(lambda p: p.step("a", to=0)(step), "to=", id="to-zero"),
    pytest.param(lambda p: p.step("a", to=False)(step), "to=", id="to-false"),
    pytest.param(lambda p: p.step("a", to="")(step), "to=", id="to-empty"),
    pytest.param(lambda p: p.step("a", to=["b", ""])(step), "to=", id="to-list-empty"),
    pytest.param(lambda p: p.step("a", to={"b": 1})(step), "switch", id="to-dict"),
    # timeouts
    pytest.param(lambda p: p.step("a", timeout=math.nan)(step), "timeout", id="timeout-nan"),
    pytest.param(lambda p: p.step("a", timeout=0)(step), "timeout", id="timeout-zero"),
    pytest.param(lambda p: p.step("a", timeout=-math.inf)(step), "timeout", id="timeout-minf"),
    pytest.param(lambda p: p.step("a", timeout="5")(step), "timeout", id="timeout-str"),
    pytest.param(lambda p: p.step("a", timeout=True)(step), "timeout", id="timeout-bool"),
    pytest.param(
        lambda p: p.step("a", barrier_timeout=math.nan)(step),
        "barrier_timeout",
        id="barrier-timeout-nan",
    ),
    pytest.param(
        lambda p: p.step("a", barrier_timeout=-1)(step),
        "barrier_timeout",
        id="barrier-timeout-negative",
    ),
    pytest.param(lambda p: p.step("a", barrier_type="all")(step), "barrier_type", id="btype"),
    pytest.param(lambda p: p.step("a", on_error="skip")(step), "on_error", id="on-error"),
    # retries and the retry middleware's options
    pytest.param(lambda p: p.step("a", retries=-1)(step), "retries", id="retries-negative"),
    pytest.param(lambda p: p.step("a", retries=1.5)(step), "retries", id="retries-float"),
    pytest.param(lambda p: p.step("a", retries=True)(step), "retries", id="retries-bool"),
    pytest.param(lambda p: p.step("a", retries="3")(step), "retries", id="retries-str"),
    pytest.param(lambda p: p.step("a", retries={"bogus": 1})(step), "bogus", id="retries-key"),
    pytest.param(
        lambda p: p.step("a", retries={"stop": 3})(step), "stop", id="retries-stop-not-callable"
    ),
    pytest.param(
        lambda p: p.step("a", retries={"reraise": "no"})(step), "reraise", id="retries-reraise"
    ),
    pytest.param(
        lambda p: p.step("a", retries=2, retry_wait_min="a")(step),
        "retry_wait_min",
        id="wait-min-str",
    ),
    pytest.param(
        lambda p: p.step("a", retries=2, retry_wait_min=-1)(step),
        "retry_wait_min",
        id="wait-min-negative",
    ),
    pytest.param(
        lambda p: p.step("a", retries=2, retry_wait_max=math.nan)(step),
        "retry_wait_max",
        id="wait-max-nan",
    ),
    pytest.param(
        lambda p: p.step("a", retries=2, retry_reraise="false")(step),
        "retry_reraise",
        id="reraise-str",
    ),
    # executors and on_result=
    pytest.param(lambda p: p.step("a", executor="")(step), "executor", id="executor-empty"),
    pytest.param(lambda p: p.step("a", on_result=5)(step), "on_result", id="on-result"),
    pytest.param(lambda p: p.map("m", each="w", executor="x")(step), "executor", id="map-exec"),
    # map, switch, sub
    pytest.param(lambda p: p.map("m", each="")(step), "each=", id="each-empty"),
    pytest.param(lambda p: p.map("m", each=5)(step), "each", id="each-int"),
    pytest.param(
        lambda p: p.map("m", each="w", max_concurrency=-2)(step),
        "max_concurrency",
        id="max-concurrency-negative",
    ),
    pytest.param(
        lambda p: p.map("m", each="w", max_concurrency=math.inf)(step),
        "max_concurrency",
        id="max-concurrency-inf",
    ),
    pytest.param(lambda p: p.switch("s", to={1: ""})(step), "routes to ''", id="route-empty"),
    pytest.param(lambda p: p.switch("s", to={1: 5})(step), "routing target", id="route-int"),
    pytest.param(
        lambda p: p.switch("s", to={1: "a"}, default="")(step), "default=", id="default-empty"
    ),
    pytest.param(lambda p: p.switch("s", to="a")(step), "dict", id="switch-to-str"),
    pytest.param(lambda p: p.sub("c", pipeline=Observerish())(step), "pipeline", id="pipeline"),
    # hooks
    pytest.param(lambda p: p.on_startup(hook_stream), "generator", id="startup-generator"),
    pytest.param(
        lambda p: p.on_shutdown(async_hook_stream), "generator", id="shutdown-async-generator"
    ),
    pytest.param(lambda p: p.on_error(hook_stream), "generator", id="on-error-generator"),
]


@pytest.mark.parametrize(("register", "culprit"), DECORATOR_REJECTED)
def test_decorators_reject(register: Register, culprit: str) -> None:
    pipe: Pipe[Any, Any] = Pipe(dict)
    with pytest.raises((DefinitionError, TypeError)) as info:
        register(pipe)
    assert_helpful(str(info.value), culprit)
    if isinstance(info.value, DefinitionError):
        assert info.value.step_name in str(info.value)


DECORATOR_NOT_CALLABLE: list[Any] = [
    pytest.param(lambda p: p.on_startup(5), id="on-startup"),
    pytest.param(lambda p: p.on_shutdown("x"), id="on-shutdown"),
    pytest.param(lambda p: p.on_error(None), id="on-error"),
    pytest.param(lambda p: p.add_middleware(5), id="add-middleware"),
    pytest.param(lambda p: p.add_event_hook("hook"), id="add-event-hook"),
    pytest.param(lambda p: p.add_observer(Observerish()), id="add-observer"),
    pytest.param(lambda p: p.step("a")(5), id="step-body"),
]


@pytest.mark.parametrize("register", DECORATOR_NOT_CALLABLE)
def test_hooks_and_helpers_reject_what_they_cannot_call(register: Register) -> None:
    with pytest.raises(TypeError) as info:
        register(Pipe(dict))
    assert_helpful(str(info.value), None)


DECORATOR_ACCEPTED: list[Any] = [
    pytest.param({"timeout": math.inf}, id="timeout-inf"),
    pytest.param({"barrier_timeout": math.inf}, id="barrier-timeout-inf"),
    pytest.param({"timeout": 1e300}, id="timeout-huge"),
    pytest.param({"to": None}, id="to-none"),
    pytest.param({"to": []}, id="to-list-empty"),
    pytest.param({"retries": 0}, id="retries-zero"),
    pytest.param(
        {"retries": {"stop": tenacity.stop_after_attempt(2), "reraise": True}}, id="retries-dict"
    ),
    pytest.param({"retries": {"stop": lambda _: False, "reraise": 1}}, id="retries-callable"),
    pytest.param(
        {"retries": 2, "retry_wait_min": 0, "retry_wait_max": math.inf, "retry_reraise": 1},
        id="retry-options",
    ),
    pytest.param({"custom_option": object()}, id="unknown-kwarg-kept"),
]


@pytest.mark.parametrize("options", DECORATOR_ACCEPTED)
async def test_decorators_accept(options: dict[str, Any]) -> None:
    pipe: Pipe[Any, None] = Pipe(dict, allow_multi_root=True)
    pipe.step("a", **options)(step)
    pipe.step("b")(step)
    events = await collect(pipe, {})
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_unbounded_map_spellings_are_accepted() -> None:
    pipe: Pipe[Any, None] = Pipe(dict)

    @pipe.map(each="w", max_concurrency=0)
    async def m(state: Any) -> list[int]:
        return [1, 2]

    @pipe.step
    async def w(item: int) -> None:
        pass

    assert end_data(await collect(pipe, {})).status is PipelineTerminalStatus.SUCCESS


# --------------------------------------------------------------------------- run(...)

RUN_REJECTED: list[Any] = [
    ({"timeout": math.nan}, ValueError, "run(timeout=...)"),
    ({"timeout": 0}, ValueError, "run(timeout=...)"),
    ({"timeout": -1}, ValueError, "run(timeout=...)"),
    ({"timeout": "10"}, TypeError, "run(timeout=...)"),
    ({"timeout": True}, TypeError, "run(timeout=...)"),
    ({"queue_size": -1}, ValueError, "run(queue_size=...)"),
    ({"queue_size": 2.0}, TypeError, "run(queue_size=...)"),
    ({"queue_size": False}, TypeError, "run(queue_size=...)"),
    ({"start": ""}, ValueError, "run(start=...)"),
    ({"start": 5}, TypeError, "run(start=...)"),
    ({"executors": ["x"]}, TypeError, "run(executors=...)"),
    ({"executors": {"io": 5}}, TypeError, "'io'"),
]


@pytest.mark.parametrize(("options", "error", "culprit"), RUN_REJECTED)
def test_run_rejects_at_the_call(
    options: dict[str, Any], error: type[Exception], culprit: str
) -> None:
    pipe = two_steps()
    with pytest.raises(error) as info:
        pipe.run({}, **options)  # not iterated: the call itself refuses
    assert_helpful(str(info.value), culprit)


@pytest.mark.parametrize(
    "options",
    [{"timeout": math.inf}, {"timeout": 1e300}, {"queue_size": 0}, {"start": step}],
)
async def test_run_accepts(options: dict[str, Any]) -> None:
    pipe: Pipe[Any, None] = Pipe(dict)
    pipe.step("step")(step)
    assert end_data(await collect(pipe, {}, **options)).status is PipelineTerminalStatus.SUCCESS


def test_validate_takes_flags() -> None:
    pipe = two_steps()
    with pytest.raises(TypeError) as info:
        pipe.validate(strict="no")
    assert_helpful(str(info.value), "validate(strict=...)")
    pipe.validate(strict=False, allow_multi_root=True)


# --------------------------------------------------------------------------- resume(...)


@pytest.fixture
def durable_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pipe[Any, None]:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    pipe: Pipe[Any, None] = Pipe(dict, name="durable-checks", durable=True)
    pipe.step("a")(step)
    return pipe


RESUME_REJECTED: list[Any] = [
    ({"run_id": ""}, TypeError, "run_id"),
    ({"run_id": 5}, TypeError, "run_id"),
    ({"force": "yes"}, TypeError, "force"),
    ({"timeout": math.nan}, ValueError, "resume(timeout=...)"),
    ({"queue_size": -5}, ValueError, "resume(queue_size=...)"),
    ({"executors": 5}, TypeError, "resume(executors=...)"),
    ({"start": "a"}, ValueError, "start"),
]


@pytest.mark.parametrize(("options", "error", "culprit"), RESUME_REJECTED)
def test_resume_rejects_at_the_call(
    durable_pipe: Pipe[Any, None],
    options: dict[str, Any],
    error: type[Exception],
    culprit: str,
) -> None:
    options = dict(options)  # the table is shared by both backends' runs
    run_id = options.pop("run_id", "0123abcd")
    with pytest.raises(error) as info:
        durable_pipe.resume(run_id, **options)
    assert_helpful(str(info.value), culprit)


def test_resume_of_a_plain_pipe_says_how_to_make_it_durable() -> None:
    with pytest.raises(ValueError, match="durable=True"):
        two_steps().resume("0123abcd")


# --------------------------------------------------------------------------- executors

EXECUTOR_REJECTED: list[Any] = [
    (lambda: ThreadExecutor(0), ValueError, "max_workers"),
    (lambda: ThreadExecutor(True), TypeError, "max_workers"),
    (lambda: ThreadExecutor(2.0), TypeError, "max_workers"),
    (lambda: ThreadExecutor(thread_name_prefix=5), TypeError, "thread_name_prefix"),
    (lambda: ThreadExecutor(trace_hook=5), TypeError, "trace_hook"),
    (lambda: ProcessExecutor(0), ValueError, "max_workers"),
    (lambda: ProcessExecutor(-1), ValueError, "max_workers"),
    (lambda: ProcessExecutor("2"), TypeError, "max_workers"),
    (lambda: ProcessExecutor(cancel_grace=math.nan), ValueError, "cancel_grace"),
    (lambda: ProcessExecutor(cancel_grace=-1), ValueError, "cancel_grace"),
    (lambda: ProcessExecutor(cancel_grace=math.inf), ValueError, "cancel_grace"),
    (lambda: ProcessExecutor(cancel_grace="1"), TypeError, "cancel_grace"),
    (lambda: ProcessExecutor(mp_context="spawn"), TypeError, "mp_context"),
    (lambda: ProcessExecutor(trace_hook="hook"), TypeError, "trace_hook"),
    (lambda: DaskExecutor(client=object(), address="tcp://x:1"), ValueError, "address"),
    (lambda: DaskExecutor(client="tcp://x:1"), TypeError, "client"),
    (lambda: DaskExecutor(address=""), ValueError, "address"),
    (lambda: DaskExecutor(address=8786), TypeError, "address"),
    (lambda: DaskExecutor(trace_hook=5), TypeError, "trace_hook"),
    (lambda: RayExecutor(address=""), ValueError, "address"),
    (lambda: RayExecutor(cancel_grace=math.nan), ValueError, "cancel_grace"),
    (lambda: RayExecutor(task_options=[("num_cpus", 1)]), TypeError, "task_options"),
    (lambda: RayExecutor(trace_hook=5), TypeError, "trace_hook"),
]


@pytest.mark.parametrize(("build", "error", "culprit"), EXECUTOR_REJECTED)
def test_executors_reject(build: Callable[[], Any], error: type[Exception], culprit: str) -> None:
    with pytest.raises(error) as info:
        build()
    assert_helpful(str(info.value), culprit)


def test_executors_accept_their_defaults_and_a_zero_grace() -> None:
    ThreadExecutor()
    ProcessExecutor(1, cancel_grace=0)
    DaskExecutor()
    RayExecutor(cancel_grace=0, task_options={"num_cpus": 1})


# --------------------------------------------------------------------------- every parameter
#
# One bad value for every parameter of every public entry point, and a test that the
# table lists each parameter their signatures have (plus the step options taken through
# **kwargs), so a parameter added later without a check fails here.

STEP_OPTIONS = (
    "timeout",
    "retries",
    "retry_wait_min",
    "retry_wait_max",
    "retry_reraise",
    "executor",
    "on_result",
)
"""The step options the decorators take through **kwargs (docs/compatibility.md)."""

ANY_VALUE = {
    "Pipe.run": {"state", "context"},
    "Pipe.resume": {"value", "context"},
    "Pipe.execute": {"state", "context", "value"},
    "Pipe.execute_sync": {"state", "context", "value"},
}
"""Parameters that take any object (the user's state, context, a resume value)."""


def covered_durable_pipe() -> Pipe[Any, None]:
    """A durable pipe: resume() checks its arguments before it touches any store."""
    pipe: Pipe[Any, None] = Pipe(dict, name="covered", durable=True)
    pipe.step("a")(step)
    return pipe


def decorate(kind: str, **options: Any) -> Any:
    required = {"map": {"each": "w"}, "switch": {"to": {1: "a"}}, "sub": {"pipeline": Pipe()}}
    arguments = {**required.get(kind, {}), **options}
    name = arguments.pop("name", kind)
    return getattr(Pipe(dict), kind)(name, **arguments)(step)


def decorator_cases(kind: str) -> list[Any]:
    own: dict[str, list[tuple[str, Any]]] = {
        "map": [("each", 5), ("max_concurrency", True)],
        "switch": [("to", "a"), ("default", 5)],
        "sub": [("pipeline", Observerish())],
    }
    common = [
        ("name", 5),
        ("to", 0),
        ("barrier_timeout", math.nan),
        ("barrier_type", "all"),
        ("on_error", "skip"),
        ("timeout", 10**400),
        ("retries", "3"),
        ("retry_wait_min", -1),
        ("retry_wait_max", "a"),
        ("retry_reraise", "false"),
        ("executor", 5),
        ("on_result", 5),
    ]
    cases = own.get(kind, []) + [
        case for case in common if not (kind == "switch" and case[0] == "to")
    ]
    return [
        pytest.param(
            f"Pipe.{kind}",
            parameter,
            (lambda k=kind, p=parameter, v=value: decorate(k, **{p: v})),
            (DefinitionError, TypeError, ValueError),
            id=f"{kind}-{parameter}",
        )
        for parameter, value in cases
    ]


def call_case(label: str, parameter: str, call: Callable[[], Any], error: Any) -> Any:
    return pytest.param(label, parameter, call, error, id=f"{label}-{parameter}")


EVERY_PARAMETER: list[Any] = [
    *[
        call_case("Pipe.__init__", name, lambda n=name, v=value: Pipe(**{n: v}), error)
        for name, value, error in [
            ("state_type", State(), TypeError),
            ("context_type", 5, TypeError),
            ("name", "", ValueError),
            ("strict", "no", TypeError),
            ("allow_multi_root", "yes", TypeError),
            ("middleware", [5], TypeError),
            ("queue_size", -1, ValueError),
            ("max_map_items", 0, ValueError),
            ("debug", "false", TypeError),
            ("cancellation_token", "token", TypeError),
            ("failure_classification", {}, TypeError),
            ("metadata", ["a"], TypeError),
            ("persist", "false", TypeError),
            ("flush_interval", 0, ValueError),
            ("max_retries", 0, ValueError),
            ("executors", [ThreadExecutor()], TypeError),
            ("durable", "false", TypeError),
        ]
    ],
    *decorator_cases("step"),
    *decorator_cases("map"),
    *decorator_cases("switch"),
    *decorator_cases("sub"),
    call_case("Pipe.on_startup", "func", lambda: Pipe().on_startup(5), TypeError),
    call_case("Pipe.on_shutdown", "func", lambda: Pipe().on_shutdown("x"), TypeError),
    call_case("Pipe.on_error", "func", lambda: Pipe().on_error("x"), TypeError),
    call_case("Pipe.add_middleware", "middleware", lambda: Pipe().add_middleware(5), TypeError),
    call_case("Pipe.add_event_hook", "hook", lambda: Pipe().add_event_hook("h"), TypeError),
    call_case(
        "Pipe.add_observer", "observer", lambda: Pipe().add_observer(Observerish()), TypeError
    ),
    *[
        call_case("Pipe.run", name, lambda n=name, v=value: two_steps().run({}, **{n: v}), error)
        for name, value, error in [
            ("start", 5, TypeError),
            ("queue_size", -1, ValueError),
            ("timeout", 10**400, ValueError),
            ("executors", ["x"], TypeError),
        ]
    ],
    *[
        call_case(
            "Pipe.validate", name, lambda n=name, v=value: two_steps().validate(**{n: v}), error
        )
        for name, value, error in [
            ("start", "nope", DefinitionError),
            ("strict", "no", TypeError),
            ("allow_multi_root", "x", TypeError),
        ]
    ],
    *[
        call_case(
            "Pipe.resume",
            name,
            lambda n=name, v=value: covered_durable_pipe().resume(
                **{"run_id": "0123abcd", **{n: v}}
            ),
            error,
        )
        for name, value, error in [
            ("run_id", 5, TypeError),
            ("force", "yes", TypeError),
            ("queue_size", 1.5, TypeError),
            ("timeout", math.nan, ValueError),
            ("executors", 5, TypeError),
            ("start", "a", ValueError),
        ]
    ],
    *[
        call_case(
            f"Pipe.{entry}",
            name,
            lambda e=entry, n=name, v=value: (
                two_steps().execute_sync(**{n: v})
                if e == "execute_sync"
                else asyncio.run(two_steps().execute(**{n: v}))
            ),
            error,
        )
        for entry in ("execute", "execute_sync")
        for name, value, error in [
            ("resume", 5, TypeError),
            ("force", "x", TypeError),
            ("start", 5, TypeError),
            ("queue_size", -1, ValueError),
            ("timeout", math.nan, ValueError),
            ("executors", 5, TypeError),
            ("raise_on_failure", "no", TypeError),
        ]
    ],
    *[
        call_case(
            f"{cls.__name__}.__init__", name, lambda c=cls, n=name, v=value: c(**{n: v}), error
        )
        for cls, name, value, error in [
            (ThreadExecutor, "max_workers", 0, ValueError),
            (ThreadExecutor, "thread_name_prefix", 5, TypeError),
            (ThreadExecutor, "trace_hook", 5, TypeError),
            (ProcessExecutor, "max_workers", True, TypeError),
            (ProcessExecutor, "mp_context", "spawn", TypeError),
            (ProcessExecutor, "cancel_grace", -1, ValueError),
            (ProcessExecutor, "trace_hook", "hook", TypeError),
            (DaskExecutor, "client", "tcp://x:1", TypeError),
            (DaskExecutor, "address", 8786, TypeError),
            (DaskExecutor, "trace_hook", 5, TypeError),
            (RayExecutor, "address", 5, TypeError),
            (RayExecutor, "cancel_grace", "1", TypeError),
            (RayExecutor, "task_options", [("num_cpus", 1)], TypeError),
            (RayExecutor, "trace_hook", 5, TypeError),
        ]
    ],
]


@pytest.mark.parametrize(("label", "parameter", "call", "error"), EVERY_PARAMETER)
def test_every_parameter_is_checked_where_it_is_given(
    label: str, parameter: str, call: Callable[[], Any], error: Any
) -> None:
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    shown = "func" if parameter == "func" else parameter  # hooks: the function itself
    if parameter not in ("func", "name", "middleware", "hook", "observer"):
        assert_helpful(message, shown)
    else:
        assert_helpful(message, None)
    if isinstance(info.value, DefinitionError):
        assert info.value.step_name is not None and info.value.step_name in message


ENTRY_POINTS: dict[str, Any] = {
    "Pipe.__init__": Pipe.__init__,
    **{
        f"Pipe.{name}": getattr(Pipe, name)
        for name in (
            "step",
            "map",
            "switch",
            "sub",
            "on_startup",
            "on_shutdown",
            "on_error",
            "add_middleware",
            "add_event_hook",
            "add_observer",
            "run",
            "validate",
            "resume",
            "execute",
            "execute_sync",
        )
    },
    **{
        f"{cls.__name__}.__init__": cls.__init__
        for cls in (ThreadExecutor, ProcessExecutor, DaskExecutor, RayExecutor)
    },
}


def test_the_table_covers_every_parameter_of_every_entry_point() -> None:
    covered: dict[str, set[str]] = {}
    for case in EVERY_PARAMETER:
        label, parameter = case.values[:2]
        covered.setdefault(label, set()).add(parameter)
    missing = {}
    for label, function in ENTRY_POINTS.items():
        signature = inspect.signature(function)
        names = {
            name
            for name, parameter in signature.parameters.items()
            if name != "self"
            and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
        }
        if label in ("Pipe.step", "Pipe.map", "Pipe.switch", "Pipe.sub"):
            names |= set(STEP_OPTIONS)
        names -= ANY_VALUE.get(label, set())
        if names - covered.get(label, set()):
            missing[label] = sorted(names - covered.get(label, set()))
    assert missing == {}
