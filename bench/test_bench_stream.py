"""token_stream and many_small_runs: per-event and per-run overhead."""

from __future__ import annotations

from harness import BenchImplementation, Measure
from workloads import RUNS, TOKENS


def test_token_stream(measure: Measure, implementation: BenchImplementation) -> None:
    """One async-generator step yielding 100,000 tokens, each delivered to the consumer."""
    workload = implementation.workloads().token_stream(TOKENS)
    measure(workload, scenario="token_stream", variant=f"tokens={TOKENS}")


def test_many_small_runs(measure: Measure, implementation: BenchImplementation) -> None:
    """1,000 `run()` calls of a 3-step chain, one after the other."""
    workload = implementation.workloads().many_small_runs(RUNS)
    measure(workload, scenario="many_small_runs", variant=f"runs={RUNS}")
