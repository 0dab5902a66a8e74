"""EventLogger and StreamLogSink (spec §13.2): line layout, level sets, colours, run ends.

The pinned strings were produced by justpipe 0.12.0 on the same inputs.
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import collect, run_with_watchdog
from justpipe import Pipe
from justpipe.observability import EventLogger, LogRecord, ObserverMeta, StreamLogSink
from justpipe.types import Event, EventType, PipelineEndData, PipelineTerminalStatus

META = ObserverMeta("pipe", "run-1", 1000.0)
T0 = 1000.0


def make_logger(
    level: str = "DEBUG", *, colors: bool = False
) -> tuple[EventLogger, list[LogRecord]]:
    records: list[LogRecord] = []
    return EventLogger(level=level, sink=records.append, use_colors=colors), records


async def feed(logger: EventLogger, *events: Event) -> None:
    for event in events:
        await logger.on_event(None, None, META, event)


def ev(kind: EventType, stage: str = "s", payload: Any = None, at: float = T0) -> Event:
    return Event(kind, stage, payload, timestamp=at)


def finish(status: PipelineTerminalStatus, at: float = T0) -> Event:
    return Event(EventType.FINISH, "system", PipelineEndData(status, 0.05), timestamp=at)


# --------------------------------------------------------------------------- layout


async def test_message_is_relative_time_padded_type_and_stage() -> None:
    logger, records = make_logger()
    await feed(
        logger, ev(EventType.START, "system"), ev(EventType.STEP_END, "fetch", at=T0 + 1.2345)
    )
    assert [r.message for r in records] == [
        "[00:00:00.000] START            system",
        "[00:00:01.235] STEP_END         fetch",
    ]


async def test_record_carries_the_raw_event_facts() -> None:
    logger, records = make_logger()
    await feed(logger, ev(EventType.STEP_START, "a", {"k": 1}, at=T0 + 2))
    assert records == [
        LogRecord(
            timestamp=T0 + 2,
            relative_time="00:00:00.000",
            event_type=EventType.STEP_START,
            stage="a",
            payload={"k": 1},
            message="[00:00:00.000] STEP_START       a (k=1)",
        )
    ]


@pytest.mark.parametrize(
    ("payload", "suffix"),
    [
        ({"a": 1, "b": "x"}, " (a=1, b=x)"),
        ({"trace_id": "t", "k": [1, 2]}, " (k=[1, 2])"),
        ({"trace_id": "t"}, ""),
        ({}, ""),
        ({"nested": {"a": 1}}, " (nested={'a': 1})"),
        ({1: 2}, " (1=2)"),
        ("x" * 99, f" ({'x' * 99})"),
        ("x" * 100, ""),
        ("", " ()"),
        (None, ""),
        (42, ""),
        ([1, 2], ""),
        (b"bytes", ""),
        (PipelineEndData(PipelineTerminalStatus.SUCCESS, 1.0), ""),
    ],
)
async def test_payload_details(payload: Any, suffix: str) -> None:
    logger, records = make_logger()
    await feed(logger, ev(EventType.STEP_END, "stg", payload))
    assert records[0].message == "[00:00:00.000] STEP_END         stg" + suffix


@pytest.mark.parametrize(
    ("offset", "shown"),
    [
        (5.0, "00:00:05.000"),
        (0.0015, "00:00:00.001"),
        (59.9994, "00:00:59.999"),
        (3600 * 25 + 61.5, "25:01:01.500"),
        (-1.0, "-1:59:59.000"),
    ],
)
async def test_relative_time_format(offset: float, shown: str) -> None:
    logger, records = make_logger()
    await feed(logger, ev(EventType.START), ev(EventType.STEP_START, at=T0 + offset))
    assert records[1].relative_time == shown
    assert records[1].message.startswith(f"[{shown}] ")


async def test_relative_time_starts_at_first_logged_event_not_first_seen() -> None:
    logger, records = make_logger("WARNING")
    await feed(logger, ev(EventType.START), ev(EventType.STEP_ERROR, "a", "boom", at=T0 + 3))
    assert [r.message for r in records] == ["[00:00:00.000] STEP_ERROR       a (boom)"]


# --------------------------------------------------------------------------- levels

_INFO = {
    EventType.START,
    EventType.FINISH,
    EventType.STEP_START,
    EventType.STEP_END,
    EventType.STEP_ERROR,
    EventType.BARRIER_WAIT,
    EventType.BARRIER_RELEASE,
    EventType.MAP_START,
    EventType.MAP_COMPLETE,
    EventType.SUSPEND,
}


@pytest.mark.parametrize(
    ("level", "logged"),
    [
        ("DEBUG", set(EventType)),
        ("INFO", _INFO),
        ("WARNING", {EventType.STEP_ERROR, EventType.BARRIER_WAIT, EventType.SUSPEND}),
        ("ERROR", {EventType.STEP_ERROR}),
        ("warning", {EventType.STEP_ERROR, EventType.BARRIER_WAIT, EventType.SUSPEND}),
        ("VERBOSE", _INFO),
    ],
)
async def test_level_selects_event_types(level: str, logged: set[EventType]) -> None:
    logger, records = make_logger(level)
    await feed(logger, *(ev(kind) for kind in EventType))
    assert {r.event_type for r in records} == logged


def test_bad_constructor_arguments_are_rejected() -> None:
    with pytest.raises(TypeError, match="level"):
        EventLogger(level=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        EventLogger(sink="stderr")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- colours


async def test_no_escape_codes_without_use_colors() -> None:
    logger, records = make_logger()
    await feed(logger, *(ev(kind, payload="p") for kind in EventType))
    await logger.on_pipeline_end(None, None, META, 1.0)
    await logger.on_pipeline_error(None, None, META, ValueError("x"))
    assert not any("\x1b" in r.message for r in records)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            EventType.START,
            "[\x1b[90m00:00:00.000\x1b[0m] \x1b[1mSTART           \x1b[0m \x1b[1ms\x1b[0m (p)",
        ),
        (
            EventType.STEP_ERROR,
            "[\x1b[90m00:00:00.000\x1b[0m] \x1b[91mSTEP_ERROR      \x1b[0m \x1b[91ms\x1b[0m (p)",
        ),
        (EventType.STEP_END, "[\x1b[90m00:00:00.000\x1b[0m] \x1b[92mSTEP_END        \x1b[0m s (p)"),
        (EventType.TOKEN, "[\x1b[90m00:00:00.000\x1b[0m] TOKEN            s (p)"),
    ],
)
async def test_colours_match_upstream(kind: EventType, message: str) -> None:
    logger, records = make_logger(colors=True)
    await feed(logger, ev(kind, payload="p"))
    assert records[0].message == message


async def test_run_end_lines_are_coloured() -> None:
    logger, records = make_logger(colors=True)
    await logger.on_pipeline_end(None, None, META, 2)
    await logger.on_pipeline_error(None, None, META, ValueError("boom"))
    assert [r.message for r in records] == [
        "\x1b[92mPipeline completed in 2.00s\x1b[0m",
        "\x1b[91mPipeline failed: boom\x1b[0m",
    ]


# --------------------------------------------------------------------------- run end


async def test_pipeline_end_reports_duration() -> None:
    logger, records = make_logger("INFO")
    await feed(logger, ev(EventType.START, "system"))
    await logger.on_pipeline_end(None, None, META, 1.254)
    end = records[-1]
    assert end.message == "Pipeline completed in 1.25s"
    assert (end.event_type, end.stage, end.payload) == (
        EventType.FINISH,
        "system",
        {"duration_s": 1.254},
    )
    assert end.timestamp == pytest.approx(T0 + 1.254)
    assert end.relative_time == "00:00:01.254"


async def test_pipeline_end_is_not_logged_above_info() -> None:
    logger, records = make_logger("WARNING")
    await logger.on_pipeline_end(None, None, META, 1.0)
    assert records == []


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR"])
async def test_pipeline_error_is_logged_at_every_level(level: str) -> None:
    logger, records = make_logger(level)
    await logger.on_pipeline_error(None, None, META, ValueError("boom"))
    assert [(r.message, r.event_type, r.payload) for r in records] == [
        ("Pipeline failed: boom", EventType.STEP_ERROR, {"error": "boom"})
    ]


async def test_run_end_before_any_event_is_stamped_now() -> None:
    logger, records = make_logger()
    await logger.on_pipeline_end(None, None, META, 2.0)
    assert records[0].relative_time == "00:00:00.000"
    assert records[0].timestamp > T0


async def test_start_time_resets_on_each_run() -> None:
    """Deliberate difference (spec §21 B21): upstream kept the first run's start time."""
    logger, records = make_logger()
    await logger.on_pipeline_start(None, None, META)
    await feed(logger, ev(EventType.START, "system", at=T0))
    await logger.on_pipeline_start(None, None, META)
    await feed(logger, ev(EventType.START, "system", at=T0 + 1000))
    assert records[-1].message == "[00:00:00.000] START            system"


