"""Streaming steps: tokens, control objects, closing, retries (spec §9.8, §9.2)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers import collect, end_data, of_type, pairs, stages
from justpipe import EventType, Pipe, Suspend
from justpipe.types import NodeKind, PipelineTerminalStatus, _Next


async def test_every_yielded_value_is_a_token_in_order() -> None:
    payloads: list[Any] = ["text", 1, None, {"k": "v"}, [1], 2.5]
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def talk(s: Any) -> Any:
        for p in payloads:
            yield p

    events = await collect(pipe)
    tokens = of_type(events, EventType.TOKEN)
    assert [t.payload for t in tokens] == payloads
    assert {t.stage for t in tokens} == {"talk"}
    assert {t.node_kind for t in tokens} == {NodeKind.SYSTEM}


async def test_yielded_strings_do_not_route() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="after")
    async def talk(s: Any) -> Any:
        yield "other"

    pipe.step("after")(lambda s: None)
    pipe.step("other")(lambda s: None)
    events = await collect(pipe, start="talk")
    assert stages(events, EventType.STEP_START) == ["talk", "after"]


async def test_yielded_next_routes_after_the_generator_finishes() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="after")
    async def talk(s: Any) -> Any:
        yield "tok"
        yield _Next("other")
        yield "more"

    pipe.step("after")(lambda s: None)
    pipe.step("other")(lambda s: None)
    events = await collect(pipe, start="talk")
    assert [e.payload for e in of_type(events, EventType.TOKEN)] == ["tok", "more"]
    assert stages(events, EventType.STEP_START) == ["talk", "other"]


async def test_yielded_suspend_becomes_the_result() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="after")
    async def talk(s: Any) -> Any:
        yield "before"
        yield Suspend("pause")
        yield "after-suspend"

    pipe.step("after")(lambda s: None)
    events = await collect(pipe)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "talk"),
        ("token", "talk"),
        ("token", "talk"),
        ("suspend", "talk"),
        ("step_end", "talk"),
        ("finish", "system"),
    ]
    assert of_type(events, EventType.SUSPEND)[0].payload == "pause"


async def test_last_control_object_wins() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def talk(s: Any) -> Any:
        yield _Next("first")
        yield _Next("second")

    pipe.step("first")(lambda s: None)
    pipe.step("second")(lambda s: None)
    events = await collect(pipe, start="talk")
    assert stages(events, EventType.STEP_START) == ["talk", "second"]


async def test_generator_is_closed_when_the_run_times_out() -> None:
    closed: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def talk(s: Any) -> Any:
        try:
            yield 1
            await asyncio.sleep(5)
            yield 2
        finally:
            closed.append("closed")

    events = await collect(pipe, timeout=0.05)
    assert closed == ["closed"]
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT


async def test_concurrent_streams_each_keep_their_own_order() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["x", "y"])(lambda s: None)
    for name in ("x", "y"):

        async def talk(s: Any, name: str = name) -> Any:
            for i in range(5):
                await asyncio.sleep(0)
                yield f"{name}{i}"

        pipe.step(name)(talk)
    events = await collect(pipe)
    tokens = [e.payload for e in of_type(events, EventType.TOKEN)]
    for name in ("x", "y"):
        assert [t for t in tokens if t.startswith(name)] == [f"{name}{i}" for i in range(5)]


async def test_stop_request_lets_running_streams_finish() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["stopper", "talker"])(lambda s: None)

    @pipe.step(to="never")
    async def stopper(s: Any) -> Any:
        from justpipe import Stop

        return Stop

    @pipe.step
    async def talker(s: Any) -> Any:
        for i in range(3):
            await asyncio.sleep(0.001)
            yield i

    pipe.step("never")(lambda s: s.update(never=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert [e.payload for e in of_type(events, EventType.TOKEN)] == [0, 1, 2]
    assert "talker" in stages(events, EventType.STEP_END)
    assert "never" not in state


async def test_retries_do_not_apply_to_streaming_steps() -> None:
    calls: list[int] = []
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(retries=3)
    async def talk(s: Any) -> Any:
        calls.append(1)
        yield 1
        raise RuntimeError("stream broke")

    # §20: 0.12's text starts "Streaming step '<name>' cannot retry"
    with pytest.warns(UserWarning, match=r"^Streaming step 'talk' cannot retry automatically"):
        events = await collect(pipe)
    assert calls == [1]
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_map_worker_can_stream() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work")(lambda s: [1, 2])

    @pipe.step
    async def work(s: Any, item: int) -> Any:
        yield item * 10

    events = await collect(pipe)
    assert sorted(e.payload for e in of_type(events, EventType.TOKEN)) == [10, 20]
