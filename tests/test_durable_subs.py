"""Sub-pipelines of durable runs: nested checkpoints, a Suspend inside a child, resumes.

SIGKILL inside a child, resumed in another process, is in tests/test_durable_process.py.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from helpers import collect, drain, end_data, run_with_watchdog
from justpipe import Event, EventType, Pipe, Suspend
from justpipe.durable import (
    InMemoryCheckpointStore,
    RunFinishedError,
    SuspendedEndData,
    resume_value,
)
from justpipe.types import PipelineEndData, PipelineTerminalStatus

SUCCESS = PipelineTerminalStatus.SUCCESS


@dataclass
class Doc:
    log: list[str] = field(default_factory=list)
    answer: Any = None


@dataclass
class Outer:
    title: str = ""
    review: Doc = field(default_factory=Doc)
    log: list[str] = field(default_factory=list)


def asking_child(name: str = "child", *, suspend: bool = True) -> Pipe[Doc, None]:
    """prep -> ask (suspends) -> after (reads the answer)."""
    child: Pipe[Doc, None] = Pipe(Doc, name=name)

    @child.step(to="ask")
    async def prep(s: Doc) -> None:
        s.log.append("prep")

    @child.step(to="after")
    async def ask(s: Doc) -> Any:
        s.log.append("ask")
        return Suspend("inner question") if suspend else None

    @child.step
    async def after(s: Doc) -> None:
        s.answer = resume_value()
        s.log.append("after")

    return child


def checkpoint(store: InMemoryCheckpointStore, run_id: str) -> dict[str, Any]:
    found = store.load(run_id)
    assert found is not None
    return json.loads(found.data)  # type: ignore[no-any-return]


def steps(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.type.value, e.stage) for e in events if e.type.value.startswith("step_")]


async def test_a_suspend_inside_a_sub_pipeline_resumes_inside_it() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="parent", durable=store)

    @pipe.step(to="nested")
    async def first(s: Doc) -> None:
        s.log.append("first")

    @pipe.sub(pipeline=asking_child(), to="last")
    async def nested(s: Doc) -> Doc:
        return s

    @pipe.step
    async def last(s: Doc) -> None:
        s.log.append(f"last:{s.answer}")

    state = Doc()
    first_segment = await collect(pipe, state)
    payload = end_data(first_segment)
    assert isinstance(payload, SuspendedEndData) and payload.status is SUCCESS
    assert payload.suspended_steps == ("nested:ask",)
    assert payload.reasons == ("inner question",)
    assert [e.stage for e in first_segment if e.type is EventType.SUSPEND] == ["nested:ask"]
    assert "last" not in state.log
    run_id = first_segment[-1].run_id
    data = checkpoint(store, run_id)
    (entry,) = data["frontier"]
    assert entry["step"] == "nested" and entry["child"]["status"] == "suspended"
    assert entry["child"]["path"] == [] and entry["child"]["state"] is None

    second = await run_with_watchdog(drain(pipe.resume(run_id, value="yes")))
    assert type(end_data(second)) is PipelineEndData
    # the child goes on after its suspending step; what it had done is not run again
    assert steps(second) == [
        ("step_start", "nested"),
        ("step_start", "nested:after"),
        ("step_end", "nested:after"),
        ("step_end", "nested"),
        ("step_start", "last"),
        ("step_end", "last"),
    ]
    assert [e.attempt for e in second if e.stage == "nested"] == [2, 2]
    seqs = [e.seq for e in first_segment + second]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    restored = checkpoint(store, run_id)["state"]["fields"]
    assert restored["log"] == ["first", "prep", "ask", "after", "last:yes"]
    with pytest.raises(RunFinishedError):
        await drain(pipe.resume(run_id))


async def test_a_child_state_at_an_attribute_of_the_parent_state_stays_shared() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Outer, None] = Pipe(Outer, name="outer", durable=store)

    @pipe.sub(pipeline=asking_child(), to="report")
    async def reviewing(s: Outer) -> Doc:
        return s.review

    @pipe.step
    async def report(s: Outer) -> None:
        s.log.append(f"{s.review.answer}:{','.join(s.review.log)}")

    first = await collect(pipe, Outer())
    run_id = first[-1].run_id
    (entry,) = checkpoint(store, run_id)["frontier"]
    assert entry["child"]["path"] == ["attr", "review"]
    await run_with_watchdog(drain(pipe.resume(run_id, value=42)))
    final = checkpoint(store, run_id)["state"]["fields"]
    assert final["log"] == ["42:prep,ask,after"]


async def test_an_independent_child_state_is_checkpointed_on_its_own() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="indep", durable=store)
    seen: list[Any] = []

    @pipe.sub(pipeline=asking_child())
    async def fresh(s: dict[str, Any]) -> Doc:
        child_state = Doc(log=["given"])
        seen.append(child_state)
        return child_state

    first = await collect(pipe, {"k": 1})
    run_id = first[-1].run_id
    (entry,) = checkpoint(store, run_id)["frontier"]
    assert entry["child"]["path"] is None
    assert entry["child"]["state"]["fields"]["log"] == ["given", "prep", "ask"]
    second = await run_with_watchdog(drain(pipe.resume(run_id, value="v")))
    assert end_data(second).status is SUCCESS
    assert len(seen) == 1, "the sub step's function is not called again on resume"
    # the resumed child's state is its checkpointed one (a new object, the same content)
    assert seen[0].log == ["given", "prep", "ask"]


async def test_a_suspend_two_sub_pipelines_deep_resumes_at_the_bottom() -> None:
    store = InMemoryCheckpointStore()
    middle: Pipe[Doc, None] = Pipe(Doc, name="middle")

    @middle.sub(pipeline=asking_child("leaf"), to="tail")
    async def leaf(s: Doc) -> Doc:
        return s

    @middle.step
    async def tail(s: Doc) -> None:
        s.log.append("tail")

    pipe: Pipe[Doc, None] = Pipe(Doc, name="top", durable=store)

    @pipe.sub(pipeline=middle)
    async def mid(s: Doc) -> Doc:
        return s

    state = Doc()
    first = await collect(pipe, state)
    payload = end_data(first)
    assert isinstance(payload, SuspendedEndData)
    assert payload.suspended_steps == ("mid:leaf:ask",)
    second = await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value="deep")))
    assert steps(second) == [
        ("step_start", "mid"),
        ("step_start", "mid:leaf"),
        ("step_start", "mid:leaf:after"),
        ("step_end", "mid:leaf:after"),
        ("step_end", "mid:leaf"),
        ("step_start", "mid:tail"),
        ("step_end", "mid:tail"),
        ("step_end", "mid"),
    ]
    final = checkpoint(store, first[-1].run_id)["state"]["fields"]
    assert final["log"] == ["prep", "ask", "after", "tail"] and final["answer"] == "deep"


async def test_a_sub_pipeline_that_finishes_leaves_nothing_in_the_frontier() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="done", durable=store)
    writes: list[int] = []

    @pipe.sub(pipeline=asking_child(suspend=False), to="after_sub")
    async def nested(s: Doc) -> Doc:
        return s

    @pipe.step
    async def after_sub(s: Doc) -> None:
        data = checkpoint(store, events_run_id[0])
        writes.append(len(data["frontier"]))

    events_run_id: list[str] = []

    async def run() -> list[Event]:
        out = []
        async for ev in pipe.run(Doc()):
            if not events_run_id:
                events_run_id.append(ev.run_id)
            out.append(ev)
        return out

    events = await run_with_watchdog(run())
    assert type(end_data(events)) is PipelineEndData
    assert writes == [1], "only after_sub itself is in flight once the child finished"
    assert checkpoint(store, events_run_id[0])["status"] == "finished"


async def test_child_completions_write_the_parents_checkpoint() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="counting", durable=store)

    @pipe.sub(pipeline=asking_child(suspend=False))
    async def nested(s: Doc) -> Doc:
        return s

    await collect(pipe, Doc())
    # parent: start, roots, FINISH, the sub step's completion; child: its start, its roots
    # and each of its 3 completions (each one a write of the parent's whole checkpoint)
    assert store.saves == 4 + 5


async def test_a_failing_sub_pipeline_fails_its_step_and_the_run_finishes() -> None:
    child: Pipe[Doc, None] = Pipe(Doc, name="bad")

    @child.step
    async def boom(s: Doc) -> None:
        raise ValueError("child broke")

    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="host", durable=store)

    @pipe.sub(pipeline=child)
    async def nested(s: Doc) -> Doc:
        return s

    events = await collect(pipe, Doc())
    assert end_data(events).status is PipelineTerminalStatus.FAILED
    data = checkpoint(store, events[-1].run_id)
    assert data["status"] == "finished" and data["frontier"] == []


@pytest.mark.filterwarnings("ignore::justpipe.types.PipelineValidationWarning")
@pytest.mark.parametrize("limit", [None, 2])
async def test_a_suspend_in_a_map_workers_sub_pipeline_resumes_that_item(
    limit: int | None,
) -> None:
    """Items 0..3 each run a child pipeline; item 2's asks (suspends): the other items
    finish, the map stays open, and the resume re-enters item 2's child after its question."""
    child: Pipe[dict[str, Any], None] = Pipe(dict, name="per-item")
    ran: list[str] = []

    @child.step(to="answer")
    async def question(s: dict[str, Any]) -> Any:
        ran.append(f"q{s['i']}")
        if s["i"] == 2 and resume_value() is None:
            return Suspend(f"item {s['i']} asks")
        return None

    @child.step
    async def answer(s: dict[str, Any]) -> None:
        ran.append(f"a{s['i']}:{resume_value()}")

    store = InMemoryCheckpointStore()
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="mapsub", durable=store)

    @pipe.map(each="per_item", to="total", max_concurrency=limit)
    async def items(s: dict[str, Any]) -> list[int]:
        ran.append("items")
        return [0, 1, 2, 3]

    @pipe.sub(pipeline=child)
    async def per_item(s: dict[str, Any], item: int) -> dict[str, Any]:
        return {"i": item}

    @pipe.step
    async def total(s: dict[str, Any]) -> None:
        ran.append("total")

    first = await collect(pipe, {})
    payload = end_data(first)
    assert isinstance(payload, SuspendedEndData)
    assert payload.suspended_steps == ("per_item:question",)
    assert payload.reasons == ("item 2 asks",)
    assert "total" not in ran and "a2:None" not in ran
    run_id = first[-1].run_id
    (entry,) = checkpoint(store, run_id)["frontier"]
    (kept,) = entry["map"]["children"]
    assert (kept["index"], kept["worker"], kept["child"]["status"]) == (2, "per_item", "suspended")
    before = list(ran)
    ran.clear()

    second = await run_with_watchdog(drain(pipe.resume(run_id, value="yes")))
    assert type(end_data(second)) is PipelineEndData
    # item 2's child goes on after its question; the other items and the source do not
    # run again (with a pool, the items not yet handed out run now)
    assert "q2" not in ran and "a2:yes" in ran and "items" not in ran
    answered = sorted(x.split(":")[0] for x in before + ran if x[0] == "a")
    assert answered == ["a0", "a1", "a2", "a3"], "every item's child finished exactly once"
    assert sorted(x for x in before + ran if x[0] == "q") == ["q0", "q1", "q2", "q3"]
    assert ran[-1] == "total" and ran.count("total") == 1
    assert [e.type for e in second].count(EventType.MAP_COMPLETE) == 1
    assert checkpoint(store, run_id)["status"] == "finished"


