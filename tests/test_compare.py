"""compare_runs / format_comparison / _build_step_times (spec §13.2).

The pinned reports were produced by justpipe 0.12.0 on the same inputs.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from helpers import collect
from justpipe import Event, Pipe
from justpipe.observability import RunComparison, compare_runs, format_comparison
from justpipe.observability.compare import _build_step_times
from justpipe.storage.interface import RunRecord, StoredEvent
from justpipe.types import EventType, PipelineTerminalStatus

S, E, X = EventType.STEP_START, EventType.STEP_END, EventType.STEP_ERROR
RULE = "=" * 60


def stored(kind: EventType, stage: str, at: float, invocation_id: str | None = None) -> StoredEvent:
    data: dict[str, Any] = {"type": kind.value, "stage": stage, "timestamp": at}
    if invocation_id is not None:
        data["invocation_id"] = invocation_id
    return StoredEvent(
        seq=0,
        timestamp=datetime.fromtimestamp(at, tz=UTC),
        event_type=kind,
        step_name=stage,
        data=json.dumps(data),
    )


def record(
    run_id: str,
    seconds: float | None,
    status: PipelineTerminalStatus = PipelineTerminalStatus.SUCCESS,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        start_time=datetime(2024, 1, 1, tzinfo=UTC),
        end_time=None,
        duration=None if seconds is None else timedelta(seconds=seconds),
        status=status,
    )


def steps(*pairs: tuple[str, float, float]) -> list[StoredEvent]:
    events = []
    for stage, start, end in pairs:
        events += [stored(S, stage, start), stored(E, stage, end)]
    return events


# --------------------------------------------------------------------------- step times


def test_step_times_pair_starts_with_ends() -> None:
    assert _build_step_times(steps(("a", 100.0, 101.0), ("b", 101.0, 101.5))) == {
        "a": 1.0,
        "b": 0.5,
    }


def test_step_times_keep_the_last_pair_per_name() -> None:
    assert _build_step_times(steps(("a", 100.0, 101.0), ("a", 102.0, 102.5))) == {"a": 0.5}


def test_step_times_ignore_errors_and_unmatched_ends() -> None:
    events = [stored(S, "a", 100.0), stored(X, "a", 101.0), stored(E, "b", 101.0)]
    assert _build_step_times(events) == {}


def test_step_times_use_the_stored_timestamp_not_the_json() -> None:
    events = [
        StoredEvent(1, datetime.fromtimestamp(5, tz=UTC), S, "q", "{not json"),
        StoredEvent(2, datetime.fromtimestamp(6, tz=UTC), E, "q", "[]"),
    ]
    assert _build_step_times(events) == {"q": 1.0}


def test_step_times_without_ids_pair_like_upstream() -> None:
    events = [stored(S, "w", 100.0), stored(S, "w", 100.1), stored(S, "w", 100.2)]
    events += [stored(E, "w", 101.0), stored(E, "w", 101.5), stored(E, "w", 102.0)]
    assert _build_step_times(events) == {"w": pytest.approx(0.8)}


def test_step_times_pair_concurrent_workers_by_invocation() -> None:
    """Deliberate difference (spec §21 B20/B21).

    Upstream paired the last start with the first end.
    """
    events = [stored(S, "w", 100.0 + n / 10, f"r:{n}") for n in range(3)]
    events += [stored(E, "w", end, f"r:{n}") for n, end in ((1, 101.0), (0, 101.5), (2, 102.0))]
    assert _build_step_times(events) == {"w": pytest.approx(1.8)}
    events.insert(4, stored(E, "w", 101.2, "r:unknown"))
    assert _build_step_times(events) == {"w": pytest.approx(1.8)}


# --------------------------------------------------------------------------- compare_runs


RUN1 = [
    stored(EventType.START, "system", 100.0),
    *steps(("a", 100.0, 101.0), ("b", 101.0, 101.5), ("gone", 101.5, 101.6)),
]
RUN2 = [
    stored(EventType.START, "system", 200.0),
    *steps(
        ("a", 200.0, 202.5), ("b", 202.5, 203.0005), ("new", 203.0, 203.25), ("nn", 203.0, 203.0)
    ),
    stored(EventType.FINISH, "system", 203.5),
]


def test_compare_runs_reports_every_difference() -> None:
    comparison = compare_runs(
        record("run-one-0123456789abcdef", 2.0),
        RUN1,
        record("run-two-0123456789abcdef", 3.5, PipelineTerminalStatus.FAILED),
        RUN2,
        "p1",
        "p2",
    )
    assert comparison.step_timing_diff == pytest.approx(
        {"a": 1.5, "b": 0.0005, "gone": -0.1, "new": 0.25, "nn": 0.0}
    )
    assert list(comparison.step_timing_diff) == ["a", "b", "gone", "new", "nn"]
    assert replace(comparison, step_timing_diff={}) == RunComparison(
        run1_id="run-one-0123456789abcdef",
        run2_id="run-two-0123456789abcdef",
        pipeline1_name="p1",
        pipeline2_name="p2",
        duration_diff=1.5,
        status_same=False,
        pipeline_same=False,
        step_timing_diff={},
        new_steps=["new", "nn"],
        removed_steps=["gone"],
        event_count_diff=3,
        status1="success",
        status2="failed",
    )


def test_missing_durations_count_as_zero() -> None:
    assert compare_runs(record("r1", None), [], record("r2", 2.0), []).duration_diff == 2.0
    assert compare_runs(record("r1", 2.0), [], record("r2", None), []).duration_diff == -2.0


# --------------------------------------------------------------------------- format_comparison


def test_format_comparison_matches_upstream() -> None:
    comparison = compare_runs(
        record("run-one-0123456789abcdef", 2.0),
        RUN1,
        record("run-two-0123456789abcdef", 3.5, PipelineTerminalStatus.FAILED),
        RUN2,
        "p1",
        "p2",
    )
    assert format_comparison(comparison) == (
        f"Run Comparison\n{RULE}\n\n"
        "Run 1 (baseline): run-one-01234567...\n"
        "Run 2 (compare):  run-two-01234567...\n\n"
        "Pipeline: p1 \u2192 p2\n"
        "Status:   changed (success \u2192 failed)\n\n"
        "Duration change: +1.500s (slower)\n\n"
        "Step Timing Differences:\n\n"
        "  ~ a                              +1.500s\n"
        "  + new                            (new step)\n"
        "  - gone                           (removed)\n"
        "  + nn                             (new step)\n\n"
        "Event Count Difference: +3 events"
    )


def test_identical_runs() -> None:
    comparison = compare_runs(record("r1", 2.0), RUN1, record("r2", 2.0), RUN1, "same", "same")
    assert format_comparison(comparison) == (
        f"Run Comparison\n{RULE}\n\n"
        "Run 1 (baseline): r1...\nRun 2 (compare):  r2...\n\n"
        "Pipeline: same\nStatus:   same\n\n"
        "Duration change: none\n\n"
        "Step Timing Differences: none of 1 ms or more\n\n"
        "Event Count Difference: +0 events"
    )


def test_runs_without_steps_have_no_timing_section() -> None:
    report = format_comparison(compare_runs(record("r1", None), [], record("r2", None), []))
    assert report.endswith(
        "Pipeline: \nStatus:   same\n\nDuration change: none\n\nEvent Count Difference: +0 events"
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(1.0005, "+0.000s (slower)"), (0.9995, "-0.000s (faster)"), (0.5, "-0.500s (faster)")],
)
def test_duration_change_wording(seconds: float, shown: str) -> None:
    report = format_comparison(compare_runs(record("r1", 1.0), [], record("r2", seconds), []))
    assert f"Duration change: {shown}\n" in report


@pytest.mark.parametrize(
    ("delta", "line"),
    [
        (0.00099, None),
        (0.0010001, "  ~ a                              +0.001s"),
        (-0.0011, "  ~ a                              -0.001s"),
        (123.456789, "  ~ a                              +123.457s"),
    ],
)
def test_sub_millisecond_step_changes_are_left_out(delta: float, line: str | None) -> None:
    report = format_comparison(
        compare_runs(
            record("r1", 1),
            steps(("a", 100.0, 101.0)),
            record("r2", 1),
            steps(("a", 100.0, 101.0 + delta)),
        )
    )
    if line is None:  # no empty section: one line says so
        assert report.endswith(
            "Step Timing Differences: none of 1 ms or more\n\nEvent Count Difference: +0 events"
        )
        return
    assert (
        report.split("Step Timing Differences:\n\n")[1]
        == f"{line}\n\nEvent Count Difference: +0 events"
    )


def test_step_lines_are_sorted_by_size_then_run_order() -> None:
    run1 = steps(("z", 0.0, 1.0), ("b", 0.0, 1.0), ("small", 0.0, 1.0))
    run2 = steps(
        ("y", 0.0, 1.0), ("c", 0.0, 1.0), ("small", 0.0, 1.5), ("long_name_" * 4, 0.0, 3.0)
    )
    report = format_comparison(compare_runs(record("r1", 1), run1, record("x" * 40, 1), run2))
    assert "Run 2 (compare):  xxxxxxxxxxxxxxxx...\n" in report
    assert report.split("Step Timing Differences:\n\n")[1].split("\n\n")[0].split("\n") == [
        "  + long_name_long_name_long_name_long_name_ (new step)",
        "  - z                              (removed)",
        "  - b                              (removed)",
        "  + y                              (new step)",
        "  + c                              (new step)",
        "  ~ small                          +0.500s",
    ]


# --------------------------------------------------------------------------- real runs


def as_stored(events: list[Event]) -> list[StoredEvent]:
    return [
        StoredEvent(
            seq=n,
            timestamp=datetime.fromtimestamp(event.timestamp, tz=UTC),
            event_type=event.type,
            step_name=event.stage,
            data=json.dumps({"stage": event.stage, "invocation_id": event.invocation_id}),
        )
        for n, event in enumerate(events, 1)
    ]


async def test_real_map_workers_are_timed_per_invocation() -> None:
    delays = {"x": 0.01, "y": 0.02, "z": 0.08}
    pipe: Pipe[Any, Any] = Pipe(name="mapper")

    @pipe.map(each="work", to="after")
    async def fan_out(state: Any) -> list[str]:
        return list(delays)

    @pipe.step()
    async def work(state: Any, item: str) -> None:
        await asyncio.sleep(delays[item])

    @pipe.step()
    async def after(state: Any) -> None:
        return None

    events = as_stored(await collect(pipe))
    assert _build_step_times(events)["work"] >= 0.07
    comparison = compare_runs(record("r1", 0.1), events, record("r2", 0.1), events)
    assert list(comparison.step_timing_diff) == ["work", "fan_out", "after"]
    assert (comparison.new_steps, comparison.removed_steps) == ([], [])


# --------------------------------------------------------------------------- failed steps


def test_a_step_that_failed_in_one_run_is_a_status_change() -> None:
    """Issue 20: a failed step has no STEP_END, so it looked "removed" from that run."""
    good = steps(("a", 100.0, 101.0), ("b", 101.0, 102.0))
    bad = [*steps(("a", 200.0, 201.0)), stored(S, "b", 201.0), stored(X, "b", 201.5)]
    comparison = compare_runs(record("r1", 2.0), good, record("r2", 1.5), bad)
    # upstream's fields keep their meaning (times from STEP_START -> STEP_END pairs)
    assert comparison.removed_steps == ["b"]
    assert comparison.step_status_changes == {"b": ("succeeded", "failed")}
    report = format_comparison(comparison)
    assert (
        "Step Status Changes:\n\n  ! b                              succeeded \u2192 failed\n"
        in (report)
    )
    assert "removed" not in report
    back = compare_runs(record("r2", 1.5), bad, record("r1", 2.0), good)
    assert back.new_steps == ["b"]
    assert back.step_status_changes == {"b": ("failed", "succeeded")}
    assert "new step" not in format_comparison(back)


def test_a_map_step_with_one_failed_worker_failed() -> None:
    workers = [stored(S, "w", 100.0, f"r:{n}") for n in range(3)]
    ends = [stored(E, "w", 101.0, "r:0"), stored(E, "w", 101.0, "r:1")]
    failed = [*workers, *ends, stored(X, "w", 101.0, "r:2")]
    comparison = compare_runs(
        record("r1", 1), [*workers, *ends, stored(E, "w", 101.0, "r:2")], record("r2", 1), failed
    )
    assert comparison.step_status_changes == {"w": ("succeeded", "failed")}
    assert comparison.new_steps == comparison.removed_steps == []


def test_unfinished_and_not_run_steps() -> None:
    cut = [*steps(("a", 100.0, 101.0)), stored(S, "b", 101.0)]  # b never ended
    comparison = compare_runs(record("r1", 1), cut, record("r2", 1), steps(("a", 0.0, 1.0)))
    assert comparison.step_status_changes == {"b": ("unfinished", "not run")}
    both_failed = [stored(S, "b", 1.0), stored(X, "b", 2.0)]
    assert (
        compare_runs(record("r1", 1), both_failed, record("r2", 1), both_failed).step_status_changes
        == {}
    )


def test_runs_of_one_definition_say_not_run_instead_of_new_or_removed() -> None:
    comparison = replace(
        compare_runs(record("r1", 2.0), RUN1, record("r2", 3.5), RUN2), same_definition=True
    )
    report = format_comparison(comparison)
    assert "  - gone                           (not run in run 2)\n" in report
    assert "  + new                            (not run in run 1)\n" in report
    assert "(removed)" not in report and "(new step)" not in report
