"""Differential tests for the runtime twins: the control channel and the metrics recorder.

Random operation sequences run against the compiled and the pure twin side by side and
must give the same observable results (return values, lengths, depth, metrics snapshot).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from justpipe.types import Event, EventType, NodeKind

pytestmark = pytest.mark.backend_agnostic

Twins = tuple[SimpleNamespace, SimpleNamespace]
PARITY = settings(deadline=None, max_examples=120)

channel_ops = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(0, 99)),
        st.tuples(st.just("put_nowait"), st.integers(0, 99)),
        st.tuples(st.just("pop")),
        st.tuples(st.just("len")),
        st.tuples(st.just("clear")),
    ),
    max_size=60,
)


def _drive_channel(cls: Any, maxsize: int, ops: list[tuple[Any, ...]]) -> list[Any]:
    async def run() -> list[Any]:
        channel = cls(maxsize)
        seen: list[Any] = []
        for op, *args in ops:
            if op == "offer":
                seen.append(channel.offer((args[0],)))
            elif op == "put_nowait":
                seen.append(channel.put_nowait((args[0],)))
            elif op == "pop":
                seen.append(channel.pop())
            elif op == "len":
                seen.append(len(channel))
            else:
                seen.append(channel.clear())
        seen.append(channel.max_depth)
        return seen

    return asyncio.run(run())


@PARITY
@given(maxsize=st.integers(0, 5), ops=channel_ops)
def test_channel_twins_agree_on_offer_pop_and_depth(
    twins: Twins, maxsize: int, ops: list[tuple[Any, ...]]
) -> None:
    compiled, pure = twins
    assert _drive_channel(compiled.ControlChannel, maxsize, ops) == _drive_channel(
        pure.ControlChannel, maxsize, ops
    )


def _producers_and_consumer(cls: Any, maxsize: int, producers: int, items: int) -> list[Any]:
    """Blocked producers are released in FIFO order; the consumer sees the same sequence."""

    async def run() -> list[Any]:
        channel = cls(maxsize)
        order: list[Any] = []

        async def produce(p: int) -> None:
            for i in range(items):
                await channel.put((p, i))

        tasks = [asyncio.ensure_future(produce(p)) for p in range(producers)]
        while len(order) < producers * items:
            item = channel.pop()
            if item is None:
                await asyncio.sleep(0)
                continue
            order.append(item)
        await asyncio.gather(*tasks)
        return [*order, channel.max_depth]

    return asyncio.run(run())


@PARITY
@given(maxsize=st.integers(1, 6), producers=st.integers(1, 5), items=st.integers(0, 12))
def test_channel_twins_interleave_producers_identically(
    twins: Twins, maxsize: int, producers: int, items: int
) -> None:
    compiled, pure = twins
    assert _producers_and_consumer(
        compiled.ControlChannel, maxsize, producers, items
    ) == _producers_and_consumer(pure.ControlChannel, maxsize, producers, items)


event_types = st.sampled_from(list(EventType))
stages = st.sampled_from(["a", "b", "join", "w[0]"])
invocations = st.sampled_from([None, "r:1", "r:2", "r:3"])


@st.composite
def event_streams(draw: st.DrawFn) -> list[Event]:
    events = []
    for n in range(draw(st.integers(0, 40))):
        meta = draw(
            st.sampled_from([None, {"framework": {"duration_s": 0.25}}, {"framework": "x"}])
        )
        events.append(
            Event(
                type=draw(event_types),
                stage=draw(stages),
                timestamp=float(n),
                invocation_id=draw(invocations),
                node_kind=NodeKind.STEP,
                meta=meta,
            )
        )
    return events


@PARITY
@given(events=event_streams(), workers=st.lists(st.booleans(), max_size=10))
def test_metrics_twins_record_and_snapshot_identically(
    twins: Twins, events: list[Event], workers: list[bool]
) -> None:
    compiled, pure = twins
    results = []
    for recorder in (compiled.MetricsRecorder(), pure.MetricsRecorder()):
        flags = [recorder.record(event) for event in events]
        for entered in workers:
            if entered:
                recorder.worker_entered()
            else:
                recorder.worker_left()
        results.append((flags, recorder.snapshot(3, 4, 5, 6)))
    assert results[0] == results[1]


def test_metrics_record_flags_only_errors_and_cancellations(twins: Twins) -> None:
    for ns in twins:
        recorder = ns.MetricsRecorder()
        flagged = {t for t in EventType if recorder.record(Event(t, "s"))}
        assert flagged == {EventType.STEP_ERROR, EventType.CANCELLED}
