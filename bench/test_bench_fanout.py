"""fanout_map and sub_pipeline_fanout: one map step fanning out to many workers."""

from __future__ import annotations

import pytest
from harness import BenchImplementation, Measure
from workloads import FANOUT_ITEMS, SUB_ITEMS


@pytest.mark.parametrize(
    ("variant", "max_concurrency"),
    [("unbounded", None), ("max_concurrency=64", 64)],
    ids=("unbounded", "max_concurrency=64"),
)
def test_fanout_map(
    measure: Measure,
    implementation: BenchImplementation,
    variant: str,
    max_concurrency: int | None,
) -> None:
    """One map over 10,000 items to a trivial async worker."""
    workload = implementation.workloads().fanout_map(FANOUT_ITEMS, max_concurrency)
    measure(workload, scenario="fanout_map", variant=variant)


def test_sub_pipeline_fanout(measure: Measure, implementation: BenchImplementation) -> None:
    """A map of 1,000 items whose workers each run a 2-step sub-pipeline."""
    workload = implementation.workloads().sub_pipeline_fanout(SUB_ITEMS)
    measure(workload, scenario="sub_pipeline_fanout", variant=f"N={SUB_ITEMS}")
