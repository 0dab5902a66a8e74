"""Sub-pipelines: child runs, forwarding, failures and suspension (spec §9.11)."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import collect, end_data, index_of, of_type, pairs, stages
from justpipe import Event, EventType, Pipe, Suspend
from justpipe.observability import Observer
from justpipe.types import PipelineTerminalStatus


def child_pipe(log: list[str], *, fail: bool = False) -> Pipe[Any, Any]:
    child: Pipe[Any, Any] = Pipe(name="child")
    child.on_startup(lambda: log.append("child:startup"))
    child.on_shutdown(lambda: log.append("child:shutdown"))

    @child.step
    async def inner(s: Any, ctx: Any) -> None:
        log.append(f"child:inner state={s!r} ctx={ctx!r}")
        if fail:
            raise ValueError("child broke")

    return child


def parent_pipe(child: Pipe[Any, Any], make_state: Any = None) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="parent")

    @pipe.sub(pipeline=child, to="after")
    async def call(s: Any) -> Any:
        return make_state(s) if make_state else {"child": True}

    @pipe.step
    async def after(s: Any) -> None:
        s["after"] = True

    return pipe


async def test_sub_runs_the_child_with_the_returned_state_and_parent_context() -> None:
    log: list[str] = []
    state: dict[str, Any] = {}
    events = await collect(parent_pipe(child_pipe(log)), state, "CTX")
    assert log == [
        "child:startup",
        "child:inner state={'child': True} ctx='CTX'",
        "child:shutdown",
    ]
    assert state == {"after": True}
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_none_child_state_is_allowed() -> None:
    log: list[str] = []
    await collect(parent_pipe(child_pipe(log), lambda s: None))
    assert "child:inner state=None ctx=None" in log


async def test_child_is_an_independent_run_with_its_own_observers() -> None:
    seen: list[Event] = []

    class Spy(Observer):
        async def on_event(self, state: Any, ctx: Any, meta: Any, event: Event) -> None:
            seen.append(event)

    log: list[str] = []
    child = child_pipe(log)
    child.add_observer(Spy())
    events = await collect(parent_pipe(child))
    child_run = {e.run_id for e in seen}
    assert len(child_run) == 1
    assert child_run != {events[0].run_id}
    assert seen[-1].type is EventType.FINISH
    assert seen[-1].stage == "system"
    forwarded = [e for e in events if e.parent_run_id is not None]
    assert [e.type for e in forwarded] == [e.type for e in seen]
    assert [e.stage for e in forwarded] == [f"call:{e.stage}" for e in seen]


async def test_forwarded_events_pass_through_parent_hooks_and_observers() -> None:
    hooked: list[str] = []
    observed: list[str] = []

    def hook(event: Event) -> Event:
        hooked.append(event.stage)
        return event

    class Spy(Observer):
        async def on_event(self, state: Any, ctx: Any, meta: Any, event: Event) -> None:
            observed.append(event.stage)

    pipe = parent_pipe(child_pipe([]))
    pipe.add_event_hook(hook)
    pipe.add_observer(Spy())
    events = await collect(pipe)
    assert hooked == observed == [e.stage for e in events]
    assert "call:inner" in hooked


async def test_sub_step_end_follows_the_child_finish_then_successors() -> None:
    events = await collect(parent_pipe(child_pipe([])))
    child_finish = index_of(events, EventType.FINISH, "call:system")
    assert child_finish < index_of(events, EventType.STEP_END, "call")
    assert index_of(events, EventType.STEP_END, "call") < index_of(
        events, EventType.STEP_START, "after"
    )


async def test_child_failure_fails_the_parent_but_the_sub_completes() -> None:
    state: dict[str, Any] = {}
    events = await collect(parent_pipe(child_pipe([], fail=True)), state)
    assert state == {"after": True}
    assert ("step_error", "call:inner") in pairs(events)
    assert "call" in stages(events, EventType.STEP_END)
    data = end_data(events)
    assert (data.status, data.failed_step, data.error) == (
        PipelineTerminalStatus.FAILED,
        "call:inner",
        "child broke",
    )
    child_finish = events[index_of(events, EventType.FINISH, "call:system")]
    assert child_finish.payload.status is PipelineTerminalStatus.FAILED


async def test_nested_failure_reports_the_full_prefixed_step() -> None:
    leaf: Pipe[Any, Any] = Pipe(name="leaf")

    @leaf.step
    async def lstep(s: Any) -> None:
        raise RuntimeError("deep")

    mid: Pipe[Any, Any] = Pipe(name="mid")
    mid.sub("to_leaf", pipeline=leaf)(lambda s: s)
    outer: Pipe[Any, Any] = Pipe(name="outer")
    outer.sub("to_mid", pipeline=mid, to="after")(lambda s: s)
    outer.step("after")(lambda s: s.update(after=True))
    state: dict[str, Any] = {}
    events = await collect(outer, state)
    data = end_data(events)
    assert data.status is PipelineTerminalStatus.FAILED
    assert data.failed_step == "to_mid:to_leaf:lstep"
    assert state == {"after": True}


async def test_child_suspend_stops_the_parent() -> None:
    child: Pipe[Any, Any] = Pipe(name="child")
    child.step("pause")(lambda s: Suspend("need input"))
    state: dict[str, Any] = {}
    events = await collect(parent_pipe(child), state)
    (suspend,) = of_type(events, EventType.SUSPEND)
    assert (suspend.stage, suspend.payload) == ("call:pause", "need input")
    assert "after" not in state
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_child_validation_error_is_reported_as_sub_colon_sub() -> None:
    child: Pipe[Any, Any] = Pipe(name="child")
    child.step("a", to="ghost")(lambda s: None)
    state: dict[str, Any] = {}
    events = await collect(parent_pipe(child), state)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "call:sub"
    assert "ghost" in error.payload
    assert end_data(events).failed_step == "call:sub"


async def test_global_handler_applies_to_an_escaping_child_error() -> None:
    handled: list[tuple[str, str]] = []
    child: Pipe[Any, Any] = Pipe(name="child")
    child.step("a", to="ghost")(lambda s: None)
    pipe = parent_pipe(child)

    @pipe.on_error
    def handler(error: Exception, step_name: str) -> None:
        handled.append((step_name, type(error).__name__))

    events = await collect(pipe)
    assert handled == [("call:sub", "DefinitionError")]
    assert of_type(events, EventType.STEP_ERROR) == []


async def test_sub_function_error_uses_the_sub_step_chain() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.sub("call", pipeline=child_pipe([]))(lambda s: 1 / 0)
    events = await collect(pipe)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "call"
    assert error.node_kind.value == "sub"
    assert EventType.START not in [e.type for e in events[1:]]


async def test_run_timeout_cancels_a_running_child() -> None:
    log: list[str] = []
    child: Pipe[Any, Any] = Pipe(name="child")
    child.on_shutdown(lambda: log.append("child:shutdown"))

    @child.step
    async def forever(s: Any) -> None:
        await asyncio.sleep(10)

    pipe = parent_pipe(child)
    events = await collect(pipe, timeout=0.05)
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT
    assert log == ["child:shutdown"]


async def test_the_same_child_can_be_used_by_two_subs() -> None:
    log: list[str] = []
    child = child_pipe(log)
    pipe: Pipe[Any, Any] = Pipe()
    pipe.sub("first", pipeline=child, to="second")(lambda s: 1)
    pipe.sub("second", pipeline=child)(lambda s: 2)
    events = await collect(pipe)
    assert [line for line in log if "inner" in line] == [
        "child:inner state=1 ctx=None",
        "child:inner state=2 ctx=None",
    ]
    assert {e.stage for e in of_type(events, EventType.FINISH)} == {
        "first:system",
        "second:system",
        "system",
    }
