"""Switch routing (spec §9.5) and the switch-sibling barrier rule (§9.1)."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import collect, end_data, index_of, of_type, pairs, stages
from justpipe import EventType, Pipe, Skip, Stop
from justpipe.types import PipelineTerminalStatus


def routed(value: Any, routes: Any, default: Any = None, **options: Any) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.switch(to=routes, default=default, **options)
    async def decide(s: Any) -> Any:
        return value

    for name in ("left", "right", "fallback"):

        async def target(s: Any, name: str = name) -> None:
            s.setdefault("ran", []).append(name)

        pipe.step(name)(target)
    return pipe


async def ran(pipe: Pipe[Any, Any]) -> tuple[list[str], list[Any]]:
    state: dict[str, Any] = {}
    events = await collect(pipe, state, start="decide")
    return state.get("ran", []), events


@pytest.mark.parametrize(("value", "expected"), [("l", ["left"]), (2, ["right"])])
async def test_dict_routes_by_return_value(value: Any, expected: list[str]) -> None:
    result, events = await ran(routed(value, {"l": "left", 2: "right"}))
    assert result == expected
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_unmatched_value_uses_the_default() -> None:
    result, _ = await ran(routed("zzz", {"l": "left"}, default="fallback"))
    assert result == ["fallback"]


async def test_route_values_may_be_functions() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    async def chosen(s: Any) -> None:
        s["chosen"] = True

    pipe.switch("decide", to={True: chosen})(lambda s: True)
    pipe.step(chosen)
    state: dict[str, Any] = {}
    await collect(pipe, state, start="decide")
    assert state == {"chosen": True}


async def test_callable_router_maps_the_value_to_a_step() -> None:
    result, _ = await ran(routed(5, lambda v: "left" if v > 3 else "right"))
    assert result == ["left"]


async def test_callable_router_none_falls_back_to_default() -> None:
    result, _ = await ran(routed(5, lambda v: None, default="fallback"))
    assert result == ["fallback"]


async def test_callable_router_may_return_a_function() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    async def target(s: Any) -> None:
        s["hit"] = True

    pipe.switch("decide", to=lambda v: target)(lambda s: 1)
    pipe.step(target)
    state: dict[str, Any] = {}
    await collect(pipe, state, start="decide")
    assert state == {"hit": True}


async def test_stop_route_ends_the_run_quietly() -> None:
    result, events = await ran(routed("x", {"x": Stop, "y": "left"}))
    assert result == []
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "decide"),
        ("step_end", "decide"),
        ("finish", "system"),
    ]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_no_match_without_default_is_a_switch_step_error() -> None:
    result, events = await ran(routed("zzz", {"l": "left", 2: "right"}))
    assert result == []
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "decide"
    assert "matches no route" in error.payload
    assert "'l'" in error.payload
    assert "2" in error.payload
    assert "default" in error.payload
    assert end_data(events).failed_step == "decide"


async def test_unhashable_result_is_a_step_error() -> None:
    _, events = await ran(routed(["unhashable"], {"l": "left"}, default="fallback"))
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "decide"


async def test_router_raising_is_a_step_error() -> None:
    def router(value: Any) -> str:
        raise LookupError("router broke")

    _, events = await ran(routed(1, router))
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert (error.stage, error.payload) == ("decide", "router broke")


async def test_switch_target_starts_after_the_switch_ends_with_switch_as_parent() -> None:
    _, events = await ran(routed("l", {"l": "left"}))
    assert index_of(events, EventType.STEP_END, "decide") < index_of(
        events, EventType.STEP_START, "left"
    )
    switch_start = of_type(events, EventType.STEP_START)[0]
    left_start = of_type(events, EventType.STEP_START)[1]
    assert left_start.parent_invocation_id == switch_start.invocation_id
    assert left_start.owner_invocation_id == left_start.invocation_id
    assert switch_start.node_kind.value == "switch"


async def test_switch_error_handler_result_is_processed_like_a_step_result() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.switch(to={"x": "left"}, on_error=lambda: "fallback")
    async def decide(s: Any) -> Any:
        raise ValueError("cannot decide")

    pipe.step("left")(lambda s: None)

    @pipe.step
    async def fallback(s: Any) -> None:
        s["fallback"] = True

    state: dict[str, Any] = {}
    events = await collect(pipe, state, start="decide")
    assert state == {"fallback": True}
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_switch_targets_can_loop_back_at_run_time() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="check")
    async def work(s: Any) -> None:
        s["n"] = s.get("n", 0) + 1

    @pipe.switch(to=lambda v: "work" if v == "again" else Stop)
    async def check(s: Any) -> str:
        return "again" if s["n"] < 3 else "done"

    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert state["n"] == 3
    assert stages(events, EventType.STEP_START) == ["work", "check"] * 3


# --------------------------------------------------------------------------- sibling rule


def parity_pipe(value: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.switch(to={"even": "even", "odd": "odd"})
    async def parity(s: Any) -> str:
        return "even" if value % 2 == 0 else "odd"

    pipe.step("even", to="result_log")(lambda s: s.setdefault("path", []).append("even"))
    pipe.step("odd", to="result_log")(lambda s: s.setdefault("path", []).append("odd"))

    @pipe.step
    async def result_log(s: Any) -> None:
        s.setdefault("path", []).append("log")

    return pipe


@pytest.mark.parametrize(("value", "branch"), [(2, "even"), (3, "odd")])
async def test_alternative_switch_routes_satisfy_an_all_join(value: int, branch: str) -> None:
    state: dict[str, Any] = {}
    events = await collect(parity_pipe(value), state)
    assert state["path"] == [branch, "log"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_skip_in_a_switch_target_blocks_its_successors() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.switch("decide", to={1: "branch"})(lambda s: 1)
    pipe.step("branch", to="tail")(lambda s: Skip())
    pipe.step("tail")(lambda s: s.setdefault("tail", True))
    state: dict[str, Any] = {}
    await collect(pipe, state)
    assert "tail" not in state
