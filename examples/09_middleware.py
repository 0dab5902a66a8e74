"""Middleware: wrap every step function (here: timing and a step counter)."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from justpipe import Pipe
from justpipe.types import StepContext

timings: dict[str, float] = {}


def timing(func: Callable[..., Any], ctx: StepContext) -> Callable[..., Any]:
    async def wrapped(**kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await func(**kwargs)
        finally:
            timings[ctx.name] = time.perf_counter() - started

    return wrapped


pipe = Pipe(name="timed", middleware=[timing])


@pipe.step(to="b")
async def a(state: dict) -> None:
    await asyncio.sleep(0.01)


@pipe.step
async def b(state: dict) -> None:
    pass


async def main() -> None:
    async for _ in pipe.run({}):
        pass
    print({k: round(v, 3) for k, v in timings.items()})
    assert set(timings) == {"a", "b"} and timings["a"] >= 0.005


if __name__ == "__main__":
    asyncio.run(main())
