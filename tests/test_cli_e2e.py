"""The CLI on runs that real pipelines persisted (spec §15.4 + §16).

Pipelines run with ``persist=True`` into a storage root under ``tmp_path``; every CLI
command then reads that store, through click's runner and once through the console
script's ``main()`` in a separate process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from justpipe import Pipe
from justpipe.cli.main import cli
from justpipe.cli.registry import PipelineRegistry


@dataclass
class Counter:
    n: int = 0


def build_etl() -> Pipe[Counter, None]:
    pipe: Pipe[Counter, None] = Pipe(Counter, name="etl", persist=True)

    @pipe.step(to="transform")
    async def extract(state: Counter) -> None:
        state.n += 1

    @pipe.step(to="load")
    async def transform(state: Counter) -> None:
        state.n += 1

    @pipe.step
    async def load(state: Counter) -> None:
        state.n += 1

    return pipe


def build_flaky() -> Pipe[Counter, None]:
    pipe: Pipe[Counter, None] = Pipe(Counter, name="flaky", persist=True)

    @pipe.step(to="explode")
    async def prepare(state: Counter) -> None:
        state.n += 1

    @pipe.step
    async def explode(state: Counter) -> None:
        raise ValueError("boom")

    return pipe


async def run_to_end(pipe: Pipe[Counter, None]) -> None:
    async for _ in pipe.run(Counter()):
        pass


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three successful etl runs, then two failed flaky runs, all persisted."""
    root = tmp_path / "runs"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(root))
    etl, flaky = build_etl(), build_flaky()
    for _ in range(3):
        await run_to_end(etl)
    for _ in range(2):
        await run_to_end(flaky)
    return root


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def run_ids(root: Path, pipeline: str | None = None) -> list[str]:
    """Stored run ids, newest first."""
    registry = PipelineRegistry(root)
    try:
        return [item.run.run_id for item in registry.list_all_runs(pipeline, limit=None)]
    finally:
        registry.close()


async def test_pipelines_and_list_show_what_was_persisted(store: Path) -> None:
    pipelines = invoke("pipelines")
    assert pipelines.exit_code == 0
    assert "etl" in pipelines.output and "flaky" in pipelines.output
    assert "100.0%" in pipelines.output and "0.0%" in pipelines.output
    assert "2 pipeline(s) found" in pipelines.output

    listing = invoke("list", "--full")
    assert listing.exit_code == 0
    assert "Showing 5 run(s)" in listing.output
    for run_id in run_ids(store):
        assert run_id in listing.output


async def test_show_by_prefix_reports_the_failure_and_the_steps_that_ran(store: Path) -> None:
    newest_failure = run_ids(store, "flaky")[0]
    result = invoke("show", newest_failure[:10])
    assert result.exit_code == 0
    assert f"Run: {newest_failure}" in result.output
    assert "Status: failed" in result.output
    assert "Error: boom" in result.output
    assert "Step Sequence:\n  1. prepare\n  2. explode\n" in result.output
    assert "  step_error                1" in result.output


async def test_timeline_compare_and_export_read_the_persisted_events(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = run_ids(store, "etl")[:2]

    timeline = invoke("timeline", first)
    assert timeline.exit_code == 0
    assert "etl - Execution Timeline" in timeline.output
    for step in ("extract", "transform", "load"):
        assert any(line.startswith(step) for line in timeline.output.splitlines())

    comparison = invoke("compare", first, second)
    assert comparison.exit_code == 0
    assert comparison.output.startswith("Run Comparison")
    assert "Event Count Difference: +0 events" in comparison.output

    exported = invoke("export", first, "-o", "out.json")
    assert exported.exit_code == 0
    document = json.loads((tmp_path / "out.json").read_text())
    types = [event["event_type"] for event in document["events"]]
    assert types[0] == "start" and types[-1] == "finish"
    assert types.count("step_end") == 3
    assert document["run"]["status"] == "success"
    assert document["events"][-1]["data"]["payload"]["status"] == "success"


async def test_stats_counts_the_persisted_outcomes(store: Path) -> None:
    result = invoke("stats")
    assert result.exit_code == 0
    assert "Total Runs:        5" in result.output
    assert "Success Rate:      60.0% (3/5 that ended)" in result.output
    assert "Recent Errors:     2 error(s)" in result.output


async def test_cleanup_keeps_the_newest_runs_and_deletes_only_the_listed_ones(
    store: Path,
) -> None:
    before = run_ids(store)
    result = invoke("cleanup", "--keep", "2", "--status", "success", input="y\n")
    assert result.exit_code == 0
    assert "Found 3 run(s) to clean up" in result.output
    assert "Deleted 3 run(s)" in result.output
    assert run_ids(store) == before[:2]


def run_console_script(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``main()`` as the console script does, in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = ["justpipe", *args]
    code = f"import sys; from justpipe.cli.main import main; sys.argv = {argv!r}; main()"
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_the_console_entry_point_runs_in_its_own_process(store: Path) -> None:
    listing = await asyncio.to_thread(run_console_script, "list")
    assert listing.returncode == 0, listing.stderr
    assert "Showing 5 run(s)" in listing.stdout

    missing = await asyncio.to_thread(run_console_script, "show", "nope")
    assert (missing.returncode, missing.stdout) == (1, "Run not found: nope\n")
    assert "Traceback" not in missing.stderr
