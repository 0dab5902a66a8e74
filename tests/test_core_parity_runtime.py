"""Differential tests for the runtime twins: the control channel and the metrics recorder.

Random operation sequences run against the compiled and the pure twin side by side and
must give the same observable results (return values, lengths, depth, metrics snapshot).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
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


# --------------------------------------------------------------------------- eager start

EAGER_CORE_ONLY = pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="the eager-start core is 3.11's (3.12+ starts tasks with asyncio's eager_start)",
)

# a scripted coroutine: each action is one of
#   ("sleep0",)          a bare yield to the loop
#   ("future", v)        wait on a future the loop resolves with v one iteration later
#   ("check",)           record whether current_task() is the task running us
#   ("return", v) / ("raise", v)   end
eager_actions = st.lists(
    st.one_of(
        st.tuples(st.just("sleep0")),
        st.tuples(st.just("future"), st.integers(0, 9)),
        st.tuples(st.just("check")),
    ),
    max_size=6,
).flatmap(
    lambda body: st.tuples(
        st.just(body),
        st.one_of(
            st.tuples(st.just("return"), st.integers(0, 9)),
            st.tuples(st.just("raise"), st.integers(0, 9)),
        ),
    )
)


def _drive_eager(start_eagerly: Any, script: Any, cancel_after: int | None) -> tuple[Any, Any]:
    """Run the script through `start_eagerly`: (what the coroutine saw, what its caller saw)."""
    body, end = script
    inside: list[Any] = []
    outside: list[Any] = []

    async def scripted() -> int:
        me = asyncio.current_task()
        try:
            for action in body:
                inside.append(action[0])
                if action[0] == "sleep0":
                    await asyncio.sleep(0)
                elif action[0] == "future":
                    future = asyncio.get_running_loop().create_future()
                    asyncio.get_running_loop().call_soon(future.set_result, action[1])
                    inside.append(("got", await future))
                else:
                    inside.append(("is own task", asyncio.current_task() is me is not None))
        except asyncio.CancelledError:
            inside.append("cancelled inside")
            raise
        if end[0] == "raise":
            raise ValueError(end[1])
        return int(end[1])

    async def run() -> None:
        outer = asyncio.current_task()
        task = start_eagerly(asyncio.get_running_loop(), scripted())
        outside.append(("caller is current again", asyncio.current_task() is outer))
        if cancel_after is not None:
            for _ in range(cancel_after):
                await asyncio.sleep(0)
            task.cancel()
        try:
            outside.append(("result", await task))
        except asyncio.CancelledError:
            outside.append(("cancelled", task.cancelled()))
        except ValueError as exc:
            outside.append(("raised", str(exc)))

    asyncio.run(run())
    return inside, outside


@EAGER_CORE_ONLY
@PARITY
@given(script=eager_actions, cancel_after=st.one_of(st.none(), st.integers(0, 4)))
def test_eager_start_twins_agree(twins: Twins, script: Any, cancel_after: int | None) -> None:
    compiled, pure = twins
    assert _drive_eager(compiled.start_eagerly, script, cancel_after) == _drive_eager(
        pure.start_eagerly, script, cancel_after
    )


@EAGER_CORE_ONLY
@PARITY
@given(script=eager_actions)
def test_eager_start_ends_as_a_plain_task_would(twins: Twins, script: Any) -> None:
    """Without cancellation, the outcome and what the coroutine saw match `create_task`."""

    def plain(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
        return loop.create_task(coro)

    expected = _drive_eager(plain, script, None)
    for ns in twins:
        assert _drive_eager(ns.start_eagerly, script, None) == expected


def _first_step_runs_before_returning(start_eagerly: Any) -> None:
    steps: list[str] = []

    async def coro() -> None:
        steps.append("first step")
        await asyncio.sleep(0)
        steps.append("second step")

    async def run() -> None:
        task = start_eagerly(asyncio.get_running_loop(), coro())
        assert steps == ["first step"]
        assert not task.done()
        await task
        assert steps == ["first step", "second step"]

    asyncio.run(run())


@EAGER_CORE_ONLY
def test_eager_start_runs_the_first_step_before_returning(twins: Twins) -> None:
    for ns in twins:
        _first_step_runs_before_returning(ns.start_eagerly)


def _finished_on_return(start_eagerly: Any) -> None:
    async def returns() -> str:
        return "value"

    async def raises() -> None:
        raise ValueError("boom")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        complaints: list[Any] = []
        loop.set_exception_handler(lambda _loop, context: complaints.append(context))
        done = start_eagerly(loop, returns())
        assert done.done() and done.result() == "value"
        failed = start_eagerly(loop, raises())
        assert failed.done()
        assert isinstance(failed.exception(), ValueError)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # the queued first steps were not run a second time ("_step(): already done")
        assert complaints == []

    asyncio.run(run())


@EAGER_CORE_ONLY
def test_eager_start_finishes_a_task_whose_first_step_ended(twins: Twins) -> None:
    """On asyncio's own loop the task is done on return (like a 3.12 eager task)."""
    for ns in twins:
        _finished_on_return(ns.start_eagerly)


