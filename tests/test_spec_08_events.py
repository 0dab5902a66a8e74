"""The event model: golden traces (Appendix A), fields, payloads and ordering (spec §8)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from helpers import collect, end_data, index_of, normalise, of_type, pairs, shape
from justpipe import Event, EventType, Pipe, Retry, Skip, Stop, Suspend
from justpipe.types import BarrierType, NodeKind, PipelineTerminalStatus, StepStatus


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines()]


async def noop(s: Any) -> None:
    pass


# --------------------------------------------------------------------------- Appendix A traces


def map_pipe(items: list[Any]) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.map(each="worker", to="after")
    async def mapper(s: Any) -> list[Any]:
        return items

    @pipe.step
    async def worker(s: Any, item: Any) -> None:
        pass

    pipe.step("after")(noop)
    return pipe


MAP_TRACE = lines("""
    start system system -/-/- a1 ()
    step_start mapper map I1/-/I1 a1 ()
    map_start mapper map I1/-/I1 a1 ()
    map_worker worker[0] map I1/-/I1 a1 ()
    map_worker worker[1] map I1/-/I1 a1 ()
    step_start worker step I2/I1/I1 a1 (worker[0])
    step_end worker step I2/I1/I1 a1 (worker[0])
    step_start worker step I3/I1/I1 a2 (worker[1])
    step_end worker step I3/I1/I1 a2 (worker[1])
    map_complete mapper map I1/-/I1 a1 ()
    step_end mapper map I1/-/I1 a1 ()
    step_start after step I4/-/I4 a1 ()
    step_end after step I4/-/I4 a1 ()
    finish system system -/-/- a1 ()
""")


async def test_map_trace() -> None:
    state: dict[str, Any] = {}
    events = await collect(map_pipe([1, 2]), state)
    assert shape(events) == MAP_TRACE
    norm = normalise(events, state)
    assert norm[2].payload == {"target": "worker", "item_count": 2}
    assert [e.payload for e in norm[3:5]] == [
        {"index": i, "total": 2, "target": "worker", "owner": "mapper"} for i in (0, 1)
    ]
    assert norm[9].payload == {
        "target": "worker",
        "item_count": 2,
        "owner_invocation_id": "I1",
        "owner_scope": (),
    }
    assert isinstance(events[9].payload["owner_scope"], tuple)
    assert [e.payload for e in norm if e.type == "step_end"] == ["<S>"] * 4
    assert events[10].meta is None, "owner-level STEP_END of a map carries no step meta"
    assert events[6].meta is not None
    assert events[6].meta["framework"]["attempt"] == 1


EMPTY_MAP_TRACE = lines("""
    start system system -/-/- a1 ()
    step_start mapper map I1/-/I1 a1 ()
    map_start mapper map I1/-/I1 a1 ()
    map_complete mapper map I1/-/I1 a1 ()
    step_end mapper map I1/-/I1 a1 ()
    step_start after step I2/-/I2 a1 ()
    step_end after step I2/-/I2 a1 ()
    finish system system -/-/- a1 ()
""")


async def test_empty_map_trace_in_fixed_order() -> None:
    events = await collect(map_pipe([]))
    assert shape(events) == EMPTY_MAP_TRACE  # B6: START -> COMPLETE -> owner END
    assert events[2].payload == {"target": "worker", "item_count": 0}
    assert events[3].payload["item_count"] == 0


async def test_empty_map_owner_step_end_carries_step_meta() -> None:
    events = await collect(map_pipe([]))
    meta = events[4].meta
    assert meta is not None
    assert meta["framework"]["status"] == StepStatus.SUCCESS


SWITCH_TRACE = lines("""
    start system system -/-/- a1 ()
    step_start route switch I1/-/I1 a1 ()
    step_end route switch I1/-/I1 a1 ()
    step_start bx step I2/I1/I2 a1 ()
    step_end bx step I2/I1/I2 a1 ()
    finish system system -/-/- a1 ()
