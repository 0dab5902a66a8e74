"""Helpers for the status, cleanup and store-reading tests (no tests here).

`make_jobs(root)` persists, with a real durable pipeline, two suspended runs, one
success, one failure and one interrupted run (its consumer stopped iterating).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from click.testing import CliRunner

from justpipe import Pipe, Suspend
from justpipe.cli.main import cli as cli_group
from justpipe.cli.registry import PipelineRegistry

if TYPE_CHECKING:
    from starlette.testclient import TestClient

ORIGIN = "http://127.0.0.1:8741"
STATUSES = (
    "running",
    "suspended",
    "interrupted",
    "success",
    "failed",
    "timeout",
    "cancelled",
    "client_closed",
    "damaged",
)
"""Every status of the model (docs/statuses.md)."""


@dataclass
class Job:
    mode: str = "ok"


def job_pipe() -> Pipe[Any, Any]:
    """A durable pipe whose run ends as its state says: ok, fail, suspend, or stop
    (the consumer stops iterating after the first step: an interrupted run)."""
    pipe: Pipe[Any, Any] = Pipe(Job, name="jobs", durable=True)

    @pipe.step(to="second")
    async def first(state: Job) -> Any:
        if state.mode == "fail":
            raise RuntimeError("the job failed")
        if state.mode == "suspend":
            return Suspend("waiting for approval")
        return None

    @pipe.step
    async def second(state: Job) -> None:
        await asyncio.sleep(0)

    return pipe


async def _run(pipe: Pipe[Any, Any], mode: str) -> str:
    run_id = ""
    stream = pipe.run(Job(mode))
    async for event in stream:
        run_id = run_id or event.run_id
        if mode == "stop" and event.type.value == "step_end":
            break
    await stream.aclose()  # type: ignore[attr-defined]
    return run_id


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli_group, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def list_status(output: str, run_id: str) -> str:
    """The Status column of the run's row in the plain ``justpipe list`` table."""
    row = next(line for line in output.splitlines() if line.startswith(run_id[:12]))
    return row.split()[2]


def make_jobs() -> dict[str, list[str]]:
    """Two suspended runs, one success, one failure, one interrupted: run ids by mode."""
    pipe = job_pipe()
    ids: dict[str, list[str]] = {}
    for mode in ("suspend", "ok", "suspend", "fail", "stop"):
        ids.setdefault(mode, []).append(asyncio.run(_run(pipe, mode)))
    return ids


def stored_root() -> Path:
    return Path(os.environ["JUSTPIPE_STORAGE_PATH"])


def client_for(root: Path) -> TestClient:
    # imported here: the CLI's tests use this module where the dashboard extra is absent
    from starlette.testclient import TestClient

    from justpipe.dashboard.server import create_app

    return TestClient(create_app(PipelineRegistry(root)), base_url=ORIGIN)
