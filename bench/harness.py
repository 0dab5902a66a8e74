"""What the benchmark modules share with the fixtures in `conftest.py`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from floors import FloorWorkloads
from pipelines import PipelineWorkloads
from workloads import Implementation

__all__ = ["DEFAULT_ROUNDS", "HEAVY_ROUNDS", "PARTS", "BenchImplementation", "Measure"]

# Every benchmark runs in PARTS parts, interleaved with the other implementations of the
# same scenario (cython, python, floor, cython, python, floor, ...), so that a burst of load
# on a shared machine hits all three alike; the report merges the parts' rounds.
PARTS = 3
DEFAULT_ROUNDS = 3  # per part: 9 rounds in all
HEAVY_ROUNDS = 1  # per part, for the 10,000-wide and 10,000-long cases: 3 rounds in all


@dataclass(frozen=True)
class BenchImplementation:
    """One of the three things a scenario is run on."""

    name: str  # "cython" | "python" | "floor"

    @property
    def is_floor(self) -> bool:
        return self.name == "floor"

    def workloads(self) -> Implementation:
        return FloorWorkloads() if self.is_floor else PipelineWorkloads()

    def __str__(self) -> str:
        return self.name


Measure = Callable[..., int]
"""`measure(workload, *, scenario, variant, rounds=DEFAULT_ROUNDS) -> events delivered`."""