""")


async def test_switch_trace() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.switch(to={"x": "bx"})
    async def route(s: Any) -> str:
        return "x"

    pipe.step("bx")(noop)
    assert shape(await collect(pipe)) == SWITCH_TRACE


def sub_pipe() -> Pipe[Any, Any]:
    child: Pipe[Any, Any] = Pipe(name="child")
    child.step("c1", to="c2")(noop)

    @child.step
    async def c2(s: Any) -> Any:
        yield "tok"

    pipe: Pipe[Any, Any] = Pipe()

    @pipe.sub(pipeline=child, to="after")
    async def run_child(s: Any) -> Any:
        return s

    pipe.step("after")(noop)
    return pipe


SUB_TRACE = lines("""
    start system system -/-/- a1 ()
    step_start run_child sub I1/-/I1 a1 ()
    start run_child:system system -/I1/I1 a1 (run_child)
    step_start run_child:c1 step I2/I1/I1 a1 (run_child)
    step_end run_child:c1 step I2/I1/I1 a1 (run_child)
    step_start run_child:c2 step I3/I1/I1 a1 (run_child)
    token run_child:c2 system -/I1/I1 a1 (run_child)
    step_end run_child:c2 step I3/I1/I1 a1 (run_child)
    finish run_child:system system -/I1/I1 a1 (run_child)
    step_end run_child sub I1/-/I1 a1 ()
    step_start after step I4/-/I4 a1 ()
    step_end after step I4/-/I4 a1 ()
    finish system system -/-/- a1 ()
