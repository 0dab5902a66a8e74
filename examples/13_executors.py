"""Steps on other cores: a CPU-heavy map on a process pool, results merged in the loop.

    python examples/13_executors.py                # the process pool (standard library)
    python examples/13_executors.py --all-engines  # also Dask and Ray, when installed

`count_primes` is an ordinary function: `executor="cpu"` runs it in worker processes
(it must be importable there: module level, and the script guarded by
`if __name__ == "__main__":`). Its return value comes back to the event loop, where
`on_result=` merges it into the state one call at a time: no lock needed. The event
stream is the same as with the step run locally; the STEP_END events say where each
item ran (`meta["framework"]["executor"]` and `["worker"]`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from dataclasses import dataclass, field

from justpipe import EventType, Pipe
from justpipe.executors import DaskExecutor, Executor, ProcessExecutor, RayExecutor


@dataclass
class Primes:
    ranges: list[tuple[int, int]]
    counts: dict[tuple[int, int], int] = field(default_factory=dict)


def count_primes(item: tuple[int, int]) -> int:
    """Pure-Python CPU work: the primes in [lo, hi)."""
    lo, hi = item
    found = 0
    for n in range(max(lo, 2), hi):
        if all(n % d for d in range(2, int(n**0.5) + 1)):
            found += 1
    return found


def merge(state: Primes, item: tuple[int, int], result: int) -> None:
    state.counts[item] = result


pipe: Pipe[Primes, None] = Pipe(Primes, name="primes", executors={"cpu": ProcessExecutor()})


@pipe.map(each="count", max_concurrency=8)
async def chunks(state: Primes) -> list[tuple[int, int]]:
    return state.ranges


pipe.step("count", executor="cpu", on_result=merge)(count_primes)


async def run_on(name: str, executor: Executor | None) -> int:
    state = Primes([(i * 5_000, (i + 1) * 5_000) for i in range(8)])
    bind = {"cpu": executor} if executor is not None else None
    started = time.perf_counter()
    workers = set()
    async for event in pipe.run(state, executors=bind):
        if event.type is EventType.STEP_END and event.stage == "count":
            workers.add(event.meta["framework"].get("worker", "-"))
    total = sum(state.counts.values())
    print(
        f"{name:>8}: {total} primes below 40,000 in {time.perf_counter() - started:.2f} s "
        f"on {len(workers)} worker(s)"
    )
    return total


async def main(all_engines: bool) -> None:
    engines: list[tuple[str, Executor | None]] = [("process", None)]
    if all_engines and importlib.util.find_spec("distributed") is not None:
        engines.append(("dask", DaskExecutor(n_workers=2, threads_per_worker=1)))
    if all_engines and importlib.util.find_spec("ray") is not None:
        engines.append(("ray", RayExecutor(num_cpus=2, include_dashboard=False)))
    totals = {name: await run_on(name, executor) for name, executor in engines}
    assert len(set(totals.values())) == 1, totals
    for _, executor in engines:
        if executor is not None:
            await executor.aclose()
    await pipe.executors["cpu"].aclose()


if __name__ == "__main__":
    asyncio.run(main("--all-engines" in sys.argv))
