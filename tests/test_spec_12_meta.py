"""Structured metadata: `ctx.meta.step`, `ctx.meta.run`, `ctx.meta.pipeline` (spec §12)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Optional

import pytest

from helpers import collect, end_data, of_type
from justpipe import EventType, Meta, Pipe
from justpipe.types import PipelineTerminalStatus


@dataclasses.dataclass
class Ctx:
    meta: Meta | None = None


@dataclasses.dataclass
class OptionalCtx:
    name: str = "x"
    meta: Optional[Meta] = None  # noqa: UP045 - the Optional spelling is under test


class PlainCtx:
    meta: Meta

    def __init__(self) -> None:
        self.other = 1


def step_end_meta(events: list[Any], stage: str) -> dict[str, Any]:
    (event,) = [e for e in events if e.type is EventType.STEP_END and e.stage == stage]
    assert event.meta is not None
    return dict(event.meta)


def worker_metas(events: list[Any]) -> list[dict[str, Any]]:
    metas = [e.meta for e in of_type(events, EventType.STEP_END) if e.stage == "work"]
    assert all(m is not None for m in metas)
    return [m for m in metas if m is not None]


@pytest.mark.parametrize("make", [Ctx, OptionalCtx, PlainCtx], ids=["union", "optional", "plain"])
async def test_a_fresh_meta_is_assigned_to_the_context_field_every_run(make: Any) -> None:
    seen: list[Any] = []
    pipe: Pipe[Any, Any] = Pipe(context_type=make)

    @pipe.step
    async def a(s: Any, ctx: Any) -> None:
        seen.append(ctx.meta)

    context = make()
    await collect(pipe, {}, context)
    await collect(pipe, {}, context)
    assert seen[0] is not None
    assert seen[1] is not None
    assert seen[0] is not seen[1]
    assert context.meta is seen[1]


async def test_step_meta_snapshot_shape() -> None:
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)

    @pipe.step
    async def a(s: Any, ctx: Ctx) -> None:
        assert ctx.meta is not None
        step = ctx.meta.step
        step.set("model", "gpt")
        assert step.get("model") == "gpt"
        assert step.get("missing", 7) == 7
        step.add_tag("b")
        step.add_tag("a")
        step.add_tag("b")
        step.record_metric("latency", 0.5)
        step.record_metric("latency", 0.25)
        step.increment("calls")
        step.increment("calls", 2)

    events = await collect(pipe, {}, Ctx())
    meta = step_end_meta(events, "a")
    assert meta["data"] == {"model": "gpt"}
    assert meta["tags"] == ["a", "b"]
    assert meta["metrics"] == {"latency": [0.5, 0.25]}
    assert meta["counters"] == {"calls": 3}
    assert set(meta["framework"]) == {"duration_s", "attempt", "status"}


async def test_empty_sections_are_omitted() -> None:
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)

    @pipe.step
    async def a(s: Any, ctx: Ctx) -> None:
        assert ctx.meta is not None
        ctx.meta.step.add_tag("only")

    meta = step_end_meta(await collect(pipe, {}, Ctx()), "a")
    assert set(meta) == {"tags", "framework"}


async def test_without_a_meta_field_steps_still_get_framework_meta() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(lambda s: None)
    events = await collect(pipe, {}, object())
    assert set(step_end_meta(events, "a")) == {"framework"}
    assert events[-1].meta is None


async def test_parallel_steps_have_isolated_step_meta() -> None:
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)
    pipe.step("root", to=["x", "y"])(lambda s: None)
    for name in ("x", "y"):

        async def writer(s: Any, ctx: Ctx, name: str = name) -> None:
            assert ctx.meta is not None
            ctx.meta.step.set("who", name)
            await asyncio.sleep(0.001)
            ctx.meta.step.set("after", ctx.meta.step.get("who"))

        pipe.step(name)(writer)
    events = await collect(pipe, {}, Ctx())
    for name in ("x", "y"):
        assert step_end_meta(events, name)["data"] == {"who": name, "after": name}


async def test_map_workers_have_isolated_step_meta() -> None:
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)
    pipe.map("fan", each="work")(lambda s: [1, 2, 3])

    @pipe.step
    async def work(s: Any, item: int, ctx: Ctx) -> None:
        assert ctx.meta is not None
        ctx.meta.step.increment("items", item)

    events = await collect(pipe, {}, Ctx())
    counters = sorted(step_meta["counters"]["items"] for step_meta in worker_metas(events))
    assert counters == [1, 2, 3]


async def test_run_meta_is_shared_and_lands_on_finish() -> None:
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)

    @pipe.step(to="b")
    async def a(s: Any, ctx: Ctx) -> None:
        assert ctx.meta is not None
        ctx.meta.run.set("source", "a")
        ctx.meta.run.increment("steps")

    @pipe.step
    async def b(s: Any, ctx: Ctx) -> None:
        assert ctx.meta is not None
        assert ctx.meta.run.get("source") == "a"
        ctx.meta.run.increment("steps")
        ctx.meta.run.add_tag("done")
        ctx.meta.run.record_metric("score", 1.0)

    events = await collect(pipe, {}, Ctx())
    assert events[-1].meta == {
        "data": {"source": "a"},
        "tags": ["done"],
        "metrics": {"score": [1.0]},
        "counters": {"steps": 2},
    }
    assert set(step_end_meta(events, "a")) == {"framework"}, "run meta stays off step events"


async def test_finish_meta_is_none_when_run_meta_is_empty() -> None:
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)
    pipe.step("a")(lambda s: None)
    events = await collect(pipe, {}, Ctx())
    assert events[-1].meta is None


async def test_run_meta_is_usable_from_hooks_but_step_meta_is_not() -> None:
    problems: list[str] = []
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)

    @pipe.on_startup
    def up(ctx: Ctx) -> None:
        assert ctx.meta is not None
        ctx.meta.run.set("from_hook", True)
        try:
            ctx.meta.step.set("x", 1)
        except RuntimeError as exc:
            problems.append(str(exc))

    pipe.step("a")(lambda s: None)
    events = await collect(pipe, {}, Ctx())
    assert len(problems) == 1
    assert events[-1].meta == {"data": {"from_hook": True}}


async def test_pipeline_meta_is_read_only_metadata() -> None:
    seen: list[Any] = []
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx, metadata={"version": 3})

    @pipe.step
    async def a(s: Any, ctx: Ctx) -> None:
        assert ctx.meta is not None
        seen.append(ctx.meta.pipeline.get("version"))
        seen.append(ctx.meta.pipeline.get("nope"))
        assert not hasattr(ctx.meta.pipeline, "set")

    await collect(pipe, {}, Ctx())
    assert seen == [3, None]


async def test_partial_step_meta_survives_a_failure() -> None:
    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)

    @pipe.step
    async def a(s: Any, ctx: Ctx) -> None:
        assert ctx.meta is not None
        ctx.meta.step.set("progress", "half")
        raise ValueError("then broke")

    events = await collect(pipe, {}, Ctx())
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.meta is not None
    assert error.meta["data"] == {"progress": "half"}
    assert error.meta["framework"]["status"] == "error"
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_retried_invocations_start_with_empty_step_meta() -> None:
    from justpipe import Retry

    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)

    @pipe.step
    async def a(s: Any, ctx: Ctx) -> Any:
        assert ctx.meta is not None
        s["n"] = s.get("n", 0) + 1
        ctx.meta.step.increment("seen")
        return Retry() if s["n"] == 1 else None

    events = await collect(pipe, {}, Ctx())
    meta = step_end_meta(events, "a")
    assert meta["counters"] == {"seen": 1}
    assert meta["framework"]["attempt"] == 2


async def test_meta_context_is_shared_with_sub_pipelines() -> None:
    child: Pipe[Any, Ctx] = Pipe(context_type=Ctx, name="child")

    @child.step
    async def c(s: Any, ctx: Ctx) -> None:
        assert ctx.meta is not None
        ctx.meta.step.set("in", "child")

    pipe: Pipe[Any, Ctx] = Pipe(context_type=Ctx)
    pipe.sub("sb", pipeline=child)(lambda s: s)
    events = await collect(pipe, {}, Ctx())
    forwarded = [e for e in events if e.type is EventType.STEP_END and e.stage == "sb:c"]
    assert forwarded[0].meta is not None
    assert forwarded[0].meta["data"] == {"in": "child"}