async def test_client_close_says_so_instead_of_completed() -> None:
    logger, records = make_logger("INFO")
    await feed(logger, ev(EventType.START, "system"), finish(PipelineTerminalStatus.CLIENT_CLOSED))
    await logger.on_pipeline_end(None, None, META, 0.05)
    assert [r.message for r in records] == [
        "[00:00:00.000] START            system",
        "[00:00:00.000] FINISH           system",
        "Pipeline closed by client after 0.05s",
    ]


async def test_other_terminal_statuses_still_say_completed() -> None:
    logger, records = make_logger("INFO")
    await feed(logger, finish(PipelineTerminalStatus.TIMEOUT))
    await logger.on_pipeline_end(None, None, META, 0.05)
    assert records[-1].message == "Pipeline completed in 0.05s"


async def test_forwarded_child_finish_is_not_the_run_end() -> None:
    logger, records = make_logger("INFO")
    child_finish = Event(
        EventType.FINISH,
        "sub:system",
        PipelineEndData(PipelineTerminalStatus.CLIENT_CLOSED, 0.1),
        timestamp=T0,
        parent_run_id="child-run",
    )
    await feed(logger, child_finish)
    await logger.on_pipeline_end(None, None, META, 0.05)
    assert records[-1].message == "Pipeline completed in 0.05s"


