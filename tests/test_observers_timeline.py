"""TimelineVisualizer (spec §13.2): recording, ASCII / HTML / Mermaid rendering.

The pinned renderings were produced by justpipe 0.12.0 on the same inputs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from helpers import collect
from justpipe import Pipe
from justpipe.observability import ObserverMeta
from justpipe.observability.timeline import TimelineVisualizer
from justpipe.types import Event, EventType, PipelineEndData, PipelineTerminalStatus

S, E, X = EventType.STEP_START, EventType.STEP_END, EventType.STEP_ERROR
T = 1000.0
META = ObserverMeta("mypipe", "run-1", T)

Row = tuple[EventType, str, float]

BASIC: list[Row] = [
    (EventType.START, "system", T),
    (S, "a", T),
    (E, "a", T + 0.5),
    (S, "b", T + 0.5),
    (S, "c", T + 0.6),
    (EventType.BARRIER_WAIT, "d", T + 0.7),
    (X, "c", T + 1.0),
    (E, "b", T + 2.5),
    (EventType.BARRIER_RELEASE, "d", T + 2.5),
    (S, "d", T + 2.5),
    (EventType.TOKEN, "d", T + 2.6),
    (E, "d", T + 3.0),
    (EventType.FINISH, "system", T + 3.0),
]


def timeline(
    rows: list[Row], start: float | None = T, end: float | None = None, width: int = 80
) -> TimelineVisualizer:
    viz = TimelineVisualizer(width=width)
    for kind, stage, at in rows:
        viz.process_event(kind, stage, at)
    viz.pipeline_start = start
    viz.pipeline_end = end
    return viz


def bars(ascii_chart: str) -> dict[str, tuple[int, int]]:
    """Row name -> (bar offset, bar length) for each chart row."""
    found = {}
    for line in ascii_chart.split("\n"):
        if "\u2588" in line:
            first = line.index("\u2588")
            found[line[:28].rstrip()] = (first - 29, line.count("\u2588"))
    return found


# --------------------------------------------------------------------------- recording


def test_only_step_and_barrier_events_are_recorded() -> None:
    viz = timeline(BASIC)
    assert [(e.event_type, e.stage) for e in viz.events] == [
        (S, "a"),
        (E, "a"),
        (S, "b"),
        (S, "c"),
        (EventType.BARRIER_WAIT, "d"),
        (X, "c"),
        (E, "b"),
        (EventType.BARRIER_RELEASE, "d"),
        (S, "d"),
        (E, "d"),
    ]
    assert [e.duration for e in viz.events if e.event_type is E] == [0.5, 2.0, 0.5]
    assert viz.step_end_times == {"a": T + 0.5, "b": T + 2.5, "d": T + 3.0}


def test_step_end_without_a_recorded_start_is_ignored() -> None:
    viz = timeline([(E, "a", T + 1)])
    assert viz.events == []
    assert viz.render_ascii() == "No events to display"


async def test_pipeline_start_resets_the_recording() -> None:
    viz = timeline(BASIC, start=1.0, end=2.0)
    before = time.time()
    await viz.on_pipeline_start(None, None, META)
    assert (viz.events, viz.step_start_times, viz.step_end_times) == ([], {}, {})
    assert viz.pipeline_name == "mypipe"
    assert viz.pipeline_start is not None
    assert viz.pipeline_start >= before
    assert viz.pipeline_end is None


async def test_observed_events_are_timed_and_the_end_stamped() -> None:
    viz = TimelineVisualizer()
    await viz.on_pipeline_start(None, None, META)
    now = time.time()
    await viz.on_event(None, None, META, Event(S, "a", None, timestamp=now, invocation_id="r:1"))
    await viz.on_event(
        None, None, META, Event(E, "a", None, timestamp=now + 0.1, invocation_id="r:1")
    )
    await viz.on_pipeline_end(None, None, META, 0.1)
    assert viz.pipeline_start is not None
    assert viz.pipeline_end is not None
    assert viz.pipeline_end >= viz.pipeline_start
    assert [e.duration for e in viz.events] == [None, pytest.approx(0.1)]


async def test_pipeline_error_also_stamps_the_end() -> None:
    viz = TimelineVisualizer()
    await viz.on_pipeline_start(None, None, META)
    await viz.on_pipeline_error(None, None, META, ValueError("x"))
    assert viz.pipeline_end is not None


async def test_client_closed_run_renders_what_finished() -> None:
    viz = TimelineVisualizer()
    await viz.on_pipeline_start(None, None, META)
    now = time.time()
    for event in (
        Event(S, "a", None, timestamp=now, invocation_id="r:1"),
        Event(E, "a", None, timestamp=now + 0.01, invocation_id="r:1"),
        Event(S, "b", None, timestamp=now + 0.01, invocation_id="r:2"),
        Event(
            EventType.FINISH,
            "system",
            PipelineEndData(PipelineTerminalStatus.CLIENT_CLOSED, 0.02),
            timestamp=now + 0.02,
        ),
    ):
        await viz.on_event(None, None, META, event)
    await viz.on_pipeline_end(None, None, META, 0.02)
    assert list(bars(viz.render_ascii())) == ["a"]


# --------------------------------------------------------------------------- ASCII


def test_ascii_chart_matches_upstream() -> None:
    chart = timeline(BASIC, end=T + 3).render_ascii()
    block = "\u2588"
    assert chart == (
        "\nPipeline - Execution Timeline (3.0s)\n\n"
        + f"a                            {block * 5}                                  500ms\n"
        + f"b                                 {block * 23}            2.0s \u2190 Bottleneck\n"
        + f"c                                   {block * 4}                            400ms\n"
        + f"d                                                         {block * 5}     500ms\n"
        + "\n                            0                         3.0s\n"
    )


def test_empty_timeline_renders_placeholders() -> None:
    viz = TimelineVisualizer()
    assert viz.render_ascii() == "No events to display"
    assert viz.render_html() == "<p>No events to display</p>"
    assert viz.render_mermaid() == "gantt\n    title No events to display"


def test_without_pipeline_times_every_bar_is_one_block_at_the_origin() -> None:
    chart = timeline(BASIC, start=None).render_ascii()
    assert "Execution Timeline (0ms)" in chart
    assert bars(chart) == {"a": (0, 1), "b": (0, 1), "c": (0, 1), "d": (0, 1)}


def test_rows_are_ordered_by_start_time() -> None:
    rows: list[Row] = [(S, "b", T + 2), (S, "a", T + 1), (E, "a", T + 3), (E, "b", T + 4)]
    chart = timeline(rows, end=T + 10).render_ascii()
    assert list(bars(chart)) == ["a", "b"]


def test_bar_length_follows_upstream_rounding() -> None:
    rows: list[Row] = [(S, "a", T + 1), (S, "b", T + 2), (E, "a", T + 3), (E, "b", T + 4)]
    assert bars(timeline(rows, end=T + 10).render_ascii()) == {"a": (3, 6), "b": (7, 7)}


@pytest.mark.parametrize(("width", "bar"), [(100, 55), (60, 15), (46, 1)])
def test_bar_area_is_width_minus_45(width: int, bar: int) -> None:
    chart = timeline([(S, "a", T), (E, "a", T + 2)], end=T + 2, width=width).render_ascii()
    assert bars(chart) == {"a": (0, bar)}


@pytest.mark.parametrize("width", [0, 10, 44, 45])
def test_narrow_widths_do_not_crash(width: int) -> None:
    """Deliberate difference: upstream raised ValueError below 45 columns."""
    chart = timeline([(S, "a", T), (E, "a", T + 2)], end=T + 2, width=width).render_ascii()
    assert bars(chart) == {"a": (0, 1)}


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0004, "0ms"),
        (0.9994, "999ms"),
        (0.9996, "1000ms"),
        (1.0, "1.0s"),
        (59.99, "60.0s"),
        (61, "1.0m"),
        (3601, "1.0h"),
        (100000, "27.8h"),
    ],
)
def test_duration_units(seconds: float, shown: str) -> None:
    chart = timeline([(S, "a", T), (E, "a", T + seconds)], end=T + seconds).render_ascii()
    assert f"Execution Timeline ({shown})" in chart
    assert f" {shown} \u2190 Bottleneck" in chart


@pytest.mark.parametrize(
    ("length", "shown"),
    [(25, "n" * 25), (26, "n" * 22 + "..."), (40, "n" * 22 + "...")],
)
def test_long_names_are_cut(length: int, shown: str) -> None:
    name = "n" * length
    chart = timeline([(S, name, T), (E, name, T + 1)], end=T + 1).render_ascii()
    assert chart.split("\n")[3].startswith(shown.ljust(28) + " ")


def test_max_steps_limits_rows_and_counts_the_rest() -> None:
    rows: list[Row] = []
    for i, duration in enumerate([1, 1, 1, 5]):
        rows += [(S, f"s{i}", T + i), (E, f"s{i}", T + i + duration)]
    chart = timeline(rows, end=T + 10).render_ascii(max_steps=2)
    assert list(bars(chart)) == ["s0", "s1"]
    assert "... and 2 more steps" in chart
    # The bottleneck is chosen among the rows shown, as upstream does.
    assert "1.0s \u2190 Bottleneck" in chart


def test_negative_max_steps_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        timeline(BASIC).render_ascii(max_steps=-1)


def test_every_row_of_the_bottleneck_step_is_tagged() -> None:
    rows: list[Row] = [(S, "a", T), (E, "a", T + 1), (S, "a", T + 2), (E, "a", T + 2.5)]
    chart = timeline(rows, end=T + 3).render_ascii()
    assert chart.count("\u2190 Bottleneck") == 2


# --------------------------------------------------------------------------- invocations


def test_concurrent_workers_without_ids_pair_like_upstream() -> None:
    rows: list[Row] = [(S, "w", T), (S, "w", T + 0.1), (S, "w", T + 0.2)]
    rows += [(E, "w", T + 1.0), (E, "w", T + 1.5), (E, "w", T + 2.0)]
    assert timeline(rows, end=T + 2).render_mermaid().endswith("\n    w: 200, 1000")


def test_concurrent_workers_with_ids_get_one_row_each() -> None:
    """Deliberate difference (spec §21 B21): upstream kept one row, mis-paired."""
    viz = TimelineVisualizer()
    for n, start in ((2, 0.0), (3, 0.1), (4, 0.2)):
        viz.process_event(S, "w", T + start, invocation_id=f"r:{n}")
    for n, end in ((2, 1.0), (3, 1.5), (4, 2.0)):
        viz.process_event(E, "w", T + end, invocation_id=f"r:{n}")
    viz.pipeline_start, viz.pipeline_end = T, T + 2
    assert viz.render_mermaid().split("section Execution\n")[1] == (
        "    w: 0, 1000\n    w: 100, 1500\n    w: 200, 2000"
    )
    assert [e.duration for e in viz.events if e.event_type is E] == pytest.approx([1.0, 1.4, 1.8])


def test_a_failed_invocation_ends_its_own_row() -> None:
    viz = TimelineVisualizer()
    viz.process_event(S, "w", T, invocation_id="r:2")
    viz.process_event(S, "w", T + 0.5, invocation_id="r:3")
    viz.process_event(X, "w", T + 1, invocation_id="r:2")
    viz.process_event(E, "w", T + 2, invocation_id="r:3")
    viz.pipeline_start, viz.pipeline_end = T, T + 2
    assert viz.render_mermaid().endswith("    w: 0, 1000\n    w: 500, 2000")


# --------------------------------------------------------------------------- Mermaid and HTML


def test_mermaid_gantt_matches_upstream() -> None:
    viz = timeline(BASIC, end=T + 3)
    viz.pipeline_name = "mypipe"
    assert viz.render_mermaid() == (
        "gantt\n"
        "    title mypipe Execution Timeline\n"
        "    dateFormat X\n"
        "    axisFormat %S\n"
        "\n"
        "    section Execution\n"
        "    a: 0, 500\n"
        "    b: 500, 2500\n"
        "    c: 600, 1000\n"
        "    d: 2500, 3000"
    )


def test_mermaid_task_names_replace_colons_and_times_truncate() -> None:
    rows: list[Row] = [(S, "sub:step", T + 1.23456), (E, "sub:step", T + 2.34567)]
    assert timeline(rows, end=T + 3).render_mermaid().endswith("\n    sub_step: 1234, 2345")


def test_mermaid_lists_no_tasks_without_a_pipeline_start() -> None:
    assert timeline(BASIC, start=None).render_mermaid().endswith("    section Execution")


def test_html_rows_place_bars_in_percent() -> None:
    page = timeline(BASIC, end=T + 3).render_html()
    assert page.startswith(
        "<!DOCTYPE html>\n<html>\n<head>\n    <title>Pipeline - Timeline</title>"
    )
    assert page.endswith("</body>\n</html>")
    assert '<div class="header">Pipeline - Execution Timeline (3.0s)</div>\n        \n' in page
    assert (
        '                <div class="step-name">b</div>\n'
        '                <div class="step-bar">\n'
        '                    <div class="step-bar-fill bottleneck" '
        'style="left: 16.67%; width: 66.67%;"></div>\n'
        "                </div>\n"
        '                <div class="step-duration">2.0s</div>\n'
    ) in page
    assert 'style="left: 20.00%; width: 13.33%;"' in page
    assert "<span>0s</span>\n            <span>3.0s</span>" in page


def test_html_escapes_names() -> None:
    name = "sub:st<&>\"'"
    viz = timeline([(S, name, T), (E, name, T + 1)], end=T + 1)
    viz.pipeline_name = "P<b>&"
    page = viz.render_html()
    assert "<title>P&lt;b&gt;&amp; - Timeline</title>" in page
    assert '<div class="step-name">sub:st&lt;&amp;&gt;&quot;&#x27;</div>' in page


def test_html_with_zero_duration_has_empty_bars() -> None:
    page = timeline([(S, "a", T), (E, "a", T + 1)], start=None).render_html()
    assert 'style="left: 0.00%; width: 0.00%;"' in page


# --------------------------------------------------------------------------- construction


def test_bad_width_is_rejected() -> None:
    with pytest.raises(TypeError, match="width"):
        TimelineVisualizer(width="80")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width"):
        TimelineVisualizer(width=-1)


# --------------------------------------------------------------------------- real runs


async def test_each_worker_of_a_real_map_gets_its_own_row() -> None:
    delays = {"x": 0.01, "y": 0.03, "z": 0.06}
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

    viz = TimelineVisualizer()
    pipe.add_observer(viz)
    await collect(pipe)
    assert viz.pipeline_name == "mapper"
    tasks = viz.render_mermaid().split("section Execution\n")[1].split("\n")
    assert [task.split(":")[0].strip() for task in tasks] == [
        "fan_out",
        "work",
        "work",
        "work",
        "after",
    ]
    spans = [
        int(end) - int(start)
        for task in tasks[1:4]
        for start, end in [task.split(": ")[1].split(", ")]
    ]
    assert spans[0] < spans[1] < spans[2]
    assert spans[2] >= 55
