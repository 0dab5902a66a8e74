"""The CLI says more in fewer lines (issue 20): `show`, `compare` and `stats` output.

`show` folds the starts of a map's workers into one line and names the failed step
with its error; `compare` says from which status to which and prints no empty section;
`stats` draws only the days that had runs and compares a run's duration only with runs
of its own pipeline.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from extras import require

require("click", "cli")

from justpipe import Pipe  # noqa: E402
from justpipe.cli import formatting  # noqa: E402
from status_fixtures import cli  # noqa: E402
from test_cli import RunSpec, add_pipeline, rid  # noqa: E402

WORKERS = 20


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "store"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(store))
    monkeypatch.setattr(formatting, "HAS_RICH", False)
    return store


def orders(fail: bool, where: str = "done") -> str:
    """Run load -> fan (a map over WORKERS items, worker `work`) -> done; its run id.

    `fail`: the step named `where` raises.
    """
    pipe: Pipe[Any, Any] = Pipe(name="orders", persist=True)

    @pipe.step(to="fan")
    async def load(state: dict[str, Any]) -> None:
        state["items"] = [] if fail and where == "load" else list(range(WORKERS))
        if fail and where == "load":  # its successors still run (as in 0.12): no items
            raise RuntimeError("inventory unavailable")

    @pipe.map(each="work", to="done")
    async def fan(state: dict[str, Any]) -> list[int]:
        return list(state["items"])

    @pipe.step
    async def work(item: int, state: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    @pipe.step
    async def done(state: dict[str, Any]) -> None:
        if fail and where == "done":
            raise RuntimeError("payment service refused the order")

    async def go() -> str:
        run_id = ""
        async for event in pipe.run({}):
            run_id = run_id or event.run_id
        return run_id

    return asyncio.run(go())


def test_show_folds_map_workers_and_names_the_failed_step(root: Path) -> None:
    """Before: 20 identical `work` lines, and the error without its step."""
    shown = cli("show", orders(fail=True))
    sequence = shown.split("Step Sequence:\n")[1].split("\n\n")[0].splitlines()
    assert sequence == [
        "  1. load",
        "  2. fan",
        f"  3. work (x{WORKERS})",
        "  4. done",
    ]
    assert "Error in step 'done': payment service refused the order" in shown
    assert "Step Errors: 1\n  done: RuntimeError: payment service refused the order" in shown


def test_compare_says_from_which_status_to_which(root: Path) -> None:
    """Before: "Status:   changed" without saying from what to what."""
    good, bad = orders(fail=False), orders(fail=True)
    report = cli("compare", good, bad)
    assert "Status:   changed (success \u2192 failed)" in report


def step_lines(report: str) -> list[str]:
    """The report's step lines (status changes, then timing differences)."""
    return [line for line in report.splitlines() if line[:4] in ("  ! ", "  ~ ", "  + ", "  - ")]


def test_compare_says_a_step_failed_not_that_it_was_removed(root: Path) -> None:
    """Before: `- done (removed)`: its time came only from STEP_START -> STEP_END pairs."""
    good, bad = orders(fail=False), orders(fail=True)
    lines = step_lines(cli("compare", good, bad))
    assert "  ! done                           succeeded \u2192 failed" in lines, lines
    assert not [line for line in lines if "removed" in line or "new step" in line], lines
    back = step_lines(cli("compare", bad, good))
    assert "  ! done                           failed \u2192 succeeded" in back, back
    assert not [line for line in back if "removed" in line or "new step" in line], back


def test_compare_says_which_steps_a_failed_run_never_reached(root: Path) -> None:
    """Same pipeline, so a step missing from one run did not run there: not "removed"."""
    good, bad = orders(fail=False), orders(fail=True, where="load")
    report = cli("compare", good, bad)
    lines = step_lines(report)
    assert "  ! load                           succeeded \u2192 failed" in lines, lines
    assert f"  - {'work':<30} (not run in run 2)" in lines, lines
    assert "removed" not in report
    assert f"  + {'work':<30} (not run in run 1)" in step_lines(cli("compare", bad, good))


def test_compare_prints_no_empty_timing_section(root: Path) -> None:
    """Before: a "Step Timing Differences:" header over nothing."""
    add_pipeline(
        root,
        "aaaa",
        "same",
        [RunSpec(rid("s1"), duration=0.5), RunSpec(rid("s2"), duration=0.5)],
    )
    report = cli("compare", rid("s1"), rid("s2"))
    assert "Step Timing Differences: none of 1 ms or more\n" in report
    assert "Step Timing Differences:\n" not in report


def test_stats_draws_only_the_days_with_runs(root: Path) -> None:
    """Before: one line per day of the window, 30 of them for --days 30, mostly zeros."""
    add_pipeline(
        root,
        "aaaa",
        "daily",
        [
            RunSpec(rid("d1"), age=timedelta(minutes=5)),
            RunSpec(rid("d2"), age=timedelta(days=10)),
        ],
    )
    out = cli("stats", "--days", "30")
    activity = out.split("Daily Activity (last 30 days):\n")[1].split("\n\n")[0].splitlines()
    assert len(activity) == 3, activity
    assert activity[-1] == "  (28 day(s) without runs)"
    assert all(" 0 " not in line for line in activity[:2])


def test_stats_compares_durations_only_within_a_pipeline(root: Path) -> None:
    """Before: a slow pipeline's normal runs were "outliers" against a fast pipeline's."""
    add_pipeline(root, "aaaa", "fast", [RunSpec(rid(f"f{n}"), duration=0.01) for n in range(9)])
    add_pipeline(root, "bbbb", "slow", [RunSpec(rid(f"s{n}"), duration=10.0) for n in range(3)])
    assert "outlier" not in cli("stats")
    add_pipeline(root, "bbbb", "slow", [RunSpec(rid("s9"), duration=200.0)])
    out = cli("stats")
    assert "Warning: Performance outlier in pipeline 'slow'!" in out
    assert "pipeline 'fast'" not in out


def test_stats_and_show_treat_a_suspended_run_as_not_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `stats` averaged the first segment of suspended and interrupted runs into
    the durations of runs, and `show` printed a suspended run's pause as "Ended:"."""
    from status_fixtures import make_jobs

    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "store"))
    monkeypatch.setattr(formatting, "HAS_RICH", False)
    ids = make_jobs()  # suspended twice, one success, one failure, one interrupted
    assert "Duration Statistics (2 run(s) that ended):" in cli("stats")
    shown = cli("show", ids["suspend"][0])
    assert "\nSuspended at: " in shown
    assert "\nEnded: " not in shown
    assert "\nEnded: " in cli("show", ids["ok"][0])
