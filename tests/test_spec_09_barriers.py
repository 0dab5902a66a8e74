"""Scheduling and barriers: ALL/ANY joins, waves, skips, barrier timeouts (spec §9.1)."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import collect, end_data, index_of, of_type, stages
from justpipe import EventType, Pipe, Skip, Stop
from justpipe.types import BarrierType, PipelineTerminalStatus


def diamond(
    *,
    barrier: BarrierType = BarrierType.ALL,
    timeout: float | None = None,
    delays: tuple[float, float] = (0.0, 0.0),
    results: tuple[Any, Any] = (None, None),
    join_error: Any = None,
) -> Pipe[Any, Any]:
    """root -> (p1, p2) -> join -> tail."""
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["p1", "p2"])(lambda s: None)
    for i, (delay, result) in enumerate(zip(delays, results, strict=True), start=1):

        async def parent(s: Any, delay: float = delay, result: Any = result, i: int = i) -> Any:
            await asyncio.sleep(delay)
            s.setdefault("ran", []).append(f"p{i}")
            if isinstance(result, Exception):
                raise result
            return result

        pipe.step(f"p{i}", to="join")(parent)

    async def join(s: Any) -> None:
        s.setdefault("ran", []).append("join")

    pipe.step(
        "join", to="tail", barrier_type=barrier, barrier_timeout=timeout, on_error=join_error
    )(join)
    pipe.step("tail")(lambda s: s.setdefault("ran", []).append("tail"))
    return pipe


async def ran(pipe: Pipe[Any, Any], **kw: Any) -> tuple[list[str], list[Any]]:
    state: dict[str, Any] = {}
    events = await collect(pipe, state, **kw)
    return state.get("ran", []), events


# --------------------------------------------------------------------------- ALL


async def test_all_join_runs_once_after_both_parents() -> None:
    result, events = await ran(diamond(delays=(0.01, 0.0)))
    assert result == ["p2", "p1", "join", "tail"]
    join_start = index_of(events, EventType.STEP_START, "join")
    assert index_of(events, EventType.STEP_END, "p1") < join_start


async def test_failed_parent_still_counts_as_completed() -> None:
    result, events = await ran(diamond(results=(ValueError("p1 broke"), None)))
    assert result == ["p1", "p2", "join", "tail"]
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_skipped_parent_blocks_an_all_join_silently() -> None:
    result, events = await ran(diamond(results=(Skip(), None)))
    assert result == ["p1", "p2"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert of_type(events, EventType.STEP_ERROR) == []


async def test_all_join_fires_again_for_a_second_wave() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to=["p1", "p2"])
    async def root(s: Any) -> None:
        s["waves"] = s.get("waves", 0) + 1

    pipe.step("p1", to="join")(lambda s: None)
    pipe.step("p2", to="join")(lambda s: None)

    @pipe.step
    async def join(s: Any) -> Any:
        s.setdefault("joins", 0)
        s["joins"] += 1
        return "root" if s["waves"] < 2 else None

    state: dict[str, Any] = {}
    await collect(pipe, state)
    assert state == {"waves": 2, "joins": 2}


# --------------------------------------------------------------------------- ANY


async def test_any_join_runs_on_the_first_parent_only_once() -> None:
    result, events = await ran(diamond(barrier=BarrierType.ANY, delays=(0.0, 0.02)))
    assert result == ["p1", "join", "tail", "p2"]
    assert stages(events, EventType.STEP_START).count("join") == 1


async def test_any_join_still_fires_when_one_parent_skips() -> None:
    result, _ = await ran(diamond(barrier=BarrierType.ANY, results=(Skip(), None)))
    assert result.count("join") == 1
    assert "tail" in result


# --------------------------------------------------------------------------- barrier timeouts


async def test_barrier_timeout_fails_the_join_and_it_never_runs_later() -> None:
    result, events = await ran(diamond(timeout=0.05, delays=(0.0, 0.2)))
    assert "join" not in result
    assert "tail" not in result
    assert "p2" in result, "the slow parent still finishes"
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.payload == "Barrier timeout for step 'join' after 0.05s"
    assert index_of(events, EventType.BARRIER_WAIT, "join") < events.index(error)
    data = end_data(events)
    assert (data.status, data.failed_step) == (PipelineTerminalStatus.FAILED, "join")


async def test_barrier_timeout_goes_through_the_join_error_handler() -> None:
    handled: list[str] = []
    result, events = await ran(
        diamond(
            timeout=0.05, delays=(0.0, 0.2), join_error=lambda error: handled.append(str(error))
        )
    )
    assert handled == ["Barrier timeout for step 'join' after 0.05s"]
    assert of_type(events, EventType.STEP_ERROR) == []
    assert "join" not in result


async def test_barrier_timeout_does_not_affect_other_targets_of_the_parents() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["fast", "slow"])(lambda s: None)
    pipe.step("fast", to=["join", "side"])(lambda s: None)

    @pipe.step(to="join")
    async def slow(s: Any) -> None:
        await asyncio.sleep(0.15)

    pipe.step("join", barrier_timeout=0.03)(lambda s: s.update(join=True))
    pipe.step("side")(lambda s: s.update(side=True))
    state: dict[str, Any] = {}
    await collect(pipe, state)
    assert state == {"side": True}


async def test_satisfied_barrier_releases_with_a_duration() -> None:
    result, events = await ran(diamond(timeout=1.0, delays=(0.0, 0.02)))
    assert result[-2:] == ["join", "tail"]
    (wait,) = of_type(events, EventType.BARRIER_WAIT)
    (release,) = of_type(events, EventType.BARRIER_RELEASE)
    assert events.index(wait) < events.index(release)
    assert release.payload["duration"] >= 0
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_barrier_timeout_is_ignored_for_any_and_single_parent_joins() -> None:
    any_result, any_events = await ran(
        diamond(barrier=BarrierType.ANY, timeout=0.01, delays=(0.0, 0.05))
    )
    assert of_type(any_events, EventType.BARRIER_WAIT) == []
    assert "join" in any_result
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    async def a(s: Any) -> None:
        await asyncio.sleep(0.03)

    pipe.step("b", barrier_timeout=0.01)(lambda s: s.update(b=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert state == {"b": True}
    assert of_type(events, EventType.BARRIER_WAIT) == []


async def test_skipped_parent_with_a_barrier_timeout_reports_the_timeout() -> None:
    result, events = await ran(diamond(timeout=0.05, results=(Skip(), None)))
    assert "join" not in result
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "join"
    assert error.payload.startswith("Barrier timeout")
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_run_timeout_cancels_waiting_barrier_watchers() -> None:
    result, events = await ran(diamond(timeout=5.0, delays=(0.0, 10.0)), timeout=0.05)
    assert "join" not in result
    assert of_type(events, EventType.STEP_ERROR) == []
    assert len(of_type(events, EventType.BARRIER_WAIT)) == 1
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT


async def test_a_stopping_run_starts_no_barrier_watcher() -> None:
    """§9.2: once a Stop stopped the run, a first arrival at an ALL join with a timeout
    spawns no watcher, so no BARRIER_WAIT and no barrier-timeout STEP_ERROR follow (the
    run ended SUCCESS as asked; it used to end FAILED after the watcher timed out)."""
    result, events = await ran(diamond(timeout=0.05, delays=(0.01, 0.0), results=(None, Stop)))
    assert "join" not in result
    assert of_type(events, EventType.BARRIER_WAIT) == []
    assert of_type(events, EventType.STEP_ERROR) == []
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


# --------------------------------------------------------------------------- dynamic routes


async def test_dynamic_route_bypasses_the_target_barrier() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("router")(lambda s: "join")
    pipe.step("p1", to="join")(lambda s: None)
    pipe.step("p2", to="join")(lambda s: None)
    pipe.step("join")(lambda s: s.update(join=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state, start="router")
    assert state == {"join": True}
    join_start = events[index_of(events, EventType.STEP_START, "join")]
    router_start = events[index_of(events, EventType.STEP_START, "router")]
    assert join_start.parent_invocation_id == router_start.invocation_id


async def test_static_successors_have_no_parent_invocation() -> None:
    _, events = await ran(diamond())
    for event in of_type(events, EventType.STEP_START):
        assert event.parent_invocation_id is None
