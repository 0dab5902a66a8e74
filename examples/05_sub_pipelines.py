"""Sub-pipelines: a step runs another Pipe; its events are forwarded with lineage."""

import asyncio

from justpipe import EventType, Pipe

cleaner = Pipe(name="cleaner")


@cleaner.step(to="lower")
async def strip(state: dict) -> None:
    state["text"] = state["text"].strip()


@cleaner.step
async def lower(state: dict) -> None:
    state["text"] = state["text"].lower()


pipe = Pipe(name="outer")


@pipe.sub(pipeline=cleaner, to="count")
async def clean(state: dict) -> dict:
    return state  # the child run's state


@pipe.step
async def count(state: dict) -> None:
    state["words"] = len(state["text"].split())


async def main() -> None:
    state = {"text": "  Hello Sub Pipelines  "}
    events = [e async for e in pipe.run(state)]
    forwarded = [e for e in events if e.parent_run_id is not None]
    print([e.stage for e in forwarded])
    assert state == {"text": "hello sub pipelines", "words": 3}
    assert {e.origin_run_id for e in forwarded} != {events[0].run_id}  # child's own run id
    assert all(e.run_id == events[0].run_id for e in events)  # one stream id
    assert events[-1].type is EventType.FINISH and events[-1].stage == "system"


if __name__ == "__main__":
    asyncio.run(main())
