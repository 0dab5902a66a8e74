#!/usr/bin/env python
"""Cost of the kernel's cooperative turns (docs/architecture.md, "Liveness").

A bounded map of 50,000 workers that never suspend and a 100,000-token stream whose
generator never awaits, each run with TURN_EVERY=64 (the kernel's) and with turns
effectively off, in interleaved rounds; CPU time per run (median of 3).

    python bench/turns_probe.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import justpipe._kernel.invoker as invoker
import justpipe._kernel.maps as maps
from justpipe import Pipe


def map_pipe() -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="m")

    @pipe.map(each="w", max_concurrency=8)
    async def src(s: Any) -> range:
        return range(50_000)

    @pipe.step
    async def w(s: Any, item: int) -> None:
        pass

    return pipe


def token_pipe() -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="t")

    @pipe.step
    async def talk(s: Any) -> AsyncIterator[int]:
        for i in range(100_000):
            yield i

    return pipe


async def once(pipe: Pipe[Any, Any]) -> float:
    t = time.process_time()
    async for _ in pipe.run({}):
        pass
    return time.process_time() - t


async def main() -> None:
    scenarios: list[tuple[str, Callable[[], Pipe[Any, Any]]]] = [
        ("map 50k", map_pipe),
        ("tokens 100k", token_pipe),
    ]
    results: dict[tuple[str, int], list[float]] = {}
    for name, build in scenarios:
        pipe = build()
        for every in (64, 10**12) * 3:
            maps.TURN_EVERY = invoker.TURN_EVERY = every
            results.setdefault((name, every), []).append(await once(pipe))
    for (name, every), times in results.items():
        label = "64" if every == 64 else "off"
        print(f"{name:12} turns every {label:4} median {statistics.median(times) * 1e3:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
