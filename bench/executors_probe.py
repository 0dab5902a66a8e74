"""What justpipe's executors cost over driving the same engine by hand.

    python bench/executors_probe.py [--items 200] [--noops 2000] [--engines process,dask,ray]

Two workloads, 2 workers on every engine:

* cpu:  `--items` calls of a pure-Python function that takes about 20 ms here;
* noop: `--noops` calls of a function that returns its argument.

For each engine: the executor (`ex.call` under a semaphore) against a hand-written loop
on the same engine (semaphore + submit + await: `ProcessPoolExecutor` with
`run_in_executor`, an asynchronous `distributed.Client`, Ray's `ObjectRef`s), and, for
cpu, the same calls run one after another in the event loop. Start-up is measured apart
(first call) and left out of the loop figures. Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# this tree's justpipe, in this process and in the engines' worker processes
SRC = str(Path(__file__).resolve().parent.parent / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)

from justpipe.executors import (  # noqa: E402
    CallInfo,
    DaskExecutor,
    Executor,
    ProcessExecutor,
    RayExecutor,
)

WORKERS = 2
SPIN = 0  # iterations of `spin` that take ~20 ms (calibrated in main)


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def noop(x: int) -> int:
    return x


def calibrate(target: float = 0.020) -> int:
    n = 100_000
    while True:
        started = time.perf_counter()
        spin(n)
        took = time.perf_counter() - started
        if took > 0.005:
            return int(n * target / took)
        n *= 2


async def bounded(limit: int, calls: list[Callable[[], Awaitable[Any]]]) -> float:
    sem = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await call()

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in calls))
    return time.perf_counter() - started


async def via_executor(ex: Executor, fn: Any, args: list[int], limit: int) -> float:
    info = CallInfo("bench")
    return await bounded(
        limit, [lambda a=a: ex.call(fn, {"x" if fn is noop else "n": a}, info=info) for a in args]
    )


async def timed_start(ex: Executor) -> float:
    started = time.perf_counter()
    await ex.call(noop, {"x": 0}, info=CallInfo("warm-up"))
    return time.perf_counter() - started


# --------------------------------------------------------------------------- engines


async def process_rows(items: list[int], noops: list[int]) -> list[tuple[str, str, float]]:
    rows: list[tuple[str, str, float]] = []
    ex = ProcessExecutor(WORKERS)
    rows.append(("process", "start + first call", await timed_start(ex)))
    rows.append(("process", "cpu: executor", await via_executor(ex, spin, items, WORKERS)))
    rows.append(("process", "noop: executor", await via_executor(ex, noop, noops, WORKERS)))
    await ex.aclose()

    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        await loop.run_in_executor(pool, noop, 0)

        def calls(fn: Any, args: list[int]) -> list[Callable[[], Awaitable[Any]]]:
            return [lambda a=a: loop.run_in_executor(pool, fn, a) for a in args]

        rows.append(("process", "cpu: by hand", await bounded(WORKERS, calls(spin, items))))
        rows.append(("process", "noop: by hand", await bounded(WORKERS, calls(noop, noops))))
    return rows


async def dask_rows(items: list[int], noops: list[int]) -> list[tuple[str, str, float]]:
    import dask
    import distributed

    rows: list[tuple[str, str, float]] = []
    with dask.config.set(DaskExecutor.SCHEDULER_CONFIG):
        cluster = await asyncio.to_thread(
            distributed.LocalCluster,
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        )
    client = await asyncio.to_thread(distributed.Client, cluster)
    ex = DaskExecutor(client=client)
    rows.append(("dask", "start + first call", await timed_start(ex)))
    window = 4 * WORKERS  # in flight: lets the scheduler keep both workers busy
    rows.append(("dask", "cpu: executor", await via_executor(ex, spin, items, window)))
    rows.append(("dask", "noop: executor", await via_executor(ex, noop, noops, window)))
    await ex.aclose()
    await asyncio.to_thread(client.close)

    async with distributed.Client(cluster.scheduler_address, asynchronous=True) as aclient:
        await aclient.submit(noop, 0, pure=False)

        def calls(fn: Any, args: list[int]) -> list[Callable[[], Awaitable[Any]]]:
            async def one(a: int) -> Any:
                return await aclient.submit(fn, a, pure=False)

            return [lambda a=a: one(a) for a in args]

        rows.append(("dask", "cpu: by hand", await bounded(window, calls(spin, items))))
        rows.append(("dask", "noop: by hand", await bounded(window, calls(noop, noops))))
    await asyncio.to_thread(cluster.close)
    return rows


async def ray_rows(items: list[int], noops: list[int]) -> list[tuple[str, str, float]]:
    import ray

    rows: list[tuple[str, str, float]] = []
    ex = RayExecutor(num_cpus=WORKERS, log_to_driver=False)
    rows.append(("ray", "start (ray.init) + first call", await timed_start(ex)))
    window = 4 * WORKERS
    rows.append(("ray", "cpu: executor", await via_executor(ex, spin, items, window)))
    rows.append(("ray", "noop: executor", await via_executor(ex, noop, noops, window)))

    remote_spin = ray.remote(num_cpus=1, max_retries=0)(spin)
    remote_noop = ray.remote(num_cpus=1, max_retries=0)(noop)
    await remote_noop.remote(0)

    def calls(fn: Any, args: list[int]) -> list[Callable[[], Awaitable[Any]]]:
        async def one(a: int) -> Any:
            return await fn.remote(a)

        return [lambda a=a: one(a) for a in args]

    rows.append(("ray", "cpu: by hand", await bounded(window, calls(remote_spin, items))))
    rows.append(("ray", "noop: by hand", await bounded(window, calls(remote_noop, noops))))
    await ex.aclose()  # it started Ray, so it shuts it down
    return rows


async def main() -> None:
    global SPIN
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--noops", type=int, default=2000)
    parser.add_argument("--engines", default="process,dask,ray")
    args = parser.parse_args()

    SPIN = calibrate()
    items = [SPIN] * args.items
    noops = list(range(args.noops))
    started = time.perf_counter()
    for n in items[:20]:
        spin(n)
    one = (time.perf_counter() - started) / 20
    rows: list[tuple[str, str, float]] = [("in loop", "cpu: one after another", one * len(items))]
    runners = {"process": process_rows, "dask": dask_rows, "ray": ray_rows}
    for name in args.engines.split(","):
        rows.extend(await runners[name](items, noops))

    print(
        f"# {args.items} cpu items of {one * 1000:.1f} ms, {args.noops} no-op items, "
        f"{WORKERS} workers, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'engine':<8} {'what':<32} {'seconds':>8} {'per item':>10}")
    for engine, what, seconds in rows:
        count = args.noops if what.startswith("noop") else args.items
        per = "" if "start" in what else f"{seconds / count * 1e3:8.2f}ms"
        print(f"{engine:<8} {what:<32} {seconds:8.2f} {per:>10}")


if __name__ == "__main__":
    asyncio.run(main())