@pytest.mark.filterwarnings("ignore::justpipe.types.PipelineValidationWarning")
async def test_a_map_workers_sub_pipeline_interrupted_mid_way_goes_on_after_a_resume() -> None:
    child: Pipe[dict[str, Any], None] = Pipe(dict, name="slow-item")
    ran: list[str] = []

    @child.step(to="slow")
    async def fast(s: dict[str, Any]) -> None:
        ran.append(f"fast{s['i']}")

    @child.step
    async def slow(s: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)
        ran.append(f"slow{s['i']}")

    store = InMemoryCheckpointStore()
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="mapsub-crash", durable=store)

    @pipe.map(each="per_item")
    async def items(s: dict[str, Any]) -> list[int]:
        return [0, 1]

    @pipe.sub(pipeline=child)
    async def per_item(s: dict[str, Any], item: int) -> dict[str, Any]:
        return {"i": item}

    stream = pipe.run({})
    run_id = ""
    async for event in stream:  # stop once both items' children are in their slow step
        run_id = event.run_id or run_id
        both_fast = sum(1 for x in ran if x.startswith("fast")) == 2
        if event.type is EventType.STEP_START and event.stage == "per_item:slow" and both_fast:
            break
    await stream.aclose()
    (entry,) = checkpoint(store, run_id)["frontier"]
    children = entry["map"]["children"]
    assert [kept["index"] for kept in children] == [0, 1]
    assert all(kept["child"]["completed"] == 1 for kept in children)

    await run_with_watchdog(drain(pipe.resume(run_id)))
    assert sorted(ran) == ["fast0", "fast1", "slow0", "slow1"], "fast ran once per item"


async def test_an_unserializable_child_state_fails_its_sub_step_naming_the_child() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="bad-child", durable=store)

    @pipe.sub(pipeline=asking_child())
    async def nested(s: Doc) -> Doc:
        return Doc(answer={1, 2})  # a set: not checkpointable, and not the parent's state

    events = await collect(pipe, Doc())
    (error,) = [e for e in events if e.type is EventType.STEP_ERROR]
    assert "sub-pipeline 'child' state.answer" in str(error.payload)
    assert "builtins.set" in str(error.payload)
    assert end_data(events).status is PipelineTerminalStatus.FAILED
