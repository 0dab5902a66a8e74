"""What justpipe logs, where, and how to keep a run's state out of it (issue 20, defect 7).

Failures go to children of the ``justpipe`` logger (``justpipe.kernel`` for steps and
observers), keeping 0.12's message text, which tests read through caplog;
`justpipe.logs.HideState` drops the state from them. `simple_logging_middleware`
calls `Logger.debug` on every call, as 0.12 did, so code that patches it sees each one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest.mock import patch

import pytest

from helpers import collect, end_data
from justpipe import Pipe, simple_logging_middleware
from justpipe.logs import KERNEL, HideState
from justpipe.observability import Observer
from justpipe.types import PipelineTerminalStatus


def failing_pipe(state_secret: str = "hunter2") -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="logged")

    @pipe.step
    async def charge(state: dict[str, Any]) -> None:
        raise ValueError("card declined")

    return pipe


def failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "failed with" in r.getMessage()]


@pytest.fixture
def hidden() -> Iterator[HideState]:
    kernel = logging.getLogger(KERNEL)
    hide = HideState()
    kernel.addFilter(hide)
    yield hide
    kernel.removeFilter(hide)


async def test_a_step_failure_is_logged_on_justpipe_kernel_with_0_12s_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="justpipe"):
        events = await collect(failing_pipe(), {"card": "hunter2"})
    assert end_data(events).status is PipelineTerminalStatus.FAILED
    (record,) = failure_records(caplog)
    assert record.name == "justpipe.kernel"
    message = record.getMessage()
    assert "Step 'charge' failed with ValueError: card declined" in message
    assert "State: {'card': 'hunter2'}" in message
    assert record.exc_info is not None and record.exc_info[1] is not None
    assert (record.step_name, record.error_type, record.state_type) == (  # type: ignore[attr-defined]
        "charge",
        "ValueError",
        "dict",
    )


async def test_the_root_logger_level_alone_still_captures_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As 0.12's tests do it: `caplog.at_level(logging.ERROR)` without a logger name."""
    with caplog.at_level(logging.ERROR):
        await collect(failing_pipe(), {"card": "x"})
    assert len(failure_records(caplog)) == 1


async def test_hide_state_leaves_the_state_out(
    caplog: pytest.LogCaptureFixture, hidden: HideState
) -> None:
    with caplog.at_level(logging.ERROR):
        await collect(failing_pipe(), {"card": "hunter2"})
    (record,) = failure_records(caplog)
    message = record.getMessage()
    assert "Step 'charge' failed with ValueError: card declined" in message
    assert "hunter2" not in message and "State:" not in message
    assert record.exc_info is not None  # the traceback stays


async def test_hide_state_on_a_handler_works_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(HideState())
    try:
        with caplog.at_level(logging.ERROR):
            await collect(failing_pipe(), {"card": "hunter2"})
    finally:
        caplog.handler.filters.clear()
    assert "hunter2" not in caplog.text


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def test_a_state_whose_str_fails_does_not_hide_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipe: Pipe[Any, None] = Pipe(name="unprintable")

    @pipe.step
    async def boom(state: Any) -> None:
        raise KeyError("x")

    with caplog.at_level(logging.ERROR):
        events = await collect(pipe, Unprintable())
    assert end_data(events).failed_step == "boom"
    (record,) = failure_records(caplog)
    assert "Unprintable whose str() raised RuntimeError" in record.getMessage()


class Broken(Observer):
    async def on_event(self, *args: Any) -> None:
        raise RuntimeError("observer bug")


async def test_an_observer_error_is_logged_on_justpipe_kernel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipe: Pipe[Any, None] = Pipe(dict)
    pipe.add_observer(Broken())
    pipe.step("a")(lambda state: None)
    with caplog.at_level(logging.ERROR, logger="justpipe.kernel"):
        await collect(pipe, {})
    records = [r for r in caplog.records if "Observer Broken.on_event error" in r.getMessage()]
    assert records and all(r.name == "justpipe.kernel" for r in records)
    assert records[0].exc_info is not None


# --------------------------------------------------------------------------- the middleware


async def test_simple_logging_middleware_calls_logger_debug_at_any_level() -> None:
    """0.12's own test patches `logging.Logger.debug` with the level left at WARNING."""
    pipe: Pipe[Any, None] = Pipe(dict)
    pipe.add_middleware(simple_logging_middleware)

    @pipe.step("work")
    async def work(state: Any) -> None:
        pass

    assert not logging.getLogger("justpipe").isEnabledFor(logging.DEBUG)
    with patch("logging.Logger.debug") as debug:
        await collect(pipe, {})
    calls = [c.args[0] for c in debug.call_args_list if c.args]
    assert any(text.startswith("Step 'work' took ") for text in calls), calls


async def test_simple_logging_middleware_times_a_stream(caplog: pytest.LogCaptureFixture) -> None:
    pipe: Pipe[Any, None] = Pipe(dict)
    pipe.add_middleware(simple_logging_middleware)

    @pipe.step("tokens")
    async def tokens(state: Any) -> AsyncIterator[int]:
        yield 1

    with caplog.at_level(logging.DEBUG, logger="justpipe"):
        await collect(pipe, {})
    (record,) = [r for r in caplog.records if r.getMessage().startswith("Step 'tokens' took")]
    assert record.name == "justpipe" and record.args in ((), None)
