"""Random pipelines with random faults keep every invariant of `invariants.py` (issue 6.1)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from .harness import run_sync
from .invariants import check_run
from .strategies import RunSpec, fuzz_examples, run_specs

FUZZ = settings(
    max_examples=fuzz_examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
    print_blob=True,
)


@FUZZ
@given(run_specs())
def test_random_faulty_runs_keep_the_stream_and_lifecycle_invariants(spec: RunSpec) -> None:
    check_run(run_sync(spec))
