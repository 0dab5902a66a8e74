"""Random pipelines with random faults keep every invariant of `invariants.py` (issue 6.1).

`JUSTPIPE_FUZZ_EXAMPLES=5000` (or any number) runs a nightly-sized fuzz; the default
keeps the suite within its CI budget. The second half shows that the checker itself
fails on broken runs, so a green fuzz means something.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from justpipe.types import Event, EventType

from .harness import RunRecord, run_sync
from .invariants import check_run
from .strategies import Action, NodeSpec, PipeSpec, RunSpec, fuzz_examples, run_specs

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


# ---------------------------------------------------------------------- the checker can fail

OK = (Action("ok"),)
SMALL = RunSpec(PipeSpec("root", (
    NodeSpec("n0", "step", OK, to=("n1",)),
    NodeSpec("n1", "map", (Action("items", ("list", 2)),), each="n1w"),
    NodeSpec("n1w", "worker", OK),
)))


@pytest.fixture(scope="module")
def clean() -> RunRecord:
    record = run_sync(SMALL)
    check_run(record)
    return record


def with_events(record: RunRecord, change: Callable[[list[Event]], list[Event]]) -> RunRecord:
    """The record with the same change applied to the consumer's and the observer's events."""
    observed = {
        run_id: dataclasses.replace(run, events=change(list(run.events)))
        for run_id, run in record.recorder.observed.items()
    }
    recorder = dataclasses.replace(record.recorder, observed=observed)
    return dataclasses.replace(record, events=change(list(record.events)), recorder=recorder)


def renumber(events: list[Event]) -> list[Event]:
    return [dataclasses.replace(e, seq=i) for i, e in enumerate(events, start=1)]


def without(etype: EventType, stage: str) -> Callable[[list[Event]], list[Event]]:
    def change(events: list[Event]) -> list[Event]:
        drop = next(i for i, e in enumerate(events) if e.type is etype and e.stage == stage)
        return renumber(events[:drop] + events[drop + 1:])

    return change


BROKEN: dict[str, tuple[str, Callable[[RunRecord], RunRecord]]] = {
    "seq gap": ("S1", lambda r: with_events(r, lambda ev: ev[:2] + renumber(ev)[3:])),
    "two root FINISH": ("S2", lambda r: with_events(r, lambda ev: renumber(ev + ev[-1:]))),
    "lost STEP_END": ("I4", lambda r: with_events(r, without(EventType.STEP_END, "n0"))),
    "lost worker STEP_END": ("I4", lambda r: with_events(r, without(EventType.STEP_END, "n1w"))),
    "lost MAP_COMPLETE": ("I5", lambda r: with_events(r, without(EventType.MAP_COMPLETE, "n1"))),
    "lost MAP_WORKER": ("I5", lambda r: with_events(r, without(EventType.MAP_WORKER, "n1w[0]"))),
    "hook skipped": ("L1", lambda r: dataclasses.replace(
        r, recorder=dataclasses.replace(r.recorder, shutdowns=Counter()))),
    "no terminal callback": ("L2", lambda r: dataclasses.replace(r, recorder=dataclasses.replace(
        r.recorder, observed={k: dataclasses.replace(v, terminals=[])
                              for k, v in r.recorder.observed.items()}))),
    "task left alive": ("L3", lambda r: dataclasses.replace(r, leftover_tasks=[_a_task()])),
    "exception never retrieved": ("L4", lambda r: dataclasses.replace(
        r, loop_errors=[{"message": "Task exception was never retrieved"}])),
}


def _a_task() -> Any:
    async def idle() -> None:
        return None

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(idle())
        loop.run_until_complete(task)
        return task
    finally:
        loop.close()


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("case", list(BROKEN))
def test_the_checker_rejects_a_broken_run(clean: RunRecord, case: str) -> None:
    code, breaker = BROKEN[case]
    with pytest.raises(AssertionError, match=code):
        check_run(breaker(clean))


@pytest.mark.backend_agnostic
def test_a_full_consumer_must_get_the_root_finish(clean: RunRecord) -> None:
    record = with_events(clean, lambda ev: ev[:-1])  # SMALL's consumer reads to the end
    with pytest.raises(AssertionError, match="S2"):
        check_run(record)
