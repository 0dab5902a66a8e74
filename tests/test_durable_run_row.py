"""The run store's row of a durable run: one run over its segments."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from helpers import collect, drain, run_with_watchdog
from justpipe import Pipe, Suspend
from justpipe.storage.sqlite import SQLiteBackend
from justpipe.types import PipelineTerminalStatus


def pausing() -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="row", durable=True)

    @pipe.step(to="second")
    async def first(s: dict[str, Any]) -> Suspend:
        await asyncio.sleep(0.05)
        return Suspend("wait")

    @pipe.step
    async def second(s: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)

    return pipe


async def test_the_row_keeps_the_first_start_and_sums_the_segments_durations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    first = await collect(pausing(), {})
    run_id = first[-1].run_id
    (db,) = tmp_path.glob("*/runs.db")
    with SQLiteBackend(db) as backend:
        one = backend.get_run(run_id)
    assert one is not None and one.duration is not None
    await asyncio.sleep(0.3)  # the gap between the segments is not the run's duration
    await run_with_watchdog(drain(pausing().resume(run_id)))
    with SQLiteBackend(db) as backend:
        both = backend.get_run(run_id)
    assert both is not None and both.duration is not None and both.end_time is not None
    assert both.status is PipelineTerminalStatus.SUCCESS
    assert both.start_time == one.start_time
    second_segment = both.duration - one.duration
    assert 0.04 < second_segment.total_seconds() < 0.3
    assert (both.end_time - both.start_time).total_seconds() > 0.3 + 0.09
