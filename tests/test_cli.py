"""The justpipe CLI on hand-built stores (spec §16, §20 CLI fragments).

Stores are written with ``SQLiteBackend`` into ``<root>/<hash>/runs.db`` plus a
``pipeline.json``, the layout persistence produces; the CLI is driven through click's
runner with ``JUSTPIPE_STORAGE_PATH`` pointing at the root. The end-to-end test with
real persisted runs is ``test_cli_e2e.py``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import justpipe.cli.registry as registry_module
from justpipe.cli import formatting
from justpipe.cli.formatting import (
    format_duration,
    format_status,
    format_timestamp,
    parse_run_meta,
    short_id,
)
from justpipe.cli.main import cli
from justpipe.cli.registry import PipelineRegistry
from justpipe.storage import RunRecord, SQLiteBackend
from justpipe.types import PipelineTerminalStatus as Status

NOW = datetime.now(UTC)


@dataclass
class RunSpec:
    """One run to store: id, age, duration, outcome and the steps it ran."""

    run_id: str
    age: timedelta = timedelta(minutes=1)
    duration: float | None = 0.5
    status: Status = Status.SUCCESS
    error: str | None = None
    error_step: str | None = None
    meta: str | None = None
    steps: list[str] = field(default_factory=lambda: ["a", "b"])


def step_events(run: RunSpec, start: datetime) -> list[str]:
    """START, a start/end pair per step 10 ms apart, FINISH: as persistence writes them."""
    t0 = start.timestamp()
    events = [{"type": "start", "stage": "system", "timestamp": t0}]
    for index, step in enumerate(run.steps):
        invocation = f"{run.run_id}:{index + 1}"
        begin = t0 + 0.001 + index * 0.01
        for kind, at in (("step_start", begin), ("step_end", begin + 0.008)):
            events.append(
                {"type": kind, "stage": step, "timestamp": at, "invocation_id": invocation}
            )
    events.append({"type": "finish", "stage": "system", "timestamp": t0 + (run.duration or 0)})
    return [json.dumps({**event, "seq": seq}) for seq, event in enumerate(events, start=1)]


def add_pipeline(root: Path, pipeline_hash: str, name: str | None, runs: list[RunSpec]) -> Path:
    """Write one pipeline directory; `name=None` leaves out pipeline.json."""
    directory = root / pipeline_hash
    directory.mkdir(parents=True, exist_ok=True)
    if name is not None:
        (directory / "pipeline.json").write_text(json.dumps({"name": name}))
    with SQLiteBackend(directory / "runs.db") as backend:
        for run in runs:
            start = NOW - run.age
            end = None if run.duration is None else start + timedelta(seconds=run.duration)
            record = RunRecord(
                run_id=run.run_id,
                start_time=start,
                end_time=end,
                duration=None if run.duration is None else timedelta(seconds=run.duration),
                status=run.status,
                error_message=run.error,
                error_step=run.error_step,
                run_meta=run.meta,
            )
            backend.save_run(record, step_events(run, start))
    return directory / "runs.db"


def rid(prefix: str) -> str:
    """A 32-character run id starting with `prefix`."""
    return prefix + "0" * (32 - len(prefix))


ETL_META = json.dumps({"data": {"source": "db"}, "tags": ["nightly"], "counters": {"rows": 5}})


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "store"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(store))
    return store


@pytest.fixture
def two_pipelines(root: Path) -> Path:
    """etl: 3 runs (one with meta); flaky: 2 failed runs, the newest runs overall."""
    add_pipeline(
        root,
        "1111111111111111",
        "etl",
        [
            RunSpec(rid("e1"), age=timedelta(minutes=30), meta=ETL_META),
            RunSpec(rid("e2"), age=timedelta(minutes=20), duration=1.5),
            RunSpec(rid("e3"), age=timedelta(days=3)),
        ],
    )
    add_pipeline(
        root,
        "2222222222222222",
        "flaky",
        [
            RunSpec(rid("f1"), age=timedelta(minutes=5), status=Status.FAILED, error="boom"),
            RunSpec(rid("f2"), age=timedelta(minutes=4), status=Status.FAILED, error="bang"),
        ],
    )
    return root


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def stored_ids(root: Path) -> set[str]:
    registry = PipelineRegistry(root)
    try:
        return {item.run.run_id for item in registry.list_all_runs(limit=None)}
    finally:
        registry.close()


# -- formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0123, "12ms"),
        (0.9994, "999ms"),
        (1.5, "1.5s"),
        (150, "2.5m"),
        (7200, "2.0h"),
    ],
)
def test_format_duration_picks_the_unit_by_magnitude(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_status_colours_success_green_failure_red_and_the_rest_yellow() -> None:
    assert format_status(Status.SUCCESS) == "[green]success[/green]"
    assert format_status(Status.FAILED) == "[red]failed[/red]"
    assert format_status(Status.CLIENT_CLOSED) == "[yellow]client_closed[/yellow]"


def test_format_timestamp_prints_utc_whatever_the_zone_of_the_datetime() -> None:
    moment = datetime(2024, 5, 1, 23, 30, tzinfo=UTC)
    other_zone = moment.astimezone(timezone_plus(9))
    assert format_timestamp(other_zone) == "2024-05-01 23:30:00"
    assert format_timestamp(moment.replace(tzinfo=None)) == "2024-05-01 23:30:00"
    assert format_timestamp(None) == "-"


def timezone_plus(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


def test_short_id_keeps_the_first_twelve_characters() -> None:
    assert short_id("0123456789abcdef") == "0123456789ab"
    assert short_id("abc") == "abc"


def test_parse_run_meta_decodes_json_and_returns_other_text_unchanged() -> None:
    assert parse_run_meta('{"data": {"k": 1}}') == {"data": {"k": 1}}
    assert parse_run_meta("[1, 2]") == [1, 2]
    assert parse_run_meta("not json") == "not json"
    assert parse_run_meta(None) is None
    assert parse_run_meta("") is None


# -- registry ---------------------------------------------------------------------------


def test_list_pipelines_names_each_store_and_falls_back_to_its_hash(root: Path) -> None:
    add_pipeline(root, "bbbb", "named", [])
    add_pipeline(root, "aaaa", None, [])
    (add_pipeline(root, "cccc", None, []).parent / "pipeline.json").write_text("{broken")
    (root / "dddd").mkdir()
    (root / "stray-file").write_text("")

    pipelines = PipelineRegistry(root).list_pipelines()

    assert [(p.name, p.hash) for p in pipelines] == [
        ("aaaa", "aaaa"),
        ("named", "bbbb"),
        ("cccc", "cccc"),
    ]
    assert pipelines[1].path == root / "bbbb" / "runs.db"


def test_list_all_runs_merges_pipelines_newest_first_and_applies_the_limit(
    two_pipelines: Path,
) -> None:
    registry = PipelineRegistry(two_pipelines)
    newest = registry.list_all_runs(limit=3)
    assert [item.run.run_id[:2] for item in newest] == ["f2", "f1", "e2"]
    assert [item.pipeline_name for item in newest] == ["flaky", "flaky", "etl"]
    assert len(registry.list_all_runs(limit=None)) == 5


def test_list_all_runs_filters_by_pipeline_name_and_status(two_pipelines: Path) -> None:
    registry = PipelineRegistry(two_pipelines)
    assert {i.run.run_id[:2] for i in registry.list_all_runs(pipeline_name="etl")} == {
        "e1",
        "e2",
        "e3",
    }
    assert registry.list_all_runs(status=Status.FAILED, pipeline_name="etl") == []
    assert len(registry.list_all_runs(status=Status.FAILED)) == 2


def test_resolve_run_finds_exact_ids_then_unique_prefixes(two_pipelines: Path) -> None:
    registry = PipelineRegistry(two_pipelines)
    exact = registry.resolve_run(rid("e1"))
    assert exact is not None and exact[0].pipeline_name == "etl"
    by_prefix = registry.resolve_run("f2")
    assert by_prefix is not None and by_prefix[0].run.run_id == rid("f2")
    assert registry.resolve_run("zz") is None
    assert registry.resolve_run("") is None


def test_resolve_run_refuses_an_ambiguous_prefix_naming_the_candidates(
    two_pipelines: Path,
) -> None:
    with pytest.raises(ValueError, match="Ambiguous run ID prefix") as info:
        PipelineRegistry(two_pipelines).resolve_run("e")
    assert str(info.value) == (
        "Ambiguous run ID prefix 'e' matches 3 runs: e20000000000, e10000000000, e30000000000"
    )


def test_ambiguity_shows_full_ids_when_their_short_forms_look_alike(root: Path) -> None:
    twins = ["abcdef012345" + "0" * 19 + str(n) for n in range(1, 8)]
    add_pipeline(
        root, "aaaa", "p", [RunSpec(t, age=timedelta(minutes=n)) for n, t in enumerate(twins)]
    )
    with pytest.raises(ValueError, match="Ambiguous run ID prefix") as info:
        PipelineRegistry(root).resolve_run("abcd")
    assert str(info.value) == (
        f"Ambiguous run ID prefix 'abcd' matches 7 runs: {', '.join(twins[:5])} (and 2 more)"
    )


# -- list and pipelines -----------------------------------------------------------------


def test_help_names_the_tool_and_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "justpipe" in result.output and "pipeline" in result.output
    for command in (
        "list",
        "show",
        "timeline",
        "compare",
        "export",
        "cleanup",
        "stats",
        "pipelines",
        "dashboard",
    ):
        assert command in result.output


def test_version_prints_the_package_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.startswith("justpipe, version ")


def test_list_on_an_empty_store_says_no_runs_found(root: Path) -> None:
    result = invoke("list")
    assert result.exit_code == 0
    assert result.output == "No runs found\n"


def test_list_shows_a_rich_table_newest_first_with_footer_and_tip(two_pipelines: Path) -> None:
    result = invoke("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "Run ID" in lines[1] and "Duration" in lines[1]
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == [
        "f20000000000...",
        "f10000000000...",
        "e20000000000...",
        "e10000000000...",
        "e30000000000...",
    ]
    assert "Showing 5 run(s)" in lines
    assert "   Example: justpipe show f2000000" in lines
    assert "Limited to" not in result.output


def test_list_plain_layout_without_rich(
    two_pipelines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formatting, "HAS_RICH", False)
    result = invoke("list", "-n", "2")
    started = format_timestamp(NOW - timedelta(minutes=4))
    assert result.output.splitlines()[:4] == [
        "Run ID          Pipeline             Status         Started                Duration",
        "-" * 89,
        f"f20000000000... flaky                failed         {started}       500ms",
        f"f10000000000... flaky                failed         "
        f"{format_timestamp(NOW - timedelta(minutes=5))}       500ms",
    ]
    assert "(Limited to 2, use --limit to show more)" in result.output


def test_list_full_shows_whole_ids_and_no_tip(
    two_pipelines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formatting, "HAS_RICH", False)
    result = invoke("list", "--full", "-s", "failed")
    assert rid("f2") in result.output and rid("f1") in result.output
    assert rid("e1") not in result.output
    assert "Tip:" not in result.output


def test_list_passes_converted_options_positionally(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr("justpipe.cli.commands.list.list_command", lambda *args: calls.append(args))
    result = invoke("list", "-p", "etl", "-s", "FAILED", "-n", "5", "--full")
    assert result.exit_code == 0
    ((registry, *rest),) = calls
    assert isinstance(registry, PipelineRegistry)
    assert rest == ["etl", Status.FAILED, 5, True]


@pytest.mark.parametrize("args", [["-n", "0"], ["-n", "abc"], ["-s", "bogus"]])
def test_list_rejects_bad_options_with_a_usage_error(root: Path, args: list[str]) -> None:
    result = invoke("list", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_pipelines_lists_each_pipeline_with_count_last_run_and_success_rate(
    two_pipelines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_pipeline(two_pipelines, "3333333333333333", "empty", [])
    monkeypatch.setattr(formatting, "HAS_RICH", False)
    result = invoke("pipelines")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    last_etl = format_timestamp(NOW - timedelta(minutes=20))
    assert (
        lines[2]
        == f"etl                            1111111111111111       3  {last_etl}        100.0%"
    )
    assert lines[3].startswith("flaky ") and lines[3].endswith("  0.0%")
    assert lines[4].split() == ["empty", "3333333333333333", "0", "-", "-"]
    assert lines[-1] == "3 pipeline(s) found"


def test_pipelines_on_an_empty_store_says_no_pipelines_found(root: Path) -> None:
    result = invoke("pipelines")
    assert (result.exit_code, result.output) == (0, "No pipelines found\n")


# -- show, timeline, compare, export ----------------------------------------------------


def test_show_prints_outcome_event_breakdown_steps_and_meta(two_pipelines: Path) -> None:
    result = invoke("show", "e1")
    start = NOW - timedelta(minutes=30)
    assert result.exit_code == 0
    assert result.output == "\n".join(
        [
            "",
            f"Run: {rid('e1')}",
            "=" * 60,
            "Pipeline: etl",
            "Status: success",
            f"Started: {format_timestamp(start)}",
            f"Ended: {format_timestamp(start + timedelta(seconds=0.5))}",
            "Duration: 500ms",
            "",
            "Events: 6 total",
            "",
            "Event Breakdown:",
            "  step_start                2",
            "  step_end                  2",
            "  start                     1",
            "  finish                    1",
            "",
            "Step Sequence:",
            "  1. a",
            "  2. b",
            "",
            "User Meta:",
            "  data: {'source': 'db'}",
            "  tags: ['nightly']",
            "  counters: {'rows': 5}",
            "",
            "",
        ]
    )


def test_show_reports_the_error_of_a_failed_run(two_pipelines: Path) -> None:
    result = invoke("show", "f1")
    assert "Status: failed" in result.output and "\nError: boom\n" in result.output


def test_show_of_an_unknown_id_says_not_found_and_exits_1(two_pipelines: Path) -> None:
    result = invoke("show", "zzzz")
    assert (result.exit_code, result.output) == (1, "Run not found: zzzz\n")


def test_show_of_an_ambiguous_prefix_names_the_matches_and_exits_1(two_pipelines: Path) -> None:
    result = invoke("show", "f")
    assert result.exit_code == 1
    assert result.output.startswith("Error: Ambiguous run ID prefix 'f' matches 2 runs: ")


@pytest.mark.parametrize(
    ("meta", "shown"),
    [("not json", "\nUser Meta: not json\n"), ("[1, 2]", "\nUser Meta: [1, 2]\n")],
)
def test_show_prints_meta_that_is_not_an_object_on_one_line(
    root: Path, meta: str, shown: str
) -> None:
    add_pipeline(root, "aaaa", "m", [RunSpec(rid("a"), meta=meta)])
    assert shown in invoke("show", "a").output


def test_timeline_prints_an_ascii_chart_of_the_steps(two_pipelines: Path) -> None:
    result = invoke("timeline", "e1")
    assert result.exit_code == 0
    assert "etl - Execution Timeline (500ms)" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith(("a ", "b "))]
    assert len(rows) == 2 and all("█" in row and "8ms" in row for row in rows)


@pytest.mark.parametrize(("fmt", "suffix"), [("html", "html"), ("mermaid", "mmd")])
def test_timeline_writes_html_and_mermaid_files_in_the_working_directory(
    two_pipelines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, suffix: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("timeline", "e1", "-f", fmt)
    written = tmp_path / f"timeline_e1000000.{suffix}"
    assert result.exit_code == 0
    assert f"saved to: timeline_e1000000.{suffix}" in result.output
    assert "etl" in written.read_text()
    if fmt == "mermaid":
        assert written.read_text() in result.output


def test_timeline_of_a_run_without_events_says_so(root: Path) -> None:
    add_pipeline(root, "aaaa", "quiet", [])
    with SQLiteBackend(root / "aaaa" / "runs.db") as backend:
        backend.save_run(RunRecord(rid("9"), NOW, NOW, timedelta(0), Status.SUCCESS), events=[])
    result = invoke("timeline", "9")
    assert (result.exit_code, result.output) == (0, "No events found for this run\n")


def test_compare_prints_the_run_comparison(two_pipelines: Path) -> None:
    result = invoke("compare", "e1", "e2")
    assert result.exit_code == 0
    assert result.output.startswith("Run Comparison\n")
    assert "Duration change: +1.000s (slower)" in result.output


def test_compare_with_an_unknown_run_exits_1(two_pipelines: Path) -> None:
    result = invoke("compare", "e1", "nope")
    assert (result.exit_code, result.output) == (1, "Run not found: nope\n")


def test_export_writes_the_run_and_parsed_events_as_json(
    two_pipelines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("export", "e1")
    assert result.exit_code == 0
    assert "Run exported to: run_e1000000.json" in result.output
    document = json.loads((tmp_path / "run_e1000000.json").read_text())
    assert document["run"]["id"] == rid("e1")
    assert document["run"]["pipeline_name"] == "etl"
    assert document["run"]["pipeline_hash"] == "1111111111111111"
    assert document["run"]["status"] == "success"
    assert document["run"]["duration_seconds"] == 0.5
    assert document["run"]["run_meta"] == json.loads(ETL_META)
    assert datetime.fromisoformat(document["run"]["start_time"]).tzinfo is not None
    assert document["event_count"] == len(document["events"]) == 6
    first = document["events"][0]
    assert (first["seq"], first["event_type"], first["step_name"]) == (1, "start", "system")
    assert first["data"]["type"] == "start"
    assert "exported_at" in document


def test_export_to_an_unwritable_path_reports_it_and_exits_1(
    two_pipelines: Path, tmp_path: Path
) -> None:
    target = tmp_path / "missing-dir" / "out.json"
    result = invoke("export", "e1", "-o", str(target))
    assert result.exit_code == 1
    assert f"Error: cannot write {target}" in result.output
    assert "Traceback" not in result.output


# -- cleanup ----------------------------------------------------------------------------


def test_cleanup_dry_run_lists_the_plan_and_deletes_nothing(two_pipelines: Path) -> None:
    before = stored_ids(two_pipelines)
    result = invoke("cleanup", "--keep", "2", "--dry-run")
    assert result.exit_code == 0
    assert result.output.startswith(
        "Found 3 run(s) to clean up\n\nDRY RUN - No files will be deleted\n"
    )
    assert "  success            3 run(s)" in result.output
    assert "DRY RUN - Use without --dry-run to actually delete these runs" in result.output
    assert stored_ids(two_pipelines) == before


def test_cleanup_deletes_exactly_the_listed_runs_after_confirmation(two_pipelines: Path) -> None:
    result = invoke("cleanup", "--keep", "3", input="y\n")
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.splitlines() if line.startswith("  e")}
    assert listed == {short_id(rid("e1")), short_id(rid("e3"))}
    assert "Deleted 2 run(s)" in result.output and "Remaining: 3 run(s)" in result.output
    assert stored_ids(two_pipelines) == {rid("f1"), rid("f2"), rid("e2")}


@pytest.mark.parametrize("answer", ["n\n", "", "maybe\n"])
def test_cleanup_keeps_everything_unless_the_answer_is_yes(
    two_pipelines: Path, answer: str
) -> None:
    before = stored_ids(two_pipelines)
    result = invoke("cleanup", "--keep", "0", input=answer)
    assert result.exit_code == 0
    assert "Delete 5 run(s)? [y/N]: " in result.output
    assert result.output.rstrip().endswith("Cancelled")
    assert stored_ids(two_pipelines) == before


def test_cleanup_yes_flag_deletes_without_asking(two_pipelines: Path) -> None:
    result = invoke("cleanup", "--keep", "0", "--status", "failed", "--yes")
    assert result.exit_code == 0
    assert "[y/N]" not in result.output
    assert stored_ids(two_pipelines) == {rid("e1"), rid("e2"), rid("e3")}


def test_cleanup_keep_counts_all_runs_before_filtering_by_status(two_pipelines: Path) -> None:
    # The two newest runs are failures; keeping 2 still leaves every success deletable.
    result = invoke("cleanup", "--keep", "2", "--status", "success", "--dry-run")
    assert result.output.startswith("Found 3 run(s) to clean up")


def test_cleanup_older_than_spares_recent_runs(two_pipelines: Path) -> None:
    result = invoke("cleanup", "--keep", "0", "--older-than", "1", "-y")
    assert "Deleted 1 run(s)" in result.output
    assert rid("e3") not in stored_ids(two_pipelines)


def test_cleanup_with_nothing_to_delete_says_so(two_pipelines: Path) -> None:
    assert invoke("cleanup").output == "No runs to clean up\n"


def test_cleanup_rejects_a_negative_keep(two_pipelines: Path) -> None:
    result = invoke("cleanup", "--keep", "-1", "-y")
    assert result.exit_code == 2
    assert len(stored_ids(two_pipelines)) == 5


def test_cleanup_reports_a_locked_store_and_leaves_its_runs(
    two_pipelines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = registry_module.PipelineRegistry.__init__
    monkeypatch.setattr(
        registry_module.PipelineRegistry,
        "__init__",
        lambda self, root, timeout=0.1: original(self, root, timeout=timeout),
    )
    with write_lock(two_pipelines / "1111111111111111" / "runs.db"):
        result = invoke("cleanup", "--keep", "0", "-y")
    assert result.exit_code == 1
    assert "database is locked" in result.output
    assert "3 run(s) were not deleted." in result.output
    assert "Traceback" not in result.output
    assert stored_ids(two_pipelines) == {rid("e1"), rid("e2"), rid("e3")}


# -- stats ------------------------------------------------------------------------------


def test_stats_summarises_outcomes_durations_activity_and_errors(two_pipelines: Path) -> None:
    # the runs were stored relative to NOW (taken at import): derive what "today" and
    # "N minutes ago" must say from the clock at the call, however long the suite took
    before = datetime.now(UTC)
    result = invoke("stats")
    after = datetime.now(UTC)
    out = result.output
    starts = [NOW - timedelta(minutes=m) for m in (30, 20, 5, 4)] + [NOW - timedelta(days=3)]
    today = sum(1 for start in starts if start.date() == after.date())
    f2_start = NOW - timedelta(minutes=4)
    ages = {int((at - f2_start).total_seconds() // 60) for at in (before, after)}
    assert result.exit_code == 0
    assert "Overall Pipeline Statistics\nLast 7 day(s)" in out
    assert "Total Runs:        5" in out
    assert "  ✓ Success             3 ( 60.0%)" in out
    assert "  ✗ Failed              2 ( 40.0%)" in out
    assert "Success Rate:      60.0% (3/5 that ended)" in out
    assert "  Maximum:         1.5s" in out
    assert "  etl                                 3 ( 60.0%)" in out
    assert re.search(rf"^  Today +{today} ", out, re.MULTILINE), out
    assert "Recent Errors:     2 error(s)" in out
    minutes = "|".join(str(age) for age in sorted(ages))
    row = rf"  {short_id(rid('f2'))}  flaky                 ({minutes})m ago +bang"
    assert re.search(row, out), out
    assert "Warning" not in out


def test_stats_warns_about_many_errors_and_slow_outliers(root: Path) -> None:
    runs = [RunSpec(rid(f"{n}"), status=Status.FAILED, duration=0.1) for n in range(1, 5)]
    runs.append(RunSpec(rid("9"), duration=30.0))
    add_pipeline(root, "aaaa", "bad", runs)
    out = invoke("stats", "-p", "bad").output
    assert "Pipeline Statistics: bad" in out
    assert "Warning: High error rate detected!\n   4 errors vs 1 successes" in out
    assert (
        "Warning: Performance outlier in pipeline 'bad'!\n   Slowest run: 30.0s vs its avg: 6.1s"
        in out
    )


def test_stats_without_runs_in_the_window_says_how_many_days(two_pipelines: Path) -> None:
    assert invoke("stats", "-p", "nope").output == "No runs found\n"
    add_pipeline(two_pipelines, "old0", "old", [RunSpec(rid("0"), age=timedelta(days=10))])
    assert invoke("stats", "-p", "old").output == "No runs found in the last 7 day(s)\n"


def test_stats_puts_a_multi_line_error_on_one_line(root: Path) -> None:
    add_pipeline(root, "aaaa", "p", [RunSpec(rid("a"), status=Status.FAILED, error="one\ntwo")])
    assert "one two\n" in invoke("stats").output


# -- dashboard --------------------------------------------------------------------------


def test_dashboard_without_its_dependencies_prints_the_install_hint(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    result = invoke("dashboard", "--no-open")
    assert result.exit_code == 1
    assert 'pip install "justpipe[dashboard]"' in result.output


# serving the dashboard: tests/test_dashboard_cli.py


# -- broken stores and environments -----------------------------------------------------


def test_a_corrupt_store_is_reported_left_untouched_and_the_others_still_listed(
    two_pipelines: Path,
) -> None:
    corrupt = two_pipelines / "0bad" / "runs.db"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"this is not a database" * 100)
    before = corrupt.read_bytes()

    result = invoke("list")

    assert result.exit_code == 1
    assert "Showing 5 run(s)" in result.output
    assert "Warning: skipped pipeline '0bad'" in result.output
    assert "not a database" in result.output
    assert "Traceback" not in result.output
    assert corrupt.read_bytes() == before


@pytest.mark.parametrize("command", [["pipelines"], ["stats"], ["cleanup", "--dry-run"]])
def test_every_listing_command_survives_a_corrupt_store(
    two_pipelines: Path, command: list[str]
) -> None:
    (two_pipelines / "0bad").mkdir()
    (two_pipelines / "0bad" / "runs.db").write_bytes(b"garbage" * 100)
    result = invoke(*command)
    assert result.exit_code == 1
    assert "Warning: skipped pipeline '0bad'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_show_finds_a_run_despite_a_corrupt_neighbour(two_pipelines: Path) -> None:
    (two_pipelines / "0bad").mkdir()
    (two_pipelines / "0bad" / "runs.db").write_bytes(b"garbage" * 100)
    result = invoke("show", "f1")
    assert result.exit_code == 0
    assert "Pipeline: flaky" in result.output


def test_a_storage_path_that_is_a_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(blocker / "sub"))
    result = invoke("list")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot use the storage directory {blocker / 'sub'}")
    assert "Traceback" not in result.output


def test_get_registry_uses_the_monkeypatchable_storage_resolver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import justpipe.cli.main as main_module

    monkeypatch.setattr(main_module, "resolve_storage_path", lambda: tmp_path / "elsewhere")
    registry = main_module.get_registry()
    assert registry.storage_dir == tmp_path / "elsewhere"
    assert (tmp_path / "elsewhere").is_dir()


def test_importing_the_cli_without_click_raises_an_install_hint() -> None:
    code = (
        "import sys; sys.modules['click'] = None\n"
        "try:\n"
        "    import justpipe.cli.main\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = run_python(code)
    assert out.returncode == 0
    assert 'pip install "justpipe[cli]"' in out.stdout


def test_the_console_script_without_click_prints_the_hint_without_a_traceback() -> None:
    code = (
        "import sys; sys.modules['click'] = None\n"
        "from justpipe.cli.main import main\n"
        "sys.exit(main())\n"
    )
    out = run_python(code)
    assert out.returncode != 0
    assert out.stderr.strip() == (
        "Error: The justpipe CLI needs its optional dependencies. "
        'Install them with: pip install "justpipe[cli]"'
    )


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@contextmanager
def write_lock(db_path: Path) -> Iterator[None]:
    """Hold a write transaction on `db_path` from another connection."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()
