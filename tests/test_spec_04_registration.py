"""Registration API: decorators, names, targets, hooks, middleware and event hooks (spec §4)."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest

from helpers import collect, end_data, of_type, pairs, stages
from justpipe import DefinitionError, Event, EventType, Pipe, Stop, simple_logging_middleware
from justpipe.types import (
    FailureKind,
    FailureReason,
    FailureSource,
    NodeKind,
    PipelineTerminalStatus,
    StepContext,
)


async def noop(s: Any) -> None:
    pass


# --------------------------------------------------------------------------- names


def test_step_name_defaults_to_the_function_name() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def fetch(s: Any) -> None:
        pass

    assert [i.name for i in pipe.steps()] == ["fetch"]


def test_explicit_name_wins_over_the_function_name() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("custom")(noop)
    assert [i.name for i in pipe.steps()] == ["custom"]


def test_target_names_resolve_from_strings_functions_partials_and_instances() -> None:
    async def b(s: Any) -> None:
        pass

    class Worker:
        async def __call__(self, s: Any) -> None:
            pass

    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to=["plain", b, functools.partial(b), Worker()])(noop)
    assert pipe.topology == {"a": ["plain", "b", "b", "Worker"]}


def test_callable_instance_step_is_named_after_its_class() -> None:
    class Greeter:
        async def __call__(self, s: Any) -> None:
            pass

    pipe: Pipe[Any, Any] = Pipe()
    pipe.step(Greeter())
    assert [i.name for i in pipe.steps()] == ["Greeter"]


def test_unnamable_target_raises_value_error() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    with pytest.raises((ValueError, DefinitionError)):
        pipe.step("a", to=[object()])(noop)


# --------------------------------------------------------------------------- decorator forms


def test_every_decorator_returns_the_original_function() -> None:
    child: Pipe[Any, Any] = Pipe()
    child.step(noop)
    pipe: Pipe[Any, Any] = Pipe()

    async def f1(s: Any) -> None:
        pass

    async def f2(s: Any) -> list[int]:
        return []

    async def f3(s: Any) -> str:
        return "x"

    async def f4(s: Any) -> Any:
        return s

    def hook() -> None:
        pass

    assert pipe.step(f1) is f1
    assert pipe.map("m", each="f1")(f2) is f2
    assert pipe.switch("sw", to={"x": "f1"})(f3) is f3
    assert pipe.sub("sb", pipeline=child)(f4) is f4
    assert pipe.on_startup(hook) is hook
    assert pipe.on_shutdown(hook) is hook
    assert pipe.on_error(hook) is hook


@pytest.mark.parametrize(
    "form",
    ["bare", "empty_call", "named", "named_with_to", "direct_call", "named_call"],
)
async def test_step_decorator_forms_register_and_run(form: str) -> None:
    pipe: Pipe[Any, Any] = Pipe()

    async def work(s: Any) -> None:
        s["ran"] = True

    if form == "bare":
        pipe.step(work)
        name = "work"
    elif form == "empty_call":
        pipe.step()(work)
        name = "work"
    elif form == "named":
        pipe.step("renamed")(work)
        name = "renamed"
    elif form == "named_with_to":
        pipe.step("renamed", to="tail")(work)
        pipe.step("tail")(noop)
        name = "renamed"
    elif form == "direct_call":
        assert pipe.step(work) is work
        name = "work"
    else:
        pipe.step(name="renamed")(work)
        name = "renamed"
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert state == {"ran": True}
    assert stages(events, EventType.STEP_START)[0] == name


def test_bare_step_form_is_used_only_without_options() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    async def a(s: Any) -> None:
        pass

    decorator = pipe.step(a, to="b")  # type: ignore[call-overload]
    assert callable(decorator)
    assert decorator is not a
    assert list(pipe.steps()) == []


# --------------------------------------------------------------------------- duplicates


def test_duplicate_step_name_is_rejected_naming_both_functions() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    async def first(s: Any) -> None:
        pass

    async def second(s: Any) -> None:
        pass

    pipe.step("dup")(first)
    with pytest.raises(DefinitionError, match="already registered") as info:
        pipe.step("dup")(second)
    assert "first" in str(info.value)
    assert "second" in str(info.value)


def test_duplicate_across_kinds_is_rejected() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("x")(noop)
    with pytest.raises(DefinitionError, match="already registered"):
        pipe.map("x", each="x")(noop)


# --------------------------------------------------------------------------- to=


@pytest.mark.parametrize("falsy", [None, [], ()])
def test_empty_to_adds_no_edges(falsy: Any) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to=falsy)(noop)
    assert pipe.topology == {}


def test_topology_keeps_registration_order_of_targets() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to=["c", "b", "d"])(noop)
    pipe.step("b", to="d")(noop)
    assert pipe.topology == {"a": ["c", "b", "d"], "b": ["d"]}


def test_topology_is_a_copy() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to="b")(noop)
    topo = pipe.topology
    topo["new"] = []
    del topo["a"]
    assert pipe.topology == {"a": ["b"]}


def test_dict_to_on_a_step_points_to_switch() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    with pytest.raises(DefinitionError, match="switch"):
        pipe.step("a", to={"x": "b"})(noop)


@pytest.mark.parametrize("bad", [5, 3.5, object()])
def test_other_to_types_are_rejected(bad: Any) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    with pytest.raises(DefinitionError):
        pipe.step("a", to=bad)(noop)


def test_topology_only_records_step_map_and_sub_edges() -> None:
    child: Pipe[Any, Any] = Pipe()
    child.step(noop)
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("m", each="w", to="after")(noop)
    pipe.switch("sw", to={"x": "w"}, default="after")(noop)
    pipe.sub("sb", pipeline=child, to="after")(noop)
    assert pipe.topology == {"m": ["after"], "sb": ["after"]}


# --------------------------------------------------------------------------- kinds and targets


def test_kinds_and_targets_of_each_decorator() -> None:
    child: Pipe[Any, Any] = Pipe()
    child.step(noop)
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("s", to="m")(noop)
    pipe.map("m", each="w", to="sw")(noop)
    pipe.step("w")(noop)
    pipe.switch("sw", to={1: "sb", 2: Stop}, default="w")(noop)
    pipe.sub("sb", pipeline=child)(noop)
    infos = {i.name: i for i in pipe.steps()}
    assert [i.name for i in pipe.steps()] == ["s", "m", "w", "sw", "sb"]
    assert {n: i.kind for n, i in infos.items()} == {
        "s": NodeKind.STEP,
        "m": NodeKind.MAP,
        "w": NodeKind.STEP,
        "sw": NodeKind.SWITCH,
        "sb": NodeKind.SUB,
    }
    steps = pipe.registry.steps
    assert steps["m"].get_targets() == ["w", "sw"]
    assert steps["sw"].get_targets() == ["sb", "w"]
    assert infos["sb"].sub_pipeline_hash == child.describe()["pipeline_hash"]
    assert infos["s"].sub_pipeline_hash is None


def test_switch_route_values_resolve_callables_and_keep_stop() -> None:
    async def target(s: Any) -> None:
        pass

    pipe: Pipe[Any, Any] = Pipe()
    pipe.switch("sw", to={"a": target, "b": "named", "c": Stop})(noop)
    routes = pipe.registry.steps["sw"].to
    assert routes == {"a": "target", "b": "named", "c": Stop}


def test_switch_with_callable_router_has_only_default_targets() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.switch("sw", to=lambda v: "x", default="d")(noop)
    assert pipe.registry.steps["sw"].get_targets() == ["d"]


def test_step_info_exposes_timeout_retries_and_handler() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", timeout=2.5, retries=3, barrier_timeout=1.0, on_error=lambda: None)(noop)
    info = next(pipe.steps())
    assert (info.timeout, info.retries, info.barrier_timeout) == (2.5, 3, 1.0)
    assert info.has_error_handler is True


# --------------------------------------------------------------------------- function flavours


async def test_sync_step_result_is_used_directly() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    def a(s: Any) -> str:
        return "c"

    pipe.step("b")(noop)
    pipe.step("c")(noop)
    events = await collect(pipe, start="a")
    assert stages(events, EventType.STEP_START) == ["a", "c"]


async def test_sync_step_returning_an_awaitable_is_awaited() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    async def later(s: Any) -> str:
        s["awaited"] = True
        return "c"

    @pipe.step(to="b")
    def a(s: Any) -> Any:
        return later(s)

    pipe.step("b")(noop)
    pipe.step("c")(noop)
    state: dict[str, Any] = {}
    events = await collect(pipe, state, start="a")
    assert state == {"awaited": True}
    assert stages(events, EventType.STEP_START) == ["a", "c"]


async def test_async_generator_step_streams_tokens() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def talk(s: Any) -> Any:
        yield "a"
        yield 2

    events = await collect(pipe)
    assert [e.payload for e in of_type(events, EventType.TOKEN)] == ["a", 2]


async def test_sync_generator_step_is_not_streamed_and_warns() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    def gen(s: Any) -> Any:
        yield 1

    with pytest.warns(UserWarning, match="gen"):
        events = await collect(pipe)
    assert of_type(events, EventType.TOKEN) == []
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


# --------------------------------------------------------------------------- hooks


async def test_startup_and_shutdown_hooks_run_in_registration_order() -> None:
    order: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.on_startup
    async def s1() -> None:
        order.append("s1")

    @pipe.on_startup
    def s2() -> None:
        order.append("s2")

    @pipe.on_shutdown
    def d1() -> None:
        order.append("d1")

    @pipe.on_shutdown
    async def d2() -> None:
        order.append("d2")

    @pipe.step
    async def step(s: Any) -> None:
        order.append("step")

    await collect(pipe)
    assert order == ["s1", "s2", "step", "d1", "d2"]


async def test_last_global_error_handler_wins() -> None:
    calls: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.on_error
    def first(error: Exception) -> None:
        calls.append("first")

    @pipe.on_error
    def second(error: Exception) -> None:
        calls.append("second")

    @pipe.step
    async def boom(s: Any) -> None:
        raise ValueError("x")

    await collect(pipe)
    assert calls == ["second"]


async def test_hooks_receive_state_context_and_token() -> None:
    seen: dict[str, Any] = {}
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.on_startup
    async def up(state: Any, context: Any, cancel: Any) -> None:
        seen["up"] = (state, context, cancel)

    @pipe.on_shutdown
    async def down(s: Any, ctx: Any) -> None:
        seen["down"] = (s, ctx)

    pipe.step("a")(noop)
    state: dict[str, Any] = {}
    context = object()
    await collect(pipe, state, context)
    assert seen["up"] == (state, context, pipe.cancellation_token)
    assert seen["down"] == (state, context)


def test_hook_with_an_unknown_parameter_is_rejected() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    def hook(db: Any) -> None:
        pass

    with pytest.raises(DefinitionError, match="unrecognized parameters"):
        pipe.on_startup(hook)


# --------------------------------------------------------------------------- middleware


async def test_first_middleware_is_innermost() -> None:
    order: list[str] = []

    def make(label: str) -> Any:
        def mw(func: Any, ctx: StepContext) -> Any:
            async def wrapped(**kwargs: Any) -> Any:
                order.append(label)
                return await func(**kwargs)

            return wrapped

        return mw

    pipe: Pipe[Any, Any] = Pipe(middleware=[])
    pipe.add_middleware(make("mw1"))
    pipe.add_middleware(make("mw2"))

    @pipe.step
    async def step(s: Any) -> None:
        order.append("step")

    await collect(pipe)
    assert order == ["mw2", "mw1", "step"]


async def test_middleware_wraps_every_step_kind_but_not_hooks_or_handlers() -> None:
    wrapped_names: list[str] = []

    def spy(func: Any, ctx: StepContext) -> Any:
        wrapped_names.append(ctx.name)
        return func

    child: Pipe[Any, Any] = Pipe(middleware=[])
    child.step("inner")(noop)
    pipe: Pipe[Any, Any] = Pipe(middleware=[spy])

    @pipe.on_startup
    def up() -> None:
        pass

    @pipe.on_error
    def err(error: Exception) -> None:
        pass

    pipe.map("m", each="w", to="sw")(lambda s: [1])
    pipe.step("w", on_error=lambda: None)(noop)

    @pipe.switch(to={"x": "sb"})
    async def sw(s: Any) -> str:
        return "x"

    pipe.sub("sb", pipeline=child)(noop)
    await collect(pipe)
    assert sorted(wrapped_names) == ["m", "sb", "sw", "w"]


async def test_middleware_context_carries_extra_kwargs_and_retries() -> None:
    seen: list[StepContext] = []

    def spy(func: Any, ctx: StepContext) -> Any:
        seen.append(ctx)
        return func

    pipe: Pipe[Any, Any] = Pipe(middleware=[spy])
    pipe.step("a", retries=2, retry_wait_min=0.5, custom="x", timeout=3)(noop)
    await collect(pipe)
    (ctx,) = seen
    assert ctx.retries == 2
    assert ctx.kwargs == {"retry_wait_min": 0.5, "custom": "x"}


async def test_middleware_is_applied_once_across_runs() -> None:
    calls: list[str] = []

    def spy(func: Any, ctx: StepContext) -> Any:
        calls.append(ctx.name)
        return func

    pipe: Pipe[Any, Any] = Pipe(middleware=[spy])
    pipe.step("a")(noop)
    await collect(pipe)
    await collect(pipe)
    assert calls == ["a"]


async def test_wrapped_step_is_called_with_keyword_arguments_only() -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def spy(func: Any, ctx: StepContext) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            seen.append((args, kwargs))
            return await func(*args, **kwargs)

        return wrapped

    pipe: Pipe[Any, Any] = Pipe(middleware=[spy])

    @pipe.step
    async def a(state: Any, ctx: Any) -> None:
        pass

    state: dict[str, Any] = {}
    await collect(pipe, state)
    assert seen == [((), {"state": state, "ctx": None})]


async def test_simple_logging_middleware_logs_duration_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipe: Pipe[Any, Any] = Pipe(middleware=[simple_logging_middleware])

    @pipe.step(to="streamer")
    async def work(s: Any) -> None:
        pass

    @pipe.step(to="broken")
    async def streamer(s: Any) -> Any:
        yield 1

    @pipe.step
    def broken(s: Any) -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.DEBUG, logger="justpipe"):
        await collect(pipe)
    records = [r for r in caplog.records if r.name == "justpipe"]
    messages = [r.getMessage() for r in records]
    for name in ("work", "streamer", "broken"):
        assert any(m.startswith(f"Step '{name}' took") for m in messages), messages
    # §20: as in 0.12, the record's msg is the finished text (no %-args), for handlers and
    # filters that read record.msg
    assert all(r.msg == r.getMessage() and not r.args for r in records), records


# --------------------------------------------------------------------------- event hooks


async def test_event_hooks_apply_in_order_after_stamping() -> None:
    seen: list[tuple[str, int | None, str | None]] = []

    def first(event: Event) -> Event:
        seen.append(("first", event.seq, event.run_id))
        return Event(**{**event.__dict__, "meta": {"hooked": ["first"]}})

    def second(event: Event) -> Event:
        seen.append(("second", event.seq, event.run_id))
        meta = dict(event.meta or {})
        meta["hooked"] = [*meta.get("hooked", []), "second"]
        return Event(**{**event.__dict__, "meta": meta})

    pipe: Pipe[Any, Any] = Pipe()
    pipe.add_event_hook(first)
    pipe.add_event_hook(second)
    pipe.step("a")(noop)
    events = await collect(pipe)
    assert all(e.meta is not None and e.meta["hooked"] == ["first", "second"] for e in events)
    assert [s[0] for s in seen[:2]] == ["first", "second"]
    assert all(seq is not None and run_id == events[0].run_id for _, seq, run_id in seen)


def failing_hook_pipe(bad: Any, when: EventType, log: list[str]) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.add_event_hook(lambda e: bad if e.type is when else e)

    @pipe.on_shutdown
    def down() -> None:
        log.append("shutdown")

    pipe.step("a", to="b")(noop)
    pipe.step("b")(noop)
    return pipe


async def run_until_raise(pipe: Pipe[Any, Any], got: list[Event]) -> BaseException:
    try:
        async for event in pipe.run({}):
            got.append(event)
    except BaseException as exc:
        return exc
    raise AssertionError("the run did not raise")


@pytest.mark.parametrize(("bad", "error"), [(None, ValueError), ("nope", TypeError)])
@pytest.mark.parametrize("when", [EventType.STEP_START, EventType.STEP_END])
async def test_bad_event_hook_during_execution_fails_the_run_then_raises_a_group(
    bad: Any, error: type[Exception], when: EventType
) -> None:
    log: list[str] = []
    got: list[Event] = []
    exc = await run_until_raise(failing_hook_pipe(bad, when, log), got)
    assert isinstance(exc, ExceptionGroup)
    assert exc.subgroup(error) is not None
    data = end_data(got)
    assert data.status is PipelineTerminalStatus.FAILED
    assert (data.failure_kind, data.failure_source, data.reason) == (
        FailureKind.INFRA,
        FailureSource.FRAMEWORK,
        FailureReason.INTERNAL_ERROR,
    )
    assert log == ["shutdown"]
    expected = [("start", "system")] + ([("step_start", "a")] if when is EventType.STEP_END else [])
    assert pairs(got)[:-1] == expected
    assert got[-1].seq == len(got) + 1, "the failed publish consumed a seq number"


@pytest.mark.parametrize(("bad", "error"), [(None, ValueError), ("nope", TypeError)])
async def test_bad_event_hook_on_start_raises_the_bare_exception(
    bad: Any, error: type[Exception]
) -> None:
    log: list[str] = []
    got: list[Event] = []
    exc = await run_until_raise(failing_hook_pipe(bad, EventType.START, log), got)
    assert type(exc) is error
    assert pairs(got) == [("finish", "system")]
    assert end_data(got).failure_kind is FailureKind.INFRA
    assert log == ["shutdown"]


async def test_event_hook_sees_every_event_type_of_the_run() -> None:
    seen: list[str] = []

    def hook(event: Event) -> Event:
        seen.append(event.type.value)
        return event

    pipe: Pipe[Any, Any] = Pipe()
    pipe.add_event_hook(hook)
    pipe.step("a")(noop)
    events = await collect(pipe)
    assert seen == [t for t, _ in pairs(events)]
