"""Large graphs and large fan-outs complete (issue 6.3, spec §21 B10).

A long chain and a 10,000-wide ALL join run in-process under a generous watchdog. A
lazy map (an unsized source with ``max_concurrency=64``) runs in a child interpreter
that reports its resident memory: the peak may grow by at most 50 MB over the warmed-up
baseline, whatever the item count, because only 64 items are in flight; an eager map of
the same size blows that bound, which shows the probe can tell.

Measured on the 2-core CI-class machine, per backend: 100,000-step chain 20-50 s,
1,000,000-item lazy map 18-53 s (the high figures with other suites running); both are
``slow``. The default run keeps a 20,000-step chain (3-6 s) and a 100,000-item lazy map
(4-8 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import justpipe
import justpipe._core as core
from justpipe import Event, EventType, Pipe
from justpipe.types import PipelineTerminalStatus

WATCHDOG_S = 600.0
MEMORY_BOUND_MB = 50.0

pytestmark = pytest.mark.filterwarnings("ignore::justpipe.types.PipelineValidationWarning")


async def count_events(pipe: Pipe[Any, Any], state: Any) -> tuple[Counter[EventType], Event]:
    seen: Counter[EventType] = Counter()
    last: Event | None = None

    async def consume() -> None:
        nonlocal last
        async for event in pipe.run(state):
            seen[event.type] += 1
            last = event

    await asyncio.wait_for(consume(), WATCHDOG_S)
    assert last is not None
    return seen, last


def chain(length: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="chain")

    async def step(state: list[int]) -> None:
        state[0] += 1

    for i in range(length):
        pipe.step(f"s{i}", to=f"s{i + 1}" if i + 1 < length else None)(step)
    return pipe


def wide_join(width: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="join")
    branches = [f"b{i}" for i in range(width)]

    async def root() -> None:
        return None

    async def branch(state: list[int]) -> None:
        state[0] += 1

    async def join(state: list[int]) -> None:
        state[1] += 1

    pipe.step("root", to=branches)(root)
    for name in branches:
        pipe.step(name, to="join")(branch)
    pipe.step("join")(join)
    return pipe


@pytest.mark.parametrize(
    "length", [20_000, pytest.param(100_000, marks=pytest.mark.slow)], ids=["20k", "100k"]
)
def test_a_long_chain_validates_and_runs_every_step_in_order(length: int) -> None:
    state = [0]
    seen, finish = asyncio.run(count_events(chain(length), state))
    assert finish.payload.status is PipelineTerminalStatus.SUCCESS
    assert state == [length]
    assert seen[EventType.STEP_START] == seen[EventType.STEP_END] == length


def test_a_10k_wide_all_join_fires_once_after_every_branch() -> None:
    width = 10_000
    state = [0, 0]
    seen, finish = asyncio.run(count_events(wide_join(width), state))
    assert finish.payload.status is PipelineTerminalStatus.SUCCESS
    assert state == [width, 1]
    assert seen[EventType.STEP_END] == width + 2


# The child interpreter: warm up with a small map, take the resident-set baseline, run the
# big one, report the peak. "eager" maps a list with unbounded concurrency instead (every
# worker task exists at once). It prints one JSON line.
MAP_CHILD = textwrap.dedent("""
    import asyncio, json, os, sys
    from justpipe import Pipe
    import justpipe._core as core

    items, limit, eager = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "eager"

    def lazy_map(n):
        pipe = Pipe(name="lazy")

        @pipe.map(each="work", max_concurrency=None if eager else limit)
        def fan_out():
            return list(range(n)) if eager else (i for i in range(n))

        @pipe.step()
        async def work(item, state):
            state["done"] += 1

        return pipe

    def status_mb(field):
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(field + ":"))
        return int(line.split()[1]) / 1024

    def reset_peak():
        try:  # "5": reset the peak RSS (VmHWM) to the current RSS
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    async def run(n):
        state = {"done": 0}
        status = None
        events = 0
        async for event in lazy_map(n).run(state):
            events += 1
            status = event.payload.status.value if event.type.value == "finish" else None
        return state["done"], events, status

    asyncio.run(run(10_000))
    baseline = status_mb("VmRSS")
    reset_peak()
    done, events, status = asyncio.run(run(items))
    peak = status_mb("VmHWM")  # per address space: not inherited from the parent (ru_maxrss is)
    print(json.dumps({"done": done, "events": events, "status": status, "backend": core.BACKEND,
                      "baseline_mb": baseline, "peak_mb": peak}))
""")


def run_map_child(items: int, limit: int, eager: bool = False) -> dict[str, Any]:
    src = str(Path(justpipe.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    if core.BACKEND == "python":
        env["JUSTPIPE_NO_EXTENSIONS"] = "1"
    else:
        env.pop("JUSTPIPE_NO_EXTENSIONS", None)
    result = subprocess.run(
        [sys.executable, "-c", MAP_CHILD, str(items), str(limit), "eager" if eager else "lazy"],
        capture_output=True, text=True, env=env, timeout=WATCHDOG_S, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
@pytest.mark.parametrize(
    "items", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)], ids=["100k", "1M"]
)
def test_a_lazy_map_runs_every_item_in_bounded_memory(items: int) -> None:
    report = run_map_child(items, limit=64)
    assert report["backend"] == core.BACKEND
    assert report["status"] == "success"
    assert report["done"] == items
    assert report["events"] == 3 * items + 6  # per item MAP_WORKER, STEP_START, STEP_END
    growth = report["peak_mb"] - report["baseline_mb"]
    assert growth < MEMORY_BOUND_MB, f"RSS grew {growth:.1f} MB running {items} items: {report}"


@pytest.mark.backend_agnostic
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_the_memory_probe_sees_an_eager_map_exceed_the_bound() -> None:
    report = run_map_child(60_000, limit=64, eager=True)
    assert report["done"] == 60_000
    assert report["peak_mb"] - report["baseline_mb"] > MEMORY_BOUND_MB, report