def _honours_task_factory(start_eagerly: Any) -> None:
    made: list[Any] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    async def coro() -> str:
        await asyncio.sleep(0)
        return "done"

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        try:
            task = start_eagerly(loop, coro())
            assert made == [task]
            assert await task == "done"
        finally:
            loop.set_task_factory(None)

    asyncio.run(run())


@EAGER_CORE_ONLY
def test_eager_start_honours_a_task_factory(twins: Twins) -> None:
    for ns in twins:
        _honours_task_factory(ns.start_eagerly)


# --------------------------------------------------------------------------- dispatcher

record_kinds = st.lists(
    st.one_of(
        st.tuples(st.just("event"), event_types, stages),
        st.tuples(st.just("done"), st.integers(0, 9)),
        st.tuples(st.just("forward"), event_types, stages),
        st.tuples(st.just("start")),
        st.tuples(st.just("finish")),
    ),
    max_size=30,
)


def _drive_dispatcher(ns: SimpleNamespace, kinds: list[Any], hooks: bool) -> list[Any]:
    async def run() -> list[Any]:
        channel = ns.ControlChannel(0)
        factory = ns.EventFactory(Event, "run")
        metrics = ns.MetricsRecorder()
        seen: list[Any] = []
        child = Event(EventType.STEP_END, "c", run_id="child", seq=4)
        for kind in kinds:
            if kind[0] == "event":
                channel.put_nowait(
                    (kind[1], kind[2], None, 1.0, NodeKind.STEP, "r:1", None, None, 1, (), None)
                )
            elif kind[0] == "done":
                channel.put_nowait(("inv", kind[1], None))
            elif kind[0] == "forward":
                channel.put_nowait((child, "sub:" + kind[2], "p", "o", ("sub",)))
            elif kind[0] == "start":
                channel.put_nowait(())
            else:
                channel.put_nowait((None,))

        def hook(event: Event) -> Event:
            seen.append(("hook", event.seq))
            return event

        dispatcher = ns.Dispatcher(
            channel,
            factory,
            hook if hooks else None,
            metrics.record,
            lambda event: seen.append(("notable", event.type)),
            lambda record: seen.append(("complete", record[1])),
        )
        while (item := dispatcher.next()) is not None:
            if isinstance(item, int):
                seen.append(("code", item))
            else:
                seen.append(("event", item.type, item.stage, item.seq, item.run_id))
        seen.append(("empty again", dispatcher.next()))
        return seen

    return asyncio.run(run())


@PARITY
@given(kinds=record_kinds, hooks=st.booleans())
def test_dispatcher_twins_agree(twins: Twins, kinds: list[Any], hooks: bool) -> None:
    compiled, pure = twins
    assert _drive_dispatcher(compiled, kinds, hooks) == _drive_dispatcher(pure, kinds, hooks)


def test_dispatcher_codes_are_the_same_in_both_twins(twins: Twins) -> None:
    # `twins` skips this where the compiled core is missing, and fails it under CI
    from justpipe._core import _dispatch as compiled
    from justpipe._core import _dispatch_py as pure

    assert (compiled.START, compiled.FINISH) == (pure.START, pure.FINISH)


# --------------------------------------------------------------------------- record builder


@PARITY
@given(
    values=st.tuples(
        st.integers(0, 10**6),
        st.floats(allow_nan=False),
        st.floats(allow_nan=False),
        st.floats(allow_nan=False),
    )
)
def test_record_builder_twins_build_what_the_constructor_builds(
    twins: Twins, values: tuple[Any, ...]
) -> None:
    from justpipe.types import StepTiming

    expected = StepTiming(*values)
    for ns in twins:
        built = ns.RecordBuilder(StepTiming)(*values)
        assert built == expected
        assert repr(built) == repr(expected)
        assert built.__dict__ == expected.__dict__
        assert dataclasses.asdict(built) == dataclasses.asdict(expected)
        assert dataclasses.replace(built, count=1) == dataclasses.replace(expected, count=1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            built.count = 2  # type: ignore[misc]


def test_record_builder_refuses_what_it_cannot_build(twins: Twins) -> None:
    from justpipe.types import PipelineEndData, StepTiming

    @dataclasses.dataclass(frozen=True)
    class WithPostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        x: int

    for ns in twins:
        for cls in (WithPostInit, Slotted, int):
            with pytest.raises(TypeError):
                ns.RecordBuilder(cls)
        with pytest.raises(TypeError, match="needs 4 values"):
            ns.RecordBuilder(StepTiming)(1, 2.0)
        assert ns.RecordBuilder(PipelineEndData) is not None
