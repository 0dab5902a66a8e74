"""Step and handler return values (spec §9.3) and the error-handling chain (§9.6)."""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

import pytest

from helpers import collect, end_data, of_type, pairs, stages
from justpipe import EventType, Pipe, Raise, Retry, Skip, Stop, Suspend
from justpipe.types import PipelineCancelled, PipelineTerminalStatus, _Next


def chain(result: Any, **options: Any) -> Pipe[Any, Any]:
    """`a -> b`, plus a routable step `c`; `a` returns `result`."""
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b", **options)
    async def a(s: Any) -> Any:
        s.setdefault("ran", []).append("a")
        return result() if callable(result) and not isinstance(result, type) else result

    for name in ("b", "c"):

        async def step(s: Any, name: str = name) -> None:
            s.setdefault("ran", []).append(name)

        pipe.step(name)(step)
    return pipe


async def ran(pipe: Pipe[Any, Any], **run_kwargs: Any) -> tuple[list[str], list[Any]]:
    state: dict[str, Any] = {}
    events = await collect(pipe, state, start="a", **run_kwargs)
    return state.get("ran", []), events


# --------------------------------------------------------------------------- §9.3 return values


async def test_none_continues_with_static_successors() -> None:
    result, _ = await ran(chain(None))
    assert result == ["a", "b"]


@pytest.mark.parametrize("value", ["c", _Next("c")], ids=["str", "_Next"])
async def test_a_step_name_routes_and_suppresses_static_successors(value: Any) -> None:
    result, events = await ran(chain(value))
    assert result == ["a", "c"]
    a_start, c_start = of_type(events, EventType.STEP_START)[:2]
    assert c_start.parent_invocation_id == a_start.invocation_id


async def test_next_with_a_function_target_routes() -> None:
    async def c(s: Any) -> None:
        s.setdefault("ran", []).append("c")

    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(lambda s: _Next(c))
    pipe.step(c)
    state: dict[str, Any] = {}
    await collect(pipe, state, start="a")
    assert state["ran"] == ["c"]


async def test_routing_to_an_unknown_name_fails_the_target_invocation() -> None:
    result, events = await ran(chain("nowhere"))
    assert result == ["a"]
    assert pairs(events)[-3:] == [
        ("step_start", "nowhere"),
        ("step_error", "nowhere"),
        ("finish", "system"),
    ]
    error = of_type(events, EventType.STEP_ERROR)[0]
    assert error.payload.startswith("Step 'nowhere' not found. Registered steps:")
    assert end_data(events).failed_step == "nowhere"


