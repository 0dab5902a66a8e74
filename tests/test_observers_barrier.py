"""BarrierDebugger (spec §13.2): slow, hang, unresolved and error_state findings.

Wait times come from event timestamps; "inactive" ages come from the injected clock.
The pinned messages were produced by justpipe 0.12.0 on the same inputs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import collect
from justpipe import Pipe
from justpipe.observability import BarrierDebugger, BarrierDebugRecord, ObserverMeta
from justpipe.types import Event, EventType, PipelineEndData, PipelineTerminalStatus

META = ObserverMeta("pipe", "run-1", 0.0)


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_debugger(
    warn_after: float = 1.0, now: float = 100.0
) -> tuple[BarrierDebugger, list[BarrierDebugRecord], Clock]:
    records: list[BarrierDebugRecord] = []
    clock = Clock(now)
    return BarrierDebugger(warn_after=warn_after, clock=clock, sink=records.append), records, clock


async def feed(
    debugger: BarrierDebugger,
    kind: EventType,
    stage: str,
    payload: Any = None,
    at: float = 50.0,
    **ids: Any,
) -> None:
    await debugger.on_event(None, None, META, Event(kind, stage, payload, timestamp=at, **ids))


def waiting_for(*parents: str, **extra: Any) -> dict[str, Any]:
    return {"waiting_for": list(parents), **extra}


# --------------------------------------------------------------------------- slow


async def test_slow_release_is_reported_once_with_wait_from_timestamps() -> None:
    debugger, records, _ = make_debugger()
    await feed(
        debugger,
        EventType.BARRIER_WAIT,
        "join",
        waiting_for("a", expected_count=2, completed_count=1),
        at=40.0,
    )
    await feed(debugger, EventType.BARRIER_RELEASE, "join", {"duration": 1.0}, at=50.0)
    await feed(debugger, EventType.BARRIER_WAIT, "join", waiting_for("a"), at=60.0)
    await feed(debugger, EventType.BARRIER_RELEASE, "join", {}, at=70.0)
    assert records == [
        BarrierDebugRecord(
            kind="slow",
            barrier_name="join",
            wait_time_s=10.0,
            expected_count=2,
            completed_count=1,
            waiting_for=("a",),
            message="SLOW BARRIER: join waited 10.0s (threshold: 1.0s)",
        )
    ]
    assert debugger.waiting_barriers == {}
    assert debugger.warned_barriers == {"join"}


@pytest.mark.parametrize(("wait", "reported"), [(1.0, False), (1.00001, True)])
async def test_slow_needs_strictly_more_than_warn_after(wait: float, reported: bool) -> None:
    debugger, records, _ = make_debugger()
    await feed(debugger, EventType.BARRIER_WAIT, "j", waiting_for("a"), at=20.0)
    await feed(debugger, EventType.BARRIER_RELEASE, "j", {}, at=20.0 + wait)
    assert bool(records) is reported


async def test_threshold_is_shown_with_one_decimal() -> None:
    debugger, records, _ = make_debugger(warn_after=2)
    await feed(debugger, EventType.BARRIER_WAIT, "j", {}, at=0.0)
    await feed(debugger, EventType.BARRIER_RELEASE, "j", {}, at=10.0)
    assert records[0].message == "SLOW BARRIER: j waited 10.0s (threshold: 2.0s)"


async def test_release_without_wait_is_ignored() -> None:
    debugger, records, _ = make_debugger()
    await feed(debugger, EventType.BARRIER_RELEASE, "nowait", {"duration": 5}, at=99.0)
    assert records == []


# --------------------------------------------------------------------------- hang


async def test_hang_names_each_awaited_parent() -> None:
    debugger, records, clock = make_debugger()
    await feed(debugger, EventType.STEP_START, "a", at=10.0)
    await feed(
        debugger, EventType.BARRIER_WAIT, "join", waiting_for("a", "b", expected_count=2), at=20.0
    )
    clock.now = 30.12345
    await feed(debugger, EventType.MAP_WORKER, "w[0]", at=22.34567)
    assert len(records) == 1
    hang = records[0]
    assert hang.kind == "hang"
    assert hang.wait_time_s == pytest.approx(2.34567)
    assert (
        hang.message
        == "BARRIER HANG DETECTED: join; wait=2.3s; a: inactive 20.1s, b: never started"
    )


async def test_hang_is_checked_only_when_work_starts_and_only_once() -> None:
    debugger, records, _ = make_debugger()
    await feed(debugger, EventType.BARRIER_WAIT, "join", waiting_for("a"), at=20.0)
    for kind in (EventType.STEP_END, EventType.TOKEN, EventType.STEP_ERROR):
        await feed(debugger, kind, "q", at=30.0)
    assert records == []
    await feed(debugger, EventType.STEP_START, "q", at=30.0)
    await feed(debugger, EventType.STEP_START, "r", at=31.0)
    await feed(debugger, EventType.BARRIER_RELEASE, "join", {}, at=32.0)
    assert [r.kind for r in records] == ["hang"]


async def test_hang_with_nothing_awaited_says_no_worker_detail() -> None:
    debugger, records, _ = make_debugger(warn_after=-1)
    await feed(debugger, EventType.BARRIER_WAIT, "join", None, at=20.0)
    await feed(debugger, EventType.STEP_START, "a", at=20.0)
    assert records[0].message == "BARRIER HANG DETECTED: join; wait=0.0s; no worker detail"


async def test_a_parent_starting_late_counts_as_active() -> None:
    debugger, records, _ = make_debugger()
    await feed(debugger, EventType.BARRIER_WAIT, "join", waiting_for("a", "b"), at=20.0)
    await feed(debugger, EventType.STEP_START, "a", at=30.0)
    assert (
        records[0].message
        == "BARRIER HANG DETECTED: join; wait=10.0s; a: inactive 70.0s, b: never started"
    )


# --------------------------------------------------------------------------- run end


async def test_unresolved_barriers_are_reported_at_end_and_state_cleared() -> None:
    debugger, records, _ = make_debugger()
    await feed(debugger, EventType.STEP_START, "a")
    await feed(debugger, EventType.BARRIER_WAIT, "j2", waiting_for("a", expected_count=1), at=50.0)
    await feed(debugger, EventType.BARRIER_WAIT, "j3", "not a dict", at=50.0)
    await debugger.on_pipeline_end(None, None, META, 7.25)
    assert records == [
        BarrierDebugRecord(
            "unresolved", "j2", 7.25, 1, 0, ("a",), "Pipeline completed with unresolved barrier: j2"
        ),
        BarrierDebugRecord(
            "unresolved", "j3", 7.25, 0, 0, (), "Pipeline completed with unresolved barrier: j3"
        ),
    ]
    assert (debugger.waiting_barriers, debugger.worker_activity, debugger.warned_barriers) == (
        {},
        {},
        set(),
    )


async def test_waiting_barriers_at_error_are_reported_as_error_state() -> None:
    debugger, records, _ = make_debugger()
    await feed(
        debugger,
        EventType.BARRIER_WAIT,
        "join",
        waiting_for("a", "b", expected_count=2, completed_count=1),
        at=20.0,
    )
    await debugger.on_pipeline_error(None, None, META, ValueError("x"))
    assert records == [
        BarrierDebugRecord(
            "error_state",
            "join",
            0.0,
            2,
            1,
            ("a", "b"),
            "Pipeline failed with waiting barrier: join; waiting_for=2",
        )
    ]
    assert debugger.waiting_barriers == {}


async def test_client_close_reports_unresolved_barriers_as_closed() -> None:
    debugger, records, _ = make_debugger()
    await feed(debugger, EventType.BARRIER_WAIT, "join", waiting_for("a"), at=20.0)
    end = PipelineEndData(PipelineTerminalStatus.CLIENT_CLOSED, 0.5)
    await feed(debugger, EventType.FINISH, "system", end, at=21.0)
    await debugger.on_pipeline_end(None, None, META, 0.5)
    assert [(r.kind, r.message) for r in records] == [
        ("unresolved", "Pipeline closed by client with unresolved barrier: join")
    ]


async def test_state_resets_at_run_start() -> None:
    debugger, records, _ = make_debugger()
    await feed(debugger, EventType.STEP_START, "a")
    await feed(debugger, EventType.BARRIER_WAIT, "join", waiting_for("a"), at=20.0)
    await debugger.on_pipeline_start(None, None, META)
    await debugger.on_pipeline_end(None, None, META, 1.0)
    assert records == []
    assert debugger.worker_activity == {}


# --------------------------------------------------------------------------- activity


async def test_wait_payload_is_tracked_as_upstream_does() -> None:
    debugger, _, _ = make_debugger()
    payload = {
        "timeout": None,
        "dependencies": ["a", "b"],
        "expected_count": 2,
        "completed_count": 0,
        "waiting_for": ["a", "b"],
    }
    await feed(debugger, EventType.BARRIER_WAIT, "join", payload, at=20.0)
    await feed(debugger, EventType.BARRIER_WAIT, "bare", {}, at=21.0)
    assert debugger.waiting_barriers == {
        "join": {
            "start_time": 20.0,
            "expected_count": 2,
            "completed_count": 0,
            "waiting_for": ["a", "b"],
            "timeout": None,
        },
        "bare": {
            "start_time": 21.0,
            "expected_count": 0,
            "completed_count": 0,
            "waiting_for": [],
            "timeout": 0,
        },
    }


async def test_step_end_and_error_clear_activity() -> None:
    debugger, _, _ = make_debugger()
    for stage in ("a", "b", "c"):
        await feed(debugger, EventType.STEP_START, stage, at=40.0)
    await feed(debugger, EventType.STEP_END, "a")
    await feed(debugger, EventType.STEP_ERROR, "b", "boom")
    assert debugger.worker_activity == {"c": 40.0}


async def test_map_complete_clears_the_map_and_its_worker_slots() -> None:
    debugger, _, _ = make_debugger()
    for stage in ("m", "m[0]", "w", "w[0]", "w[1]", "w[10]", "wx"):
        await feed(debugger, EventType.STEP_START, stage)
    await feed(debugger, EventType.MAP_COMPLETE, "m", {"target": "w", "item_count": 1})
    assert sorted(debugger.worker_activity) == ["m[0]", "wx"]


async def test_one_worker_finishing_keeps_its_running_siblings_active() -> None:
    """Deliberate difference (spec §21 B21): upstream forgot the step after the first END."""
    debugger, records, clock = make_debugger()
    for n, at in ((2, 10.0), (3, 11.0), (4, 12.0)):
        await feed(
            debugger,
            EventType.STEP_START,
            "w",
            at=at,
            invocation_id=f"r:{n}",
            owner_invocation_id="r:1",
        )
    await feed(
        debugger, EventType.STEP_END, "w", at=13.0, invocation_id="r:4", owner_invocation_id="r:1"
    )
    assert debugger.worker_activity == {"w": 11.0}
    await feed(
        debugger, EventType.STEP_END, "w", at=13.0, invocation_id="r:3", owner_invocation_id="r:1"
    )
    assert debugger.worker_activity == {"w": 10.0}

    await feed(debugger, EventType.BARRIER_WAIT, "join", waiting_for("w"), at=14.0)
    clock.now = 40.0
    await feed(debugger, EventType.STEP_START, "other", at=20.0, invocation_id="r:9")
    assert records[0].message == "BARRIER HANG DETECTED: join; wait=6.0s; w: inactive 30.0s"


async def test_map_complete_clears_only_its_own_workers() -> None:
    debugger, _, _ = make_debugger()
    await feed(
        debugger, EventType.STEP_START, "w", at=10.0, invocation_id="r:2", owner_invocation_id="r:1"
    )
    await feed(
        debugger, EventType.STEP_START, "w", at=11.0, invocation_id="r:5", owner_invocation_id="r:4"
    )
    await feed(
        debugger,
        EventType.MAP_COMPLETE,
        "mapper_a",
        {"target": "w", "item_count": 1},
        invocation_id="r:1",
        owner_invocation_id="r:1",
    )
    assert debugger.worker_activity == {"w": 11.0}


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "text",
        {"waiting_for": "ab", "expected_count": "x"},
        {"waiting_for": 5, "completed_count": None},
        {"waiting_for": [1, None], "expected_count": 10**400},
    ],
)
async def test_malformed_wait_payloads_do_not_raise(payload: Any) -> None:
    debugger, records, _ = make_debugger(warn_after=0.5)
    await feed(debugger, EventType.BARRIER_WAIT, "join", payload, at=20.0)
    await feed(debugger, EventType.STEP_START, "z", at=30.0)
    await feed(debugger, EventType.MAP_COMPLETE, "m", payload)
    await debugger.on_pipeline_end(None, None, META, 1.0)
    assert [r.kind for r in records] == ["hang", "unresolved"]
    assert all(isinstance(r.expected_count, int) for r in records)


async def test_without_a_sink_nothing_is_emitted() -> None:
    debugger = BarrierDebugger(warn_after=0.0, clock=Clock())
    await feed(debugger, EventType.BARRIER_WAIT, "j", waiting_for("a"), at=0.0)
    await feed(debugger, EventType.STEP_START, "x", at=5.0)
    await feed(debugger, EventType.BARRIER_WAIT, "k", waiting_for("a"), at=0.0)
    await debugger.on_pipeline_end(None, None, META, 1.0)
    assert debugger.warned_barriers == set()


def test_bad_constructor_arguments_are_rejected() -> None:
    with pytest.raises(TypeError, match="warn_after"):
        BarrierDebugger(warn_after="1", clock=Clock())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        BarrierDebugger(warn_after=1.0, clock=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sink"):
        BarrierDebugger(warn_after=1.0, clock=Clock(), sink=3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real runs


async def test_a_slow_parent_of_a_real_join_is_reported_once() -> None:
    pipe: Pipe[Any, Any] = Pipe(name="join")

    @pipe.step(to=["fast", "slow"])
    async def root(state: Any) -> None:
        return None

    @pipe.step(to="join")
    async def fast(state: Any) -> None:
        return None

    @pipe.step(to="join")
    async def slow(state: Any) -> None:
        await asyncio.sleep(0.05)

    @pipe.step(barrier_timeout=5.0)
    async def join(state: Any) -> None:
        return None

    records: list[BarrierDebugRecord] = []
    pipe.add_observer(BarrierDebugger(warn_after=0.01, clock=time.time, sink=records.append))
    await collect(pipe)
    assert [r.barrier_name for r in records] == ["join"]
    assert records[0].kind in {"slow", "hang"}
    assert records[0].wait_time_s >= 0.04


# --------------------------------------------------------------------------- any payload


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


_ODD_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=300)
    | st.binary(max_size=20)
    | st.sampled_from([object(), _Unprintable(), float("nan"), 10**400]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(st.sampled_from(EventType), min_size=1, max_size=6), payload=_ODD_VALUES)
async def test_no_payload_makes_the_debugger_raise(kinds: list[EventType], payload: Any) -> None:
    debugger, records, _ = make_debugger(warn_after=0.0)
    await debugger.on_pipeline_start(None, None, META)
    for n, kind in enumerate(kinds):
        await feed(debugger, kind, "join", payload, at=float(n))
    await debugger.on_pipeline_error(None, None, META, ValueError("x"))
    assert all(isinstance(r.waiting_for, tuple) for r in records)
    assert debugger.waiting_barriers == {}
