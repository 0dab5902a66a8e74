"""wide_dag and long_chain: the cost per step of scheduling, barriers and step events."""

from __future__ import annotations

import pytest
from harness import DEFAULT_ROUNDS, HEAVY_ROUNDS, BenchImplementation, Measure

WIDTHS = (50, 1_000, 10_000)
LENGTHS = (1_000, 10_000)


def _rounds(size: int) -> int:
    return HEAVY_ROUNDS if size >= 10_000 else DEFAULT_ROUNDS


@pytest.mark.parametrize("width", WIDTHS)
def test_wide_dag(measure: Measure, implementation: BenchImplementation, width: int) -> None:
    """root -> W parallel steps -> one ALL join."""
    workload = implementation.workloads().wide_dag(width)
    measure(workload, scenario="wide_dag", variant=f"W={width}", rounds=_rounds(width))


@pytest.mark.parametrize("length", LENGTHS)
def test_long_chain(measure: Measure, implementation: BenchImplementation, length: int) -> None:
    """L linear steps."""
    workload = implementation.workloads().long_chain(length)
    measure(workload, scenario="long_chain", variant=f"L={length}", rounds=_rounds(length))
