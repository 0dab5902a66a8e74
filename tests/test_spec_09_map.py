"""Map fan-out: items, workers, concurrency limits, lazy feeding, failures (spec §9.4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from helpers import collect, end_data, index_of, of_type, pairs, stages
from justpipe import EventType, Pipe, Retry, Skip, Stop
from justpipe.types import PipelineTerminalStatus


def fan_pipe(
    produce: Any,
    worker: Any = None,
    *,
    to: Any = None,
    **map_options: Any,
) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work", to=to, **map_options)(produce)

    async def default_worker(s: Any, item: Any) -> None:
        s.setdefault("done", []).append(item)

    pipe.step("work")(worker or default_worker)
    if to == "after":

        @pipe.step
        async def after(s: Any) -> None:
            s["after"] = True

    return pipe


# --------------------------------------------------------------------------- item sources


@pytest.mark.parametrize(
    "make",
    [
        lambda: [1, 2, 3],
        lambda: (1, 2, 3),
        lambda: range(1, 4),
        lambda: (i for i in (1, 2, 3)),
        lambda: iter([1, 2, 3]),
        lambda: {1: "a", 2: "b", 3: "c"},
    ],
    ids=["list", "tuple", "range", "generator", "iterator", "dict-keys"],
)
async def test_any_iterable_result_fans_out(make: Any) -> None:
    state: dict[str, Any] = {}
    events = await collect(fan_pipe(lambda s: make(), to="after"), state)
    assert sorted(state["done"]) == [1, 2, 3]
    assert state["after"] is True
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_async_generator_result_is_drained() -> None:
    async def produce(s: Any) -> Any:
        async def items() -> AsyncIterator[int]:
            for i in range(3):
                yield i

        return items()

    state: dict[str, Any] = {}
    events = await collect(fan_pipe(produce), state)
    assert sorted(state["done"]) == [0, 1, 2]
    (start,) = of_type(events, EventType.MAP_START)
    assert start.payload == {"target": "work", "item_count": 3}


async def test_async_generator_map_function_is_drained() -> None:
    async def produce(s: Any) -> AsyncIterator[int]:
        for i in range(3):
            yield i

    state: dict[str, Any] = {}
    events = await collect(fan_pipe(produce), state)
    assert sorted(state["done"]) == [0, 1, 2]
    assert of_type(events, EventType.TOKEN) == []


async def test_sync_map_function_is_supported() -> None:
    state: dict[str, Any] = {}
    await collect(fan_pipe(lambda s: ["x"]), state)
    assert state["done"] == ["x"]


@pytest.mark.parametrize("result", [None, 42, object()])
async def test_non_iterable_result_is_a_map_step_error(result: Any) -> None:
    state: dict[str, Any] = {}
    events = await collect(fan_pipe(lambda s: result, to="after"), state)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "fan"
    assert "must return an iterable" in error.payload
    assert of_type(events, EventType.MAP_START) == []
    assert "done" not in state


async def test_map_function_raising_goes_through_the_failure_chain() -> None:
    def produce(s: Any) -> list[int]:
        raise KeyError("items")

    events = await collect(fan_pipe(produce))
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "fan"),
        ("step_error", "fan"),
        ("finish", "system"),
    ]


# --------------------------------------------------------------------------- workers


async def test_worker_lineage_and_scopes() -> None:
    events = await collect(fan_pipe(lambda s: ["a", "b", "c"]))
    owner = of_type(events, EventType.STEP_START)[0]
    workers = [e for e in of_type(events, EventType.STEP_START) if e.stage == "work"]
    assert [w.scope for w in workers] == [("work[0]",), ("work[1]",), ("work[2]",)]
    assert {w.parent_invocation_id for w in workers} == {owner.invocation_id}
    assert {w.owner_invocation_id for w in workers} == {owner.invocation_id}
    assert [w.attempt for w in workers] == [1, 2, 3]
    assert len({w.invocation_id for w in workers}) == 3


async def test_map_worker_events_use_the_owner_ids() -> None:
    events = await collect(fan_pipe(lambda s: [1, 2]))
    owner = of_type(events, EventType.STEP_START)[0]
    for event in of_type(events, EventType.MAP_WORKER):
        assert event.invocation_id == owner.invocation_id
        assert event.owner_invocation_id == owner.invocation_id
        assert event.payload["owner"] == "fan"
        assert event.payload["target"] == "work"


async def test_worker_failure_does_not_stop_the_others_or_the_successors() -> None:
    async def work(s: Any, item: int) -> None:
        if item == 2:
            raise ValueError("bad item")
        s.setdefault("done", []).append(item)

    state: dict[str, Any] = {}
    events = await collect(fan_pipe(lambda s: [1, 2, 3], work, to="after"), state)
    assert sorted(state["done"]) == [1, 3]
    assert state["after"] is True
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert (error.stage, error.payload, error.scope) == ("work", "bad item", ("work[1]",))
    assert of_type(events, EventType.MAP_COMPLETE)[0].payload["item_count"] == 3
    data = end_data(events)
    assert (data.status, data.failed_step) == (PipelineTerminalStatus.FAILED, "work")


async def test_worker_error_handler_applies_per_item() -> None:
    handled: list[Any] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work")(lambda s: [1, 2])

    def recover(error: Exception) -> None:
        handled.append(str(error))

    @pipe.step(on_error=recover)
    async def work(s: Any, item: int) -> None:
        raise ValueError(f"item {item}")

    events = await collect(pipe)
    assert sorted(handled) == ["item 1", "item 2"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert stages(events, EventType.STEP_END).count("work") == 2


async def test_skip_from_one_worker_suppresses_the_map_successors() -> None:
    async def work(s: Any, item: int) -> Any:
        s.setdefault("done", []).append(item)
        return Skip() if item == 1 else None

    state: dict[str, Any] = {}
    events = await collect(fan_pipe(lambda s: [1, 2, 3], work, to="after"), state)
    assert sorted(state["done"]) == [1, 2, 3]
    assert "after" not in state
    assert "fan" in stages(events, EventType.STEP_END)


async def test_worker_retry_reruns_the_same_item_with_lineage() -> None:
    async def work(s: Any, item: int) -> Any:
        seen = s.setdefault("seen", [])
        seen.append(item)
        if seen.count(item) == 1 and item == 2:
            return Retry()
        return None

    state: dict[str, Any] = {}
    events = await collect(fan_pipe(lambda s: [1, 2], work, to="after"), state)
    assert sorted(state["seen"]) == [1, 2, 2]
    assert state["after"] is True
    starts = [e for e in of_type(events, EventType.STEP_START) if e.stage == "work"]
    retried = [e for e in starts if e.scope == ("work[1]",)]
    assert len(retried) == 2
    assert retried[1].parent_invocation_id == retried[0].invocation_id
    assert retried[1].owner_invocation_id == retried[0].owner_invocation_id


async def test_worker_can_route_dynamically() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work")(lambda s: [1])
    pipe.step("work")(lambda s, item: "extra")

    @pipe.step
    async def extra(s: Any) -> None:
        s["extra"] = True

    state: dict[str, Any] = {}
    events = await collect(pipe, state, start="fan")
    assert state == {"extra": True}
    worker = next(e for e in events if e.type is EventType.STEP_START and e.stage == "work")
    extra_start = next(e for e in events if e.type is EventType.STEP_START and e.stage == "extra")
    assert extra_start.parent_invocation_id == worker.invocation_id


async def test_worker_stop_stops_the_run() -> None:
    async def work(s: Any, item: int) -> Any:
        return Stop

    state: dict[str, Any] = {}
    events = await collect(fan_pipe(lambda s: [1], work, to="after"), state)
    assert "after" not in state
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_map_can_run_again_in_the_same_run() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.map(each="work", to="again")
    async def fan(s: Any) -> list[int]:
        s["rounds"] = s.get("rounds", 0) + 1
        return [s["rounds"] * 10, s["rounds"] * 10 + 1]

    @pipe.step
    async def work(s: Any, item: int) -> None:
        s.setdefault("done", []).append(item)

    @pipe.step
    async def again(s: Any) -> Any:
        return "fan" if s["rounds"] < 2 else None

    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert sorted(state["done"]) == [10, 11, 20, 21]
    assert len(of_type(events, EventType.MAP_COMPLETE)) == 2
    assert stages(events, EventType.STEP_END).count("fan") == 2


# --------------------------------------------------------------------------- concurrency limits


def concurrency_probe(limit: int | None, items: Any, log: dict[str, Any]) -> Pipe[Any, Any]:
    log.update(active=0, peak=0, order=[])

    async def work(s: Any, item: int) -> None:
        log["active"] += 1
        log["peak"] = max(log["peak"], log["active"])
        log["order"].append(item)
        await asyncio.sleep(0.001)
        log["active"] -= 1

    return fan_pipe(
        lambda s: items() if callable(items) else items, work, to="after", max_concurrency=limit
    )


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_max_concurrency_bounds_running_workers(limit: int) -> None:
    log: dict[str, Any] = {}
    events = await collect(concurrency_probe(limit, list(range(8)), log))
    assert log["peak"] == limit
    assert sorted(log["order"]) == list(range(8))
    assert end_data(events).metrics.maps.peak_workers == limit  # type: ignore[union-attr]


async def test_max_concurrency_one_runs_items_in_order() -> None:
    log: dict[str, Any] = {}
    await collect(concurrency_probe(1, list(range(6)), log))
    assert log["order"] == list(range(6))


@pytest.mark.parametrize("limit", [None, 0])
async def test_no_limit_runs_all_workers_at_once(limit: int | None) -> None:
    log: dict[str, Any] = {}
    await collect(concurrency_probe(limit, list(range(6)), log))
    assert log["peak"] == 6


async def test_limit_above_item_count_behaves_like_no_limit() -> None:
    log: dict[str, Any] = {}
    events = await collect(concurrency_probe(10, [1, 2], log))
    assert log["peak"] == 2
    assert of_type(events, EventType.MAP_START)[0].payload["item_count"] == 2


async def test_sized_result_with_a_limit_announces_every_worker_up_front() -> None:
    log: dict[str, Any] = {}
    events = await collect(concurrency_probe(2, list(range(4)), log))
    workers = [i for i, e in enumerate(events) if e.type is EventType.MAP_WORKER]
    first_start = index_of(events, EventType.STEP_START, "work")
    assert len(workers) == 4
    assert max(workers) < first_start
    assert {e.payload["total"] for e in of_type(events, EventType.MAP_WORKER)} == {4}


# --------------------------------------------------------------------------- lazy (unsized) maps


async def test_unsized_generator_with_a_limit_is_consumed_lazily() -> None:
    produced: list[int] = []
    log: dict[str, Any] = {}

    def items() -> Iterator[int]:
        for i in range(20):
            produced.append(i)
            assert len(produced) - len(log["order"]) <= 3, "generator drained ahead of workers"
            yield i

    events = await collect(concurrency_probe(2, items, log))
    assert sorted(log["order"]) == list(range(20))
    assert log["peak"] == 2
    (start,) = of_type(events, EventType.MAP_START)
    assert start.payload == {"target": "work", "item_count": None}
    workers = of_type(events, EventType.MAP_WORKER)
    assert [w.payload["index"] for w in workers] == list(range(20))
    assert {w.payload["total"] for w in workers} == {None}
    (complete,) = of_type(events, EventType.MAP_COMPLETE)
    assert complete.payload["item_count"] == 20
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_lazy_map_announces_each_worker_right_before_it_starts() -> None:
    log: dict[str, Any] = {}
    events = await collect(concurrency_probe(1, lambda: iter(range(3)), log))
    announced = [
        (e.type, e.stage)
        for e in events
        if e.type in (EventType.MAP_WORKER, EventType.STEP_START)
        and e.stage not in ("fan", "after")
    ]
    assert announced == [
        (EventType.MAP_WORKER, "work[0]"),
        (EventType.STEP_START, "work"),
        (EventType.MAP_WORKER, "work[1]"),
        (EventType.STEP_START, "work"),
        (EventType.MAP_WORKER, "work[2]"),
        (EventType.STEP_START, "work"),
    ]


async def test_lazy_async_generator_with_a_limit() -> None:
    async def produce(s: Any) -> AsyncIterator[int]:
        for i in range(5):
            yield i

    log: dict[str, Any] = {"active": 0, "peak": 0, "order": []}

    async def work(s: Any, item: int) -> None:
        log["active"] += 1
        log["peak"] = max(log["peak"], log["active"])
        await asyncio.sleep(0.001)
        log["order"].append(item)
        log["active"] -= 1

    events = await collect(fan_pipe(produce, work, max_concurrency=2))
    assert sorted(log["order"]) == list(range(5))
    assert log["peak"] == 2
    assert of_type(events, EventType.MAP_COMPLETE)[0].payload["item_count"] == 5


async def test_lazy_source_failing_midway_is_a_map_step_error() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise RuntimeError("source broke")

    log: dict[str, Any] = {}
    events = await collect(concurrency_probe(2, items, log))
    errors = of_type(events, EventType.STEP_ERROR)
    assert [(e.stage, e.payload) for e in errors] == [("fan", "source broke")]
    assert log["order"] == [1]
    assert end_data(events).failed_step == "fan"


async def test_empty_lazy_source_completes_the_map() -> None:
    log: dict[str, Any] = {}
    state: dict[str, Any] = {}
    pipe = concurrency_probe(2, lambda: iter(()), log)
    events = await collect(pipe, state)
    assert state.get("after") is True
    assert of_type(events, EventType.MAP_COMPLETE)[0].payload["item_count"] == 0