@pytest.mark.parametrize("value", [Stop, Stop()], ids=["class", "instance"])
async def test_stop_ends_the_run_after_the_step_end(value: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, events = await ran(chain(value))
    assert result == ["a"]
    assert pairs(events)[-2:] == [("step_end", "a"), ("finish", "system")]


async def test_suspend_emits_suspend_then_step_end_and_succeeds() -> None:
    result, events = await ran(chain(Suspend("approval")))
    assert result == ["a"]
    assert pairs(events)[-3:] == [("suspend", "a"), ("step_end", "a"), ("finish", "system")]
    assert of_type(events, EventType.SUSPEND)[0].payload == "approval"
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_skip_suppresses_successors_but_keeps_the_step_end() -> None:
    result, events = await ran(chain(Skip()))
    assert result == ["a"]
    assert pairs(events)[-2:] == [("step_end", "a"), ("finish", "system")]


async def test_retry_reruns_the_step_with_a_new_attempt() -> None:
    def once() -> Any:
        once.calls += 1  # type: ignore[attr-defined]
        return Retry() if once.calls == 1 else None  # type: ignore[attr-defined]

    once.calls = 0  # type: ignore[attr-defined]
    result, events = await ran(chain(once))
    assert result == ["a", "a", "b"]
    a_starts = [e for e in of_type(events, EventType.STEP_START) if e.stage == "a"]
    assert [e.attempt for e in a_starts] == [1, 2]
    assert a_starts[1].parent_invocation_id == a_starts[0].invocation_id
    a_ends = [e for e in of_type(events, EventType.STEP_END) if e.stage == "a"]
    assert [e.invocation_id for e in a_ends] == [a_starts[1].invocation_id]


@pytest.mark.parametrize(
    "value", [{"k": 1}, [1, 2], 42, object(), print], ids=["dict", "list", "int", "obj", "func"]
)
async def test_other_values_are_ignored_with_a_warning(value: Any) -> None:
    with pytest.warns(UserWarning, match="ignored") as caught:
        result, events = await ran(chain(lambda: value))
    assert result == ["a", "b"]
    text = " ".join(str(w.message) for w in caught)
    assert "'a'" in text
    assert type(value).__name__ in text
    assert "ignored" in text
    assert "mutate state" in text or "yield" in text
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


# --------------------------------------------------------------------------- §9.6 the chain


def failing(handler: Any = None, exc: Exception | None = None) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()
    error = exc or ValueError("boom")

    @pipe.step(to="b", on_error=handler)
    async def a(s: Any) -> None:
        s.setdefault("ran", []).append("a")
        raise error

    for name in ("b", "c"):

        async def step(s: Any, name: str = name) -> None:
            s.setdefault("ran", []).append(name)

        pipe.step(name)(step)
    return pipe


@pytest.mark.parametrize(
    ("handler_result", "expected"),
    [(None, ["a", "b"]), (Skip(), ["a"]), ("c", ["a", "c"])],
    ids=["none", "skip", "route"],
)
async def test_local_handler_result_acts_as_the_step_result(
    handler_result: Any, expected: list[str]
) -> None:
    result, events = await ran(failing(lambda: handler_result))
    assert result == expected
    assert of_type(events, EventType.STEP_ERROR) == []
    assert ("step_end", "a") in pairs(events)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_handled_step_end_meta_says_error() -> None:
    _, events = await ran(failing(lambda: None))
    a_end = next(e for e in events if e.type is EventType.STEP_END and e.stage == "a")
    assert a_end.meta is not None
    assert a_end.meta["framework"]["status"] == "error"


@pytest.mark.parametrize("flavour", ["sync", "async", "sync-awaitable"])
async def test_handler_flavours(flavour: str) -> None:
    async def async_handler() -> str:
        return "c"

    handler: Any = {
        "sync": lambda: "c",
        "async": async_handler,
        "sync-awaitable": lambda: async_handler(),
    }[flavour]
    result, _ = await ran(failing(handler))
    assert result == ["a", "c"]


async def test_handler_raising_passes_the_new_error_to_the_global_handler() -> None:
    seen: list[BaseException] = []
    original = ValueError("boom")

    def local(error: Exception) -> None:
        raise RuntimeError("handler crashed")

    pipe = failing(local, original)

    @pipe.on_error
    def global_handler(error: Exception) -> None:
        seen.append(error)

    result, events = await ran(pipe)
    (error,) = seen
    assert str(error) == "handler crashed"
    assert error.__cause__ is original
    assert result == ["a", "b"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_handler_crash_without_a_global_handler_reports_the_handler_error() -> None:
    def local(error: Exception) -> None:
        raise RuntimeError("Handler crashed")

    _, events = await ran(failing(local))
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert (error.stage, error.payload) == ("a", "Handler crashed")


async def test_global_handler_raising_is_final() -> None:
    pipe = failing()

    @pipe.on_error
    def global_handler(error: Exception) -> None:
        raise KeyError("global crashed")

    _, events = await ran(pipe)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.payload == "'global crashed'"
    assert end_data(events).error == "'global crashed'"


async def test_global_handler_result_is_processed() -> None:
    pipe = failing()
    pipe.on_error(lambda: Skip())
    result, events = await ran(pipe)
    assert result == ["a"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_unhandled_error_is_logged_with_the_state(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        await ran(failing())
    (record,) = [r for r in caplog.records if "failed with" in r.getMessage()]
    message = record.getMessage()
    assert "Step 'a' failed with ValueError: boom" in message
    assert "State: {'ran': ['a']}" in message
    assert record.exc_info is not None


async def test_first_failing_step_is_the_failed_step() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to="b")(lambda s: 1 / 0)

    @pipe.step
    async def b(s: Any) -> None:
        raise ValueError("second")

    events = await collect(pipe)
    data = end_data(events)
    assert data.failed_step == "a"
    assert data.error == "division by zero"
    assert [r.step for r in data.errors] == ["a", "b"]


async def test_successor_of_a_failed_step_still_runs() -> None:
    result, events = await ran(failing())
    assert result == ["a", "b"]
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_handler_raising_pipeline_cancelled_cancels_the_run() -> None:
    def local(error: Exception) -> None:
        raise PipelineCancelled("give up")

    result, events = await ran(failing(local))
    assert result == ["a"]
    (cancelled,) = of_type(events, EventType.CANCELLED)
    assert (cancelled.stage, cancelled.payload) == ("a", "give up")
    assert of_type(events, EventType.STEP_ERROR) == []
    assert end_data(events).status is PipelineTerminalStatus.CANCELLED


async def test_handler_can_swallow_a_step_timeout() -> None:
    seen: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()

    def local(error: Exception) -> None:
        seen.append(type(error).__name__)

    @pipe.step(timeout=0.02, on_error=local)
    async def slow(s: Any) -> None:
        await asyncio.sleep(5)

    events = await collect(pipe)
    assert seen == ["TimeoutError"]  # a plain TimeoutError, as upstream
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_streaming_failure_keeps_the_tokens_already_yielded() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def talk(s: Any) -> Any:
        yield "one"
        yield "two"
        raise RuntimeError("Mid-stream failure")

    events = await collect(pipe)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "talk"),
        ("token", "talk"),
        ("token", "talk"),
        ("step_error", "talk"),
        ("finish", "system"),
    ]
    assert events[4].payload == "Mid-stream failure"


# --------------------------------------------------------------------------- Raise (B3 fixed)


async def test_raise_from_a_handler_reports_that_exception_once() -> None:
    calls: list[int] = []
    replacement = KeyError("replaced")

    def local(error: Exception) -> Any:
        calls.append(1)
        return Raise(replacement)

    _, events = await ran(failing(local))
    assert calls == [1]
    assert [p for p in pairs(events) if p[1] == "a"] == [("step_start", "a"), ("step_error", "a")]
    assert of_type(events, EventType.STEP_ERROR)[0].payload == str(replacement)
    data = end_data(events)
    assert (data.status, data.failed_step) == (PipelineTerminalStatus.FAILED, "a")


async def test_bare_raise_reports_the_original_error() -> None:
    _, events = await ran(failing(lambda: Raise()))
    assert of_type(events, EventType.STEP_ERROR)[0].payload == "boom"
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_raise_returned_by_a_step_fails_that_step() -> None:
    _, events = await ran(chain(Raise(ValueError("asked to fail"))))
    assert of_type(events, EventType.STEP_ERROR)[0].payload == "asked to fail"
    assert ("step_end", "a") not in pairs(events)
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_bare_raise_from_a_step_mentions_raise() -> None:
    _, events = await ran(chain(Raise()))
    assert "Raise()" in of_type(events, EventType.STEP_ERROR)[0].payload


async def test_raise_skips_the_global_handler() -> None:
    seen: list[str] = []
    pipe = failing(lambda: Raise(KeyError("x")))
    pipe.on_error(lambda error: seen.append(str(error)))
    _, events = await ran(pipe)
    assert seen == []
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_stages_of_error_events_name_the_invocation() -> None:
    _, events = await ran(failing())
    assert stages(events, EventType.STEP_ERROR) == ["a"]
    start = of_type(events, EventType.STEP_START)[0]
    error = of_type(events, EventType.STEP_ERROR)[0]
    assert error.invocation_id == start.invocation_id


# --------------------------------------------------------------------------- §9.12 resume


async def test_suspended_run_resumes_with_the_same_state_and_start() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="approve")
    async def draft(s: Any) -> Any:
        s["draft"] = True
        return Suspend("needs approval")

    @pipe.step(to="publish")
    async def approve(s: Any) -> None:
        s["approved"] = True

    @pipe.step
    async def publish(s: Any) -> None:
        s["published"] = True

    state: dict[str, Any] = {}
    first = await collect(pipe, state)
    assert state == {"draft": True}
    assert end_data(first).status is PipelineTerminalStatus.SUCCESS
    second = await collect(pipe, state, start=approve)
    assert state == {"draft": True, "approved": True, "published": True}
    assert stages(second, EventType.STEP_START) == ["approve", "publish"]
    assert second[0].payload is state


async def test_a_step_routing_to_itself_gets_one_step_end_per_invocation() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def a(s: Any) -> Any:
        s["n"] = s.get("n", 0) + 1
        return "a" if s["n"] < 3 else None

    events = await collect(pipe)
    assert [(t, s) for t, s in pairs(events) if s == "a"] == [
        ("step_start", "a"),
        ("step_end", "a"),
    ] * 3
    assert [e.attempt for e in of_type(events, EventType.STEP_START)] == [1, 2, 3]