# --------------------------------------------------------------------------- robustness


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def test_payload_that_cannot_be_printed_is_left_out() -> None:
    logger, records = make_logger()
    await feed(logger, ev(EventType.STEP_END, "a", {"bad": _Unprintable()}))
    assert records[0].message == "[00:00:00.000] STEP_END         a"


async def test_odd_duration_and_error_do_not_raise() -> None:
    logger, records = make_logger()
    await logger.on_pipeline_end(None, None, META, None)  # type: ignore[arg-type]
    await logger.on_pipeline_error(None, None, META, _Unprintable())  # type: ignore[arg-type]
    assert records[0].message == "Pipeline completed in Nones"
    assert records[1].message == "Pipeline failed: <unprintable _Unprintable>"


async def test_without_a_sink_nothing_happens() -> None:
    logger = EventLogger(level="DEBUG")
    await logger.on_pipeline_start(None, None, META)
    await feed(logger, ev(EventType.START))
    await logger.on_pipeline_end(None, None, META, 1.0)
    await logger.on_pipeline_error(None, None, META, ValueError("x"))
    assert logger.start_time == T0


# --------------------------------------------------------------------------- sinks


def test_stream_sink_writes_one_line_per_record_and_flushes() -> None:
    class Stream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = Stream()
    sink = StreamLogSink(stream)
    sink(LogRecord(1.0, "00:00:00.000", EventType.START, "s", None, "hello"))
    sink(LogRecord(1.0, "00:00:00.000", EventType.START, "s", None, "world"))
    assert stream.getvalue() == "hello\nworld\n"
    assert stream.flushes == 2


async def test_stderr_sink_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    logger = EventLogger(level="INFO", sink=EventLogger.stderr_sink())
    await feed(logger, ev(EventType.START, "system"))
    await logger.on_pipeline_end(None, None, META, 1.25)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "[00:00:00.000] START            system\nPipeline completed in 1.25s\n"


# --------------------------------------------------------------------------- real runs


def linear_pipe() -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="linear")

    @pipe.step(to="b")
    async def a(state: Any) -> None:
        return None

    @pipe.step()
    async def b(state: Any) -> None:
        return None

    return pipe


async def test_real_run_is_logged_line_by_line() -> None:
    records: list[LogRecord] = []
    pipe = linear_pipe()
    pipe.add_observer(EventLogger(level="INFO", sink=records.append))
    await collect(pipe)
    lines = [r.message for r in records]
    assert lines[0].startswith("[00:00:00.000] ")
    assert [line[15:] for line in lines[:-1]] == [
        "START            system",
        "STEP_START       a",
        "STEP_END         a",
        "STEP_START       b",
        "STEP_END         b",
        "FINISH           system",
    ]
    assert re.fullmatch(r"Pipeline completed in \d+\.\d\ds", lines[-1])


async def test_shared_logger_restarts_its_clock_for_the_next_run() -> None:
    records: list[LogRecord] = []
    pipe = linear_pipe()
    pipe.add_observer(EventLogger(level="INFO", sink=records.append))
    await collect(pipe)
    first_run = len(records)
    await asyncio.sleep(0.02)
    await collect(pipe)
    assert records[first_run].message == "[00:00:00.000] START            system"


async def test_client_close_of_a_real_run_is_logged() -> None:
    records: list[LogRecord] = []
    pipe: Pipe[Any, Any] = Pipe(name="slow")

    @pipe.step()
    async def a(state: Any) -> None:
        await asyncio.sleep(10)

    pipe.add_observer(EventLogger(level="INFO", sink=records.append))
    stream = pipe.run({})

    async def start_then_close() -> None:
        async for event in stream:
            if event.type is EventType.STEP_START:
                break
        await stream.aclose()

    await run_with_watchdog(start_then_close())
    assert re.fullmatch(r"Pipeline closed by client after \d+\.\d\ds", records[-1].message)


# --------------------------------------------------------------------------- any payload

_ODD_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=300)
    | st.binary(max_size=20)
    | st.sampled_from([object(), _Unprintable(), float("nan"), 10**400]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(EventType), payload=_ODD_VALUES)
async def test_no_payload_makes_the_logger_raise(kind: EventType, payload: Any) -> None:
    logger, records = make_logger(colors=True)
    await feed(logger, ev(kind, "stage", payload))
    assert records[0].message.startswith("[\x1b[90m00:00:00.000\x1b[0m] ")