""")


async def test_sub_pipeline_trace() -> None:
    state: dict[str, Any] = {}
    events = await collect(sub_pipe(), state)
    assert shape(events) == SUB_TRACE
    norm = normalise(events, state)
    forwarded = norm[2:9]
    assert {(e.run_id, e.origin_run_id, e.parent_run_id) for e in forwarded} == {("R0", "R1", "R1")}
    native = norm[:2] + norm[9:]
    assert {(e.run_id, e.origin_run_id, e.parent_run_id) for e in native} == {("R0", "R0", None)}
    assert norm[6].payload == "tok"
    assert events[8].payload.status is PipelineTerminalStatus.SUCCESS
    assert events[9].meta is None, "owner-level STEP_END of a sub carries no step meta"
    assert [e.seq for e in events] == list(range(1, 14))


def barrier_pipe(
    timeout: float | None,
    slow_s: float,
    kind: BarrierType = BarrierType.ALL,
) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["fast", "slow"])(noop)
    pipe.step("fast", to="join")(noop)

    @pipe.step(to="join")
    async def slow(s: Any) -> None:
        await asyncio.sleep(slow_s)

    pipe.step("join", barrier_timeout=timeout, barrier_type=kind)(noop)
    return pipe


async def test_all_barrier_timeout_trace() -> None:
    events = await collect(barrier_pipe(0.1, 0.3))
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "root"),
        ("step_end", "root"),
        ("step_start", "fast"),
        ("step_end", "fast"),
        ("step_start", "slow"),
        ("barrier_wait", "join"),
        ("step_error", "join"),
        ("step_end", "slow"),
        ("finish", "system"),
    ]
    wait, error = events[6], events[7]
    assert wait.node_kind is NodeKind.BARRIER
    assert wait.invocation_id is None
    assert wait.payload["timeout"] == 0.1
    assert sorted(wait.payload["dependencies"]) == ["fast", "slow"]
    assert sorted(wait.payload["waiting_for"]) == ["fast", "slow"]
    assert (wait.payload["expected_count"], wait.payload["completed_count"]) == (2, 0)
    assert error.payload == "Barrier timeout for step 'join' after 0.1s"
    assert error.node_kind is NodeKind.STEP
    assert error.invocation_id is None
    data = end_data(events)
    assert (data.status, data.failed_step) == (PipelineTerminalStatus.FAILED, "join")


async def test_all_barrier_released_in_time_trace() -> None:
    events = await collect(barrier_pipe(1.0, 0.02))
    without_release = [p for p in pairs(events) if p[0] != "barrier_release"]
    assert without_release == [
        ("start", "system"),
        ("step_start", "root"),
        ("step_end", "root"),
        ("step_start", "fast"),
        ("step_end", "fast"),
        ("step_start", "slow"),
        ("barrier_wait", "join"),
        ("step_end", "slow"),
        ("step_start", "join"),
        ("step_end", "join"),
        ("finish", "system"),
    ]
    (release,) = of_type(events, EventType.BARRIER_RELEASE)
    assert release.node_kind is NodeKind.BARRIER
    assert release.stage == "join"
    assert set(release.payload) == {"duration"}
    assert release.payload["duration"] >= 0
    assert round(release.payload["duration"], 6) == release.payload["duration"]
    assert events.index(release) > index_of(events, EventType.STEP_END, "slow")
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_any_barrier_trace_runs_the_join_once() -> None:
    events = await collect(barrier_pipe(None, 0.02, BarrierType.ANY))
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "root"),
        ("step_end", "root"),
        ("step_start", "fast"),
        ("step_end", "fast"),
        ("step_start", "slow"),
        ("step_start", "join"),
        ("step_end", "join"),
        ("step_end", "slow"),
        ("finish", "system"),
    ]


async def test_retry_then_skip_trace() -> None:
    calls: list[int] = []

    def handler(error: Exception) -> Any:
        calls.append(1)
        return Retry() if len(calls) == 1 else Skip()

    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b", on_error=handler)
    async def a(s: Any) -> None:
        raise ValueError("x")

    pipe.step("b")(noop)
    events = await collect(pipe)
    assert shape(events) == lines("""
        start system system -/-/- a1 ()
        step_start a step I1/-/I1 a1 ()
        step_start a step I2/I1/I1 a2 ()
        step_end a step I2/I1/I1 a2 ()
        finish system system -/-/- a1 ()
    """)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_unhandled_error_trace_successor_still_runs() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    async def a(s: Any) -> None:
        raise ValueError("boom")

    pipe.step("b")(noop)
    events = await collect(pipe)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "a"),
        ("step_error", "a"),
        ("step_start", "b"),
        ("step_end", "b"),
        ("finish", "system"),
    ]
    error = events[2]
    assert error.payload == "boom"
    assert error.meta is not None
    assert error.meta["framework"]["status"] == StepStatus.ERROR
    assert error.invocation_id == events[1].invocation_id


async def test_run_timeout_trace() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def a(s: Any) -> None:
        await asyncio.sleep(5)

    events = await collect(pipe, timeout=0.05)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "a"),
        ("timeout", "system"),
        ("finish", "system"),
    ]
    assert events[2].payload == "Pipeline exceeded timeout of 0.05s"
    assert events[2].node_kind is NodeKind.SYSTEM


async def test_step_timeout_trace() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(timeout=0.05)
    async def a(s: Any) -> None:
        await asyncio.sleep(5)

    events = await collect(pipe)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "a"),
        ("step_error", "a"),
        ("finish", "system"),
    ]
    assert events[2].payload.startswith("Step 'a' timed out after 0.05s")


async def test_cancellation_trace() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    async def a(s: Any, cancel: Any) -> None:
        cancel.cancel("user")
        await cancel.checkpoint()

    pipe.step("b")(noop)
    events = await collect(pipe)
    assert shape(events) == lines("""
        start system system -/-/- a1 ()
        step_start a step I1/-/I1 a1 ()
        cancelled a step I1/-/I1 a1 ()
        finish system system -/-/- a1 ()
    """)
    assert events[2].payload == "user"


async def test_suspend_trace() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    async def a(s: Any) -> Any:
        return Suspend("wait")

    pipe.step("b")(noop)
    events = await collect(pipe)
    assert shape(events) == lines("""
        start system system -/-/- a1 ()
        step_start a step I1/-/I1 a1 ()
        suspend a system -/-/- a1 ()
        step_end a step I1/-/I1 a1 ()
        finish system system -/-/- a1 ()
    """)
    assert events[2].payload == "wait"


@pytest.mark.parametrize("stop", [Stop, Stop()])
async def test_stop_trace(stop: Any) -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    async def a(s: Any) -> Any:
        return stop

    pipe.step("b")(noop)
    events = await collect(pipe)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "a"),
        ("step_end", "a"),
        ("finish", "system"),
    ]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


# --------------------------------------------------------------------------- §8.1 fields


async def test_seq_numbers_are_contiguous_from_one() -> None:
    events = await collect(map_pipe([1, 2, 3]))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_invocation_ids_are_run_id_colon_counter() -> None:
    events = await collect(map_pipe([1, 2]))
    run_id = events[0].run_id
    ids = [e.invocation_id for e in events if e.type is EventType.STEP_START]
    assert ids == [f"{run_id}:{n}" for n in (1, 2, 3, 4)]


async def test_timestamps_are_creation_times_in_order() -> None:
    before = time.time()
    events = await collect(map_pipe([1]))
    after = time.time()
    assert all(before <= e.timestamp <= after for e in events)


async def test_start_payload_is_the_state_and_step_end_payload_the_current_state() -> None:
    state: dict[str, Any] = {}
    events = await collect(map_pipe([1]), state)
    assert events[0].payload is state
    assert all(e.payload is state for e in of_type(events, EventType.STEP_END))
    assert all(e.payload is None for e in of_type(events, EventType.STEP_START))


async def test_attempt_counts_invocations_per_step_name() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def a(s: Any) -> Any:
        s["n"] = s.get("n", 0) + 1
        return "b" if s["n"] < 3 else None

    @pipe.step
    async def b(s: Any) -> str:
        return "a"

    events = await collect(pipe, start="a")
    starts = of_type(events, EventType.STEP_START)
    assert [(e.stage, e.attempt) for e in starts] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        ("a", 3),
    ]
    parents = [e.parent_invocation_id for e in starts]
    assert parents == [None] + [e.invocation_id for e in starts[:-1]]


async def test_step_meta_framework_fields() -> None:
    events = await collect(map_pipe([1]))
    for event in of_type(events, EventType.STEP_END)[:1]:
        framework = event.meta["framework"]  # type: ignore[index]
        assert set(framework) == {"duration_s", "attempt", "status"}
        assert framework["status"] == "success"
        assert framework["duration_s"] >= 0
        assert round(framework["duration_s"], 6) == framework["duration_s"]


async def test_only_step_ends_errors_and_finish_carry_meta() -> None:
    events = await collect(sub_pipe())
    for event in events:
        if event.type not in (EventType.STEP_END, EventType.STEP_ERROR, EventType.FINISH):
            assert event.meta is None, event
    assert events[-1].meta is None, "no run meta written"


async def test_token_and_suspend_are_system_events_without_lineage() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def talk(s: Any) -> Any:
        yield "hello"
        yield Suspend("later")

    events = await collect(pipe)
    for event in of_type(events, EventType.TOKEN) + of_type(events, EventType.SUSPEND):
        assert event.node_kind is NodeKind.SYSTEM
        assert event.invocation_id is None
        assert event.scope == ()
    assert [e.payload for e in of_type(events, EventType.TOKEN)] == ["hello"]


async def test_events_are_immutable() -> None:
    events = await collect(map_pipe([]))
    with pytest.raises(AttributeError):
        events[0].seq = 99  # type: ignore[misc]


# --------------------------------------------------------------------------- nested subs


def nested_pipe() -> Pipe[Any, Any]:
    leaf: Pipe[Any, Any] = Pipe(name="leaf")

    @leaf.map(each="lw")
    async def lm(s: Any) -> list[int]:
        return [1]

    @leaf.step
    async def lw(s: Any, item: int) -> None:
        pass

    mid: Pipe[Any, Any] = Pipe(name="mid")
    mid.sub("to_leaf", pipeline=leaf)(lambda s: s)
    outer: Pipe[Any, Any] = Pipe(name="outer")
    outer.sub("to_mid", pipeline=mid)(lambda s: s)
    return outer


async def test_nested_sub_stages_scopes_and_run_ids() -> None:
    state: dict[str, Any] = {}
    events = await collect(nested_pipe(), state)
    norm = normalise(events, state)
    worker = next(e for e in norm if e.type == "step_start" and e.stage.endswith("lw"))
    assert worker.stage == "to_mid:to_leaf:lw"
    assert worker.scope == ("to_mid", "to_leaf", "lw[0]")
    assert (worker.run_id, worker.origin_run_id, worker.parent_run_id) == ("R0", "R2", "R1")
    assert worker.parent_invocation_id == worker.owner_invocation_id == "I1"
    mid_finish = next(e for e in norm if e.type == "finish" and e.stage == "to_mid:system")
    assert (mid_finish.origin_run_id, mid_finish.parent_run_id) == ("R1", "R1")
    assert [e.stage for e in norm if e.type == "finish"] == [
        "to_mid:to_leaf:system",
        "to_mid:system",
        "system",
    ]
    assert {e.run_id for e in norm} == {"R0"}


async def test_forwarded_events_keep_the_child_timestamp_and_payload() -> None:
    seen: list[Event] = []
    child: Pipe[Any, Any] = Pipe(name="child")

    @child.step
    async def c(s: Any) -> Any:
        yield {"k": 1}

    class Spy:
        async def on_pipeline_start(self, *a: Any) -> None: ...
        async def on_event(self, state: Any, ctx: Any, meta: Any, event: Event) -> None:
            seen.append(event)

        async def on_pipeline_end(self, *a: Any) -> None: ...
        async def on_pipeline_error(self, *a: Any) -> None: ...

    child.add_observer(Spy())
    pipe: Pipe[Any, Any] = Pipe()
    pipe.sub("s", pipeline=child)(lambda s: s)
    events = await collect(pipe)
    child_token = next(e for e in seen if e.type is EventType.TOKEN)
    parent_token = next(e for e in events if e.type is EventType.TOKEN)
    assert parent_token.timestamp == child_token.timestamp
    assert parent_token.payload is child_token.payload
    assert parent_token.origin_run_id == child_token.run_id
    assert parent_token.run_id != child_token.run_id


# --------------------------------------------------------------------------- §8.3 ordering


async def test_linear_order() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to="b")(noop)
    pipe.step("b")(noop)
    events = await collect(pipe)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "a"),
        ("step_end", "a"),
        ("step_start", "b"),
        ("step_end", "b"),
        ("finish", "system"),
    ]


async def test_tokens_fall_between_their_step_start_and_end() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    async def a(s: Any) -> Any:
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    pipe.step("b")(noop)
    events = await collect(pipe)
    start = index_of(events, EventType.STEP_START, "a")
    end = index_of(events, EventType.STEP_END, "a")
    tokens = [i for i, e in enumerate(events) if e.type is EventType.TOKEN]
    assert len(tokens) == 3
    assert all(start < i < end for i in tokens)


async def test_join_starts_after_every_all_parent_ended() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["p1", "p2", "p3"])(noop)
    for i, delay in enumerate([0.02, 0.0, 0.01], start=1):

        async def parent(s: Any, delay: float = delay) -> None:
            await asyncio.sleep(delay)

        pipe.step(f"p{i}", to="join")(parent)
    pipe.step("join")(noop)
    events = await collect(pipe)
    join_start = index_of(events, EventType.STEP_START, "join")
    assert all(index_of(events, EventType.STEP_END, f"p{i}") < join_start for i in (1, 2, 3))
    assert [e.stage for e in of_type(events, EventType.STEP_START)].count("join") == 1


async def test_every_invocation_gets_its_own_step_end() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["x", "y"])(noop)
    pipe.step("x")(lambda s: "c")
    pipe.step("y")(lambda s: "c")

    @pipe.step
    async def c(s: Any) -> None:
        await asyncio.sleep(0.01)

    events = await collect(pipe, start="root")
    starts = [e.invocation_id for e in events if e.type is EventType.STEP_START and e.stage == "c"]
    ends = [e.invocation_id for e in events if e.type is EventType.STEP_END and e.stage == "c"]
    assert len(starts) == 2
    assert set(starts) == set(ends)


async def test_cancelled_step_gets_no_step_end_or_error() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def a(s: Any, cancel: Any) -> None:
        cancel.cancel()
        await cancel.checkpoint()

    events = await collect(pipe)
    assert [p for p in pairs(events) if p[1] == "a"] == [("step_start", "a"), ("cancelled", "a")]


async def test_map_worker_events_precede_worker_steps_in_index_order() -> None:
    events = await collect(map_pipe(list(range(5))))
    kinds = [e.type for e in events]
    last_worker_event = max(i for i, t in enumerate(kinds) if t is EventType.MAP_WORKER)
    first_worker_start = index_of(events, EventType.STEP_START, "worker")
    assert index_of(events, EventType.MAP_START, "mapper") < last_worker_event < first_worker_start
    assert [e.payload["index"] for e in of_type(events, EventType.MAP_WORKER)] == list(range(5))
    complete = index_of(events, EventType.MAP_COMPLETE, "mapper")
    worker_ends = [
        i for i, e in enumerate(events) if e.type is EventType.STEP_END and e.stage == "worker"
    ]
    assert max(worker_ends) < complete < index_of(events, EventType.STEP_END, "mapper")
    assert index_of(events, EventType.STEP_END, "mapper") < index_of(
        events, EventType.STEP_START, "after"
    )


# --------------------------------------------------------------------------- compiled vs pure


def differential_scenarios() -> dict[str, tuple[Any, dict[str, Any]]]:
    """Deterministic pipelines (builder, run kwargs) whose traces must not depend on the core."""

    def linear() -> Pipe[Any, Any]:
        pipe: Pipe[Any, Any] = Pipe()
        pipe.step("a", to="b")(noop)
        pipe.step("b")(noop)
        return pipe

    def lazy_map() -> Pipe[Any, Any]:
        pipe: Pipe[Any, Any] = Pipe()
        pipe.map("fan", each="work", to="after", max_concurrency=2)(lambda s: iter(range(5)))

        @pipe.step
        async def work(s: Any, item: int) -> Any:
            await asyncio.sleep(0)
            yield item

        pipe.step("after")(noop)
        return pipe

    def switch() -> Pipe[Any, Any]:
        pipe: Pipe[Any, Any] = Pipe()
        pipe.switch("route", to={"x": "bx"}, default="other")(lambda s: "x")
        pipe.step("bx")(noop)
        pipe.step("other")(noop)
        return pipe

    def errors() -> Pipe[Any, Any]:
        calls: list[int] = []

        def handler(error: Exception) -> Any:
            calls.append(1)
            return Retry() if len(calls) == 1 else "tail"

        pipe: Pipe[Any, Any] = Pipe()
        pipe.step("a", to="b", on_error=handler)(lambda s: 1 / 0)
        pipe.step("b")(lambda s: [].pop())
        pipe.step("tail")(lambda s: Suspend("done"))
        return pipe

    def joins() -> Pipe[Any, Any]:
        pipe: Pipe[Any, Any] = Pipe()
        pipe.step("root", to=["p1", "p2", "p3"])(noop)
        pipe.step("p1", to=["all", "any"])(noop)
        pipe.step("p2", to=["all", "any"])(noop)
        pipe.step("p3", to="all")(lambda s: Skip())
        pipe.step("all")(noop)
        pipe.step("any", barrier_type=BarrierType.ANY)(noop)
        return pipe

    def cancel() -> Pipe[Any, Any]:
        pipe: Pipe[Any, Any] = Pipe()
        pipe.map("fan", each="work")(lambda s: [1, 2, 3])

        @pipe.step
        async def work(s: Any, item: int, cancel: Any) -> None:
            if item == 2:
                cancel.cancel("stop")
            await cancel.checkpoint()

        return pipe

    return {
        "linear": (linear, {}),
        "map": (lambda: map_pipe([1, 2, 3]), {"queue_size": 1}),
        "empty-map": (lambda: map_pipe([]), {}),
        "lazy-map": (lazy_map, {"queue_size": 2}),
        "switch": (switch, {}),
        "sub": (sub_pipe, {}),
        "errors": (errors, {"start": "a"}),
        "joins": (joins, {}),
        "cancel": (cancel, {}),
    }


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("scenario", list(differential_scenarios()))
async def test_compiled_and_pure_cores_give_identical_traces(scenario: str) -> None:
    from justpipe import _core

    if not {"cython", "python"} <= set(_core.AVAILABLE_BACKENDS):
        pytest.skip(f"only {_core.AVAILABLE_BACKENDS} available: nothing to compare")
    build, run_kwargs = differential_scenarios()[scenario]
    traces = {}
    previous = _core.BACKEND
    try:
        for backend in ("cython", "python"):
            _core._use(backend)
            state: dict[str, Any] = {}
            traces[backend] = normalise(await collect(build(), state, **run_kwargs), state)
    finally:
        _core._use(previous)
    assert traces["cython"] == traces["python"]
    assert traces["python"][-1].type == "finish"
