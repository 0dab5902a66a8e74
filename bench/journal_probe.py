"""Instructions per unit of a plain run, counted by callgrind (what a seam costs a plain run).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/journal_probe.py chain 1
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/journal_probe.py chain 3

Each process builds one plain pipeline, runs it once to warm up, then `RUNS` more times.
The difference between the instruction totals of a 3-run and a 1-run process is exactly
two warm runs (start-up, imports, validation and plan compilation cancel out), so

    per unit = (total(3) - total(1)) / (2 * UNITS)

with UNITS the steps of the chain (`chain`: 1,000 steps that do nothing) or the items of
the map (`map`: 2,000 items, `max_concurrency=64`, a worker that does nothing). Counts are
deterministic to a few hundred instructions per process, unlike wall time on a shared VM.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from justpipe import Pipe

CHAIN_STEPS = 1_000
MAP_ITEMS = 2_000
MAP_CONCURRENCY = 64


def chain() -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="chain")
    for i in range(CHAIN_STEPS):

        async def step() -> None:
            return None

        pipe.step(f"s{i}", to=f"s{i + 1}" if i + 1 < CHAIN_STEPS else None)(step)
    return pipe


def fanout() -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="map")

    @pipe.map(each="work", max_concurrency=MAP_CONCURRENCY)
    async def items() -> list[int]:
        return list(range(MAP_ITEMS))

    @pipe.step
    async def work(item: int) -> None:
        return None

    return pipe


async def main(kind: str, runs: int) -> None:
    pipe = chain() if kind == "chain" else fanout()
    for _ in range(1 + runs):  # the first run warms up
        async for _event in pipe.run(None):
            pass


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
