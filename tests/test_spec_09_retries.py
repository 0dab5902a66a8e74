"""Automatic retries via tenacity (`retries=`, spec §9.9) and `Retry()` caps (§3 max_retries)."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import collect, end_data, of_type, pairs
from justpipe import EventType, Pipe
from justpipe.types import PipelineTerminalStatus, StepContext

FAST = {"retry_wait_min": 0, "retry_wait_max": 0}


def flaky(failures: int, **options: Any) -> tuple[Pipe[Any, Any], list[int]]:
    calls: list[int] = []
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step("step", **options)
    async def step(s: Any) -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise ConnectionError(f"attempt {len(calls)} failed")

    return pipe, calls


@pytest.mark.parametrize(
    ("failures", "retries", "calls", "ok"),
    [
        (0, 2, 1, True),
        (1, 2, 2, True),
        (2, 2, 3, True),
        (3, 2, 3, False),
        (5, 0, 1, False),
    ],
)
async def test_int_retries_make_up_to_retries_plus_one_calls(
    failures: int, retries: int, calls: int, ok: bool
) -> None:
    pipe, made = flaky(failures, retries=retries, **FAST)
    events = await collect(pipe)
    assert len(made) == calls
    status = end_data(events).status
    assert status is (PipelineTerminalStatus.SUCCESS if ok else PipelineTerminalStatus.FAILED)


async def test_retries_happen_inside_one_invocation() -> None:
    pipe, made = flaky(2, retries=3, **FAST)
    events = await collect(pipe)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "step"),
        ("step_end", "step"),
        ("finish", "system"),
    ]
    assert len(made) == 3


async def test_exhausted_retries_report_the_last_error() -> None:
    pipe, _ = flaky(10, retries=2, **FAST)
    events = await collect(pipe)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.payload == "attempt 3 failed"


async def test_dict_retries_are_tenacity_arguments() -> None:
    import tenacity

    pipe, made = flaky(
        10, retries={"stop": tenacity.stop_after_attempt(4), "wait": tenacity.wait_none()}
    )
    events = await collect(pipe)
    assert len(made) == 4
    assert of_type(events, EventType.STEP_ERROR)[0].payload == "attempt 4 failed"


async def test_retries_wrap_map_workers_per_item() -> None:
    seen: dict[int, int] = {}
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work")(lambda s: [1, 2])

    @pipe.step(retries=1, retry_wait_min=0, retry_wait_max=0)
    async def work(s: Any, item: int) -> None:
        seen[item] = seen.get(item, 0) + 1
        if seen[item] == 1:
            raise ValueError("first try")

    events = await collect(pipe)
    assert seen == {1: 2, 2: 2}
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_missing_tenacity_warns_and_runs_without_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import justpipe.middleware

    monkeypatch.setattr(justpipe.middleware, "HAS_TENACITY", False)
    pipe, made = flaky(1, retries=3)
    with pytest.warns(UserWarning, match="requested retries, but 'tenacity' not installed"):
        events = await collect(pipe)
    assert len(made) == 1
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_retry_middleware_reads_retries_from_the_step_context() -> None:
    from justpipe.middleware import tenacity_retry_middleware

    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise ValueError("x")
        return "ok"

    wrapped = tenacity_retry_middleware(fn, StepContext("s", dict(FAST), "P", retries=1))
    assert await wrapped() == "ok"
    assert len(calls) == 2
    assert tenacity_retry_middleware(fn, StepContext("s", {}, "P")) is fn
    via_kwargs = tenacity_retry_middleware(fn, StepContext("s", {"retries": 2, **FAST}, "P"))
    assert via_kwargs is not fn


# --------------------------------------------------------------------------- Retry() cap (B4)


async def test_retry_cap_emits_a_step_error_and_fails_the_run() -> None:
    from justpipe import Retry

    pipe: Pipe[Any, Any] = Pipe(max_retries=2)

    @pipe.step(to="after")
    async def again(s: Any) -> Any:
        return Retry()

    pipe.step("after")(lambda s: s.update(after=True))
    state: dict[str, Any] = {}
    with pytest.warns(UserWarning, match=r"exceeded max retries \(2\)"):
        events = await collect(pipe, state)
    starts = [e for e in of_type(events, EventType.STEP_START) if e.stage == "again"]
    assert [e.attempt for e in starts] == [1, 2]
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "again"
    assert error.invocation_id == starts[-1].invocation_id
    data = end_data(events)
    assert (data.status, data.failed_step) == (PipelineTerminalStatus.FAILED, "again")
