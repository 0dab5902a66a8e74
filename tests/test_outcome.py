"""`pipe.execute()` / `pipe.execute_sync()`: a run (or a resumed durable run) in one call."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import pytest

from justpipe import DefinitionError, Pipe, RunFailed, RunOutcome, Suspend
from justpipe.durable import resume_value
from justpipe.types import PipelineTerminalStatus


def order_pipe() -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="orders")

    @pipe.step(to="charge")
    async def load(state: dict[str, Any]) -> None:
        state["order"] = {"id": 7, "total": state.get("total", 12.5)}

    @pipe.step
    async def charge(state: dict[str, Any]) -> None:
        if state["order"]["total"] > 100:
            raise ValueError("card declined")
        state["charged"] = True

    return pipe


async def test_a_successful_run() -> None:
    state: dict[str, Any] = {}
    outcome = await order_pipe().execute(state)
    assert isinstance(outcome, RunOutcome)
    assert outcome.ok and outcome.status is PipelineTerminalStatus.SUCCESS
    assert outcome.state is state and state["charged"] is True
    assert outcome.failure is None and outcome.error is None
    assert isinstance(outcome.run_id, str) and outcome.run_id
    assert outcome.duration_s >= 0
    assert outcome.raise_for_status() is outcome


async def test_a_failed_run_names_the_step_and_the_error() -> None:
    outcome = await order_pipe().execute({"total": 500})
    assert outcome.status is PipelineTerminalStatus.FAILED and not outcome.ok
    assert outcome.failure is not None
    assert outcome.failure.step == "charge"
    assert outcome.failure.error == "card declined"
    assert outcome.failure.error_type == "ValueError"
    assert "raise ValueError" in (outcome.failure.traceback or "")
    assert outcome.end.failed_step == "charge"


async def test_raise_on_failure() -> None:
    with pytest.raises(RunFailed) as info:
        await order_pipe().execute({"total": 500}, raise_on_failure=True)
    message = str(info.value)
    assert "'orders'" in message and "'charge'" in message
    assert "ValueError: card declined" in message
    assert info.value.outcome.failure is not None
    assert info.value.outcome.run_id is not None and info.value.outcome.run_id in message


async def test_a_timeout_is_not_a_success() -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="slow")

    @pipe.step
    async def wait(state: dict[str, Any]) -> None:
        await asyncio.sleep(5)

    outcome = await pipe.execute({}, timeout=0.05)
    assert outcome.status is PipelineTerminalStatus.TIMEOUT and outcome.failure is None
    with pytest.raises(RunFailed, match="ended timeout"):
        outcome.raise_for_status()


async def test_a_definition_error_is_raised_as_run_raises_it() -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict)
    pipe.step("a", to="missing")(lambda state: None)
    with pytest.raises(DefinitionError, match="targets unknown step 'missing'"):
        await pipe.execute({})


async def test_resume_arguments_need_resume() -> None:
    with pytest.raises(ValueError, match="resume=<run id>"):
        await order_pipe().execute({}, value="yes")


def test_execute_sync_runs_a_script() -> None:
    state: dict[str, Any] = {}
    outcome = order_pipe().execute_sync(state)
    assert outcome.ok and state["charged"] is True


def test_execute_sync_raises_on_failure() -> None:
    with pytest.raises(RunFailed, match="card declined"):
        order_pipe().execute_sync({"total": 500}, raise_on_failure=True)


async def test_execute_sync_refuses_a_running_loop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        with pytest.raises(RuntimeError, match=r"await pipe\.execute"):
            order_pipe().execute_sync({})


# --------------------------------------------------------------------------- durable runs


def review_pipe() -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="review", durable=True)

    @pipe.step(to="publish")
    async def review(state: dict[str, Any]) -> Suspend:
        state["draft"] = "text"
        return Suspend("a human must approve")

    @pipe.step
    async def publish(state: dict[str, Any]) -> None:
        state["approved"] = resume_value() == "yes"

    return pipe


def test_a_suspended_durable_run_then_its_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    first = review_pipe().execute_sync({})
    assert first.ok and first.suspended and first.run_id is not None
    assert "approved" not in first.state

    later = review_pipe()  # another process would build its own Pipe
    second = later.execute_sync(resume=first.run_id, value="yes")
    assert second.ok and not second.suspended
    assert second.run_id == first.run_id
    assert second.state == {"draft": "text", "approved": True}  # from the checkpoint


def test_resume_takes_no_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    with pytest.raises(ValueError, match="state of its checkpoint"):
        review_pipe().execute_sync({"x": 1}, resume="0123")
