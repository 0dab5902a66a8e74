"""Barrier types: ALL waits for every parent (with an optional timeout), ANY for the first."""

import asyncio

from justpipe import EventType, Pipe
from justpipe.types import BarrierType

pipe = Pipe(name="barriers")


@pipe.step(to=["fast", "slow"])
async def start(state: dict) -> None:
    state["order"] = []


@pipe.step(to=["first_wins", "all_done"])
async def fast(state: dict) -> None:
    state["order"].append("fast")


@pipe.step(to=["first_wins", "all_done"])
async def slow(state: dict) -> None:
    await asyncio.sleep(0.02)
    state["order"].append("slow")


@pipe.step(barrier_type=BarrierType.ANY)
async def first_wins(state: dict) -> None:  # runs once, after the first parent
    state["order"].append("first_wins")


@pipe.step(barrier_timeout=1.0)
async def all_done(state: dict) -> None:  # runs after both; fails if they take over 1 s
    state["order"].append("all_done")


async def main() -> None:
    state: dict = {}
    events = [e async for e in pipe.run(state)]
    print(state["order"])
    assert state["order"] == ["fast", "first_wins", "slow", "all_done"]
    assert any(e.type is EventType.BARRIER_RELEASE for e in events)


if __name__ == "__main__":
    asyncio.run(main())
