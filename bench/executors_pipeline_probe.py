"""justpipe pipelines on executors against the same work driven by hand (issue 11 targets).

    python bench/executors_pipeline_probe.py [--items 200] [--noops 2000] [--engines ...]

* cpu_fanout: a map of `--items` calls of a ~20 ms pure-Python function, 2 workers: the
  pipeline with the step in the event loop, and on each engine; against a hand-written
  loop on the same engine (semaphore + submit + await, `executors_probe.py`'s).
* remote_overhead: the same with `--noops` calls of a function that returns its item.

The pipeline is `map(each="work", max_concurrency=window)` with `work` offloaded and its
result merged by `on_result=` (a counter). Engines are started before timing; every
figure is wall time of one run (median of `--rounds`). Prints a table; the figures
recorded in bench/RESULTS.md come from it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
sys.path[:0] = [SRC, str(HERE)]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (SRC, str(HERE), os.environ.get("PYTHONPATH")) if p
)

from executors_probe import WORKERS, bounded, calibrate, noop, spin  # noqa: E402

from justpipe import Pipe  # noqa: E402
from justpipe.executors import (  # noqa: E402
    DaskExecutor,
    Executor,
    ProcessExecutor,
    RayExecutor,
)


def fan_pipe(fn: Callable[[int], int], executor: Executor | None, window: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="bench", queue_size=0)

    @pipe.map(each="work", max_concurrency=window)
    async def fan(s: dict[str, Any]) -> list[int]:
        return s["args"]  # type: ignore[no-any-return]

    def keep(state: dict[str, Any], result: int) -> None:
        state["done"] += 1

    options: dict[str, Any] = {"on_result": keep}
    if executor is not None:
        options["executor"] = executor
    pipe.step("work", **options)(fn)
    return pipe


async def run_pipe(pipe: Pipe[Any, Any], args: list[int]) -> float:
    state = {"args": args, "done": 0}
    started = time.perf_counter()
    async for _ in pipe.run(state):
        pass
    took = time.perf_counter() - started
    assert state["done"] == len(args), state["done"]
    return took


async def median(rounds: int, measure: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await measure() for _ in range(rounds)])


Row = tuple[str, str, float]
Calls = list[Callable[[], Awaitable[Any]]]


async def engine_rows(
    name: str,
    executor: Executor,
    hand: Callable[[Callable[..., Any], list[int]], Calls],
    items: list[int],
    noops: list[int],
    window: int,
    rounds: int,
) -> list[Row]:
    rows: list[Row] = []
    for label, fn, args in (("cpu_fanout", spin, items), ("remote_overhead", noop, noops)):
        pipe = fan_pipe(fn, executor, window)
        piped = await median(rounds, lambda p=pipe, a=args: run_pipe(p, a))
        by_hand = await median(rounds, lambda f=fn, a=args: bounded(window, hand(f, a)))
        rows += [(name, f"{label}: justpipe", piped), (name, f"{label}: by hand", by_hand)]
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--noops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="process,dask,ray")
    args = parser.parse_args()
    work = calibrate()
    items = [work] * args.items
    noops = list(range(args.noops))
    rows: list[Row] = []
    in_loop = fan_pipe(spin, None, WORKERS)
    in_loop_s = await median(args.rounds, lambda: run_pipe(in_loop, items))
    rows.append(("in loop", "cpu_fanout: justpipe", in_loop_s))
    loop = asyncio.get_running_loop()
    engines = args.engines.split(",")
    if "process" in engines:
        async with ProcessExecutor(WORKERS) as ex:
            with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
                await loop.run_in_executor(pool, noop, 0)

                def by_pool(fn: Callable[..., Any], a: list[int]) -> Calls:
                    return [lambda x=x: loop.run_in_executor(pool, fn, x) for x in a]

                rows += await engine_rows(
                    "process", ex, by_pool, items, noops, WORKERS, args.rounds
                )
    if "dask" in engines:
        import dask
        import distributed

        with dask.config.set(DaskExecutor.SCHEDULER_CONFIG):
            cluster = await asyncio.to_thread(
                distributed.LocalCluster,
                n_workers=WORKERS,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
        async with distributed.Client(cluster.scheduler_address, asynchronous=True) as aclient:
            sync_client = await asyncio.to_thread(distributed.Client, cluster.scheduler_address)
            async with DaskExecutor(client=sync_client) as ex:
                await aclient.submit(noop, 0, pure=False)

                def by_client(fn: Callable[..., Any], a: list[int]) -> Calls:
                    async def one(x: int) -> Any:
                        return await aclient.submit(fn, x, pure=False)

                    return [lambda x=x: one(x) for x in a]

                rows += await engine_rows(
                    "dask", ex, by_client, items, noops, 4 * WORKERS, args.rounds
                )
            await asyncio.to_thread(sync_client.close)
        await asyncio.to_thread(cluster.close)
    if "ray" in engines:
        import ray

        async with RayExecutor(num_cpus=WORKERS, log_to_driver=False) as ex:
            remote = {
                spin: ray.remote(num_cpus=1, max_retries=0)(spin),
                noop: ray.remote(num_cpus=1, max_retries=0)(noop),
            }
            await remote[noop].remote(0)

            def by_ray(fn: Callable[..., Any], a: list[int]) -> Calls:
                async def one(x: int) -> Any:
                    return await remote[fn].remote(x)

                return [lambda x=x: one(x) for x in a]

            rows += await engine_rows("ray", ex, by_ray, items, noops, 4 * WORKERS, args.rounds)
    print(
        f"# {args.items} cpu items, {args.noops} no-op items, {WORKERS} workers, median of "
        f"{args.rounds}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'engine':<8} {'what':<28} {'seconds':>8} {'per item':>10}")
    for engine, what, seconds in rows:
        count = args.noops if what.startswith("remote") else args.items
        print(f"{engine:<8} {what:<28} {seconds:8.3f} {seconds / count * 1e3:8.3f}ms")


if __name__ == "__main__":
    asyncio.run(main())
