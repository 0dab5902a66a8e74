"""The benchmark scenarios, as sizes and expected notification counts.

One place for each fact a benchmark, the floor, the memory probe and the report
share: the scenario's name, its size parameter, how many units of work it does
(items, steps, tokens, runs) and how many events the consumer must receive.
Each implementation (the pipeline on either backend, the raw-asyncio floor)
builds a `Workload` for a scenario; the benchmark times `Workload.run()` and
checks the count it returns, so an implementation that skipped work would fail
the benchmark instead of winning it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "FANOUT_ITEMS",
    "MEMORY_CONCURRENCY",
    "MEMORY_ITEMS",
    "QUEUE_SIZE",
    "RUNS",
    "SUB_ITEMS",
    "TOKENS",
    "Implementation",
    "Workload",
    "events_fanout_map",
    "events_long_chain",
    "events_many_small_runs",
    "events_sub_pipeline_fanout",
    "events_token_stream",
    "events_wide_dag",
]

FANOUT_ITEMS = 10_000
TOKENS = 100_000
RUNS = 1_000
RUN_STEPS = 3
SUB_ITEMS = 1_000
MEMORY_ITEMS = 1_000_000
MEMORY_CONCURRENCY = 64
QUEUE_SIZE = 1000  # justpipe's default `queue_size`; the floors use the same bound


@dataclass(frozen=True, slots=True)
class Workload:
    """A prepared scenario: `run()` does the work once and returns the events delivered."""

    run: Callable[[], Coroutine[Any, Any, int]]
    expected_events: int
    units: int  # the scenario's unit of work (items, steps, tokens, runs)


class Implementation(Protocol):
    """What the pipeline (either backend) and the floor both provide."""

    def fanout_map(self, n: int, max_concurrency: int | None) -> Workload: ...
    def wide_dag(self, width: int) -> Workload: ...
    def long_chain(self, length: int) -> Workload: ...
    def token_stream(self, tokens: int) -> Workload: ...
    def many_small_runs(self, runs: int) -> Workload: ...
    def sub_pipeline_fanout(self, n: int) -> Workload: ...
    def lazy_map(self, n: int, max_concurrency: int) -> Workload: ...


# Event counts as the spec's event model (§8) defines them; the floors deliver the same.
def events_fanout_map(n: int) -> int:
    """START, STEP_START map, MAP_START, n MAP_WORKER, n x (STEP_START, STEP_END),
    MAP_COMPLETE, STEP_END map, FINISH."""
    return 3 * n + 6


def events_wide_dag(width: int) -> int:
    """START, root start/end, width x start/end, join start/end, FINISH."""
    return 2 * width + 6


def events_long_chain(length: int) -> int:
    """START, length x start/end, FINISH."""
    return 2 * length + 2


def events_token_stream(tokens: int) -> int:
    """START, STEP_START, tokens x TOKEN, STEP_END, FINISH."""
    return tokens + 4


def events_many_small_runs(runs: int) -> int:
    """runs x a 3-step chain run."""
    return runs * events_long_chain(RUN_STEPS)


def events_sub_pipeline_fanout(n: int) -> int:
    """A map of n items; each worker is a sub step whose 2-step child run forwards
    START, 2 x start/end, FINISH: per item MAP_WORKER + sub start/end + 6 forwarded."""
    return 9 * n + 6
