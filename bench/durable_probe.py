"""What durable runs cost: checkpoint cost per completion, a 10,000-step chain, a big map.

    python bench/durable_probe.py                 # everything, active core backend
    python bench/durable_probe.py --steps 2000    # a shorter chain
    JUSTPIPE_NO_EXTENSIONS=1 python bench/durable_probe.py   # the pure core

Part 1, checkpoint cost per completion: a chain of N steps that never suspend, with a
small state (a dict of a few ints) and a ~1 MB state (a list of 1,000 strings of 1 KB),
into the SQLite store (a temporary JUSTPIPE_STORAGE_PATH, WAL, synchronous=NORMAL) and
the in-memory store, in the full mode (checkpoint_every=1: after every completion), every
10th completion (checkpoint_every=10) and the cheap mode (checkpoint_every=0: only when the
run starts and finishes). The figure is the run's wall time minus a plain (non-durable)
run's, divided by the completions.

Part 2, the 10,000-step chain: a plain run against durable runs (cheap, every 10th and
full, SQLite; full in memory too; small state). Part 3, a 10,000-item map through a pool
of 8 workers: plain against durable (cheap, every 10th, full; SQLite). Every pipe is built
once and run once untimed first; then best of `--repeat` runs each (the full-mode chains:
`--full-repeat`).
Wall-clock, so numbers vary with the machine: on a shared machine, take the best of several.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from justpipe import Pipe
from justpipe.durable import Durable, InMemoryCheckpointStore


def chain(n: int, durable: Any) -> Pipe[Any, None]:
    pipe: Pipe[Any, None] = Pipe(dict, name=f"chain{n}", durable=durable, persist=False)
    for i in range(n):
        nxt = f"s{i + 1}" if i + 1 < n else None

        async def step(s: Any) -> None:
            pass

        step.__name__ = f"s{i}"
        pipe.step(f"s{i}", to=nxt)(step)
    return pipe


def small_state() -> dict[str, Any]:
    return {"a": 1, "b": 2, "c": [1, 2, 3]}


def big_state() -> dict[str, Any]:
    return {"rows": ["x" * 1024 for _ in range(1000)]}


async def timed(pipe: Pipe[Any, None], state: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    count = 0
    async for _ in pipe.run(state):
        count += 1
    return time.perf_counter() - t0, count


def best(n: int, make: Any, state: Any, repeat: int) -> float:
    """Best of `repeat` runs of one pipe (built once: a Pipe is defined once and reused, and
    its first run validates and compiles the graph), after one warm-up run."""
    pipe = make()
    asyncio.run(timed(pipe, state()))
    times = []
    for _ in range(repeat):
        elapsed, _ = asyncio.run(timed(pipe, state()))
        times.append(elapsed)
    return min(times)


def per_completion(args: argparse.Namespace) -> None:
    n = args.cost_steps
    print(f"## Checkpoint cost per completion ({n}-step chain, best of {args.repeat})\n")
    print("| state | store | mode | run (ms) | extra per completion (us) |")
    print("|---|---|---|---:|---:|")
    for label, state in (("small", small_state), ("1 MB", big_state)):
        plain = best(n, lambda: chain(n, None), state, args.repeat)
        print(f"| {label} | - | plain | {plain * 1e3:.1f} | - |")
        for store_name in ("sqlite", "memory"):
            for mode, every in (("full", 1), ("every 10", 10), ("cheap", 0)):

                def make(every: int = every, store_name: str = store_name) -> Pipe[Any, None]:
                    store = InMemoryCheckpointStore() if store_name == "memory" else None
                    return chain(n, Durable(store=store, checkpoint_every=every))

                elapsed = best(n, make, state, args.repeat)
                extra = (elapsed - plain) / n * 1e6
                print(f"| {label} | {store_name} | {mode} | {elapsed * 1e3:.1f} | {extra:.1f} |")
    print()


def long_chain(args: argparse.Namespace) -> None:
    n = args.steps
    print(f"## A {n:,}-step chain (small state, best of {args.repeat}, full: {args.full_repeat})\n")
    plain = best(n, lambda: chain(n, None), small_state, args.repeat)
    print("| run | store | wall (s) | per step (us) | vs plain |")
    print("|---|---|---:|---:|---:|")
    print(f"| plain | - | {plain:.3f} | {plain / n * 1e6:.1f} | 1.00x |")
    runs: list[tuple[str, str, int, int]] = [
        ("durable, cheap", "sqlite", 0, args.repeat),
        ("durable, every 10", "sqlite", 10, args.repeat),
    ]
    if not args.skip_full:
        runs += [
            ("durable, full", "sqlite", 1, args.full_repeat),
            ("durable, full", "memory", 1, args.full_repeat),
        ]
    for label, store_name, every, repeat in runs:

        def make(every: int = every, store_name: str = store_name) -> Pipe[Any, None]:
            store = InMemoryCheckpointStore() if store_name == "memory" else None
            return chain(n, Durable(store=store, checkpoint_every=every))

        wall = best(n, make, small_state, repeat)
        print(
            f"| {label} | {store_name} | {wall:.3f} | {wall / n * 1e6:.1f} | {wall / plain:.2f}x |"
        )
    print()


def mapped(n: int, durable: Any) -> Pipe[Any, None]:
    """A map of `n` items (strings of ~50 bytes) through a pool of 8 workers that do nothing."""
    pipe: Pipe[Any, None] = Pipe(dict, name=f"map{n}", durable=durable, persist=False)

    @pipe.map(each="work", max_concurrency=8)
    async def items(s: Any) -> list[str]:
        return [f"item-{i:06d}-" + "x" * 40 for i in range(n)]

    @pipe.step
    async def work(s: Any, item: str) -> None:
        pass

    return pipe


def big_map(args: argparse.Namespace) -> None:
    n = args.map_items
    print(f"## A {n:,}-item map (pool of 8, small state, SQLite, best of {args.repeat})\n")
    plain = best(n, lambda: mapped(n, None), small_state, args.repeat)
    print("| run | wall (s) | per item (us) | vs plain |")
    print("|---|---:|---:|---:|")
    print(f"| plain | {plain:.3f} | {plain / n * 1e6:.1f} | 1.00x |")
    for label, every in (("durable, cheap", 0), ("durable, every 10", 10), ("durable, full", 1)):
        wall = best(
            n,
            lambda every=every: mapped(n, Durable(checkpoint_every=every)),
            small_state,
            args.repeat,
        )
        print(f"| {label} | {wall:.3f} | {wall / n * 1e6:.1f} | {wall / plain:.2f}x |")
    print()


def plain_only(args: argparse.Namespace) -> None:
    n = args.steps
    times = [best(n, lambda: chain(n, None), small_state, 1) for _ in range(args.repeat)]
    print(f"plain {n}-step chain: best {min(times):.4f}s median {statistics.median(times):.4f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--cost-steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--full-repeat", type=int, default=3, help="runs of the full-mode chains")
    parser.add_argument("--chain-only", action="store_true", help="part 2 only")
    parser.add_argument("--skip-full", action="store_true", help="no full-mode long chain")
    parser.add_argument("--plain-only", action="store_true", help="time the plain chain only")
    parser.add_argument("--map-items", type=int, default=10_000, help="items of part 3's map")
    parser.add_argument("--map-only", action="store_true", help="part 3 only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        os.environ["JUSTPIPE_STORAGE_PATH"] = root
        import justpipe._core as core

        print(f"justpipe core: {core.BACKEND}; Python {sys.version.split()[0]}\n")
        if args.plain_only:
            plain_only(args)
            return 0
        if args.map_only:
            big_map(args)
            return 0
        if not args.chain_only:
            per_completion(args)
        long_chain(args)
        big_map(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
