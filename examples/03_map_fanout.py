"""Map fan-out: one worker invocation per item, bounded concurrency, lazy input."""

import asyncio

from justpipe import EventType, Pipe

pipe = Pipe(name="fanout")


@pipe.map(each="square", to="total", max_concurrency=8)
async def numbers(state: dict):  # type: ignore[no-untyped-def]
    # A generator is consumed lazily when max_concurrency is set: at most 8 items are
    # in flight, so this works for millions of items in constant memory.
    return (i for i in range(100))


@pipe.step
async def square(state: dict, item: int) -> None:  # the item is injected by position
    state.setdefault("squares", []).append(item * item)


@pipe.step
async def total(state: dict) -> None:
    state["total"] = sum(state["squares"])


async def main() -> None:
    state: dict = {}
    events = [e async for e in pipe.run(state)]
    workers = sum(1 for e in events if e.type is EventType.MAP_WORKER)
    print(f"{workers} workers, total = {state['total']}")
    assert state["total"] == sum(i * i for i in range(100)) and workers == 100


if __name__ == "__main__":
    asyncio.run(main())
