"""The testing harness: TestPipe mocks and TestResult queries (spec §14)."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import pytest

from helpers import run_with_watchdog
from justpipe import EventType, Pipe, Skip, TestPipe, TestResult
from justpipe.types import PipelineTerminalStatus, StepContext


def order_pipe() -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="orders")

    @pipe.step(to="charge")
    async def load(state: dict[str, Any]) -> None:
        state["loaded"] = True

    @pipe.step(to="notify")
    async def charge(state: dict[str, Any]) -> None:
        state["charged"] = True

    @pipe.step
    async def notify(state: dict[str, Any]) -> Any:
        yield "sent"

    return pipe


async def run(tester: TestPipe[Any, Any], state: Any = None, **kwargs: Any) -> TestResult[Any]:
    return await run_with_watchdog(tester.run({} if state is None else state, **kwargs))


# --------------------------------------------------------------------------- TestResult


async def test_result_collects_every_event_and_the_final_state() -> None:
    tester: TestPipe[Any, Any] = TestPipe(order_pipe())
    state: dict[str, Any] = {}
    result = await run(tester, state)
    assert result.final_state is state
    assert state == {"loaded": True, "charged": True}
    assert result.events[0].type is EventType.START
    assert result.events[-1].type is EventType.FINISH
    assert result.step_starts == ["load", "charge", "notify"]
    assert result.tokens == ["sent"]
    assert [e.stage for e in result.filter(EventType.STEP_END)] == ["load", "charge", "notify"]


async def test_was_called_checks_any_event_stage() -> None:
    result = await run(TestPipe(order_pipe()))
    assert result.was_called("load")
    assert result.was_called("system")
    assert not result.was_called("refund")


async def test_find_error_returns_the_first_error_text() -> None:
    pipe = order_pipe()
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    tester.mock("charge", side_effect=RuntimeError("card declined"))
    result = await run(tester)
    assert result.find_error() == "card declined"
    assert result.find_error("charge") == "card declined"
    assert result.find_error("load") is None


async def test_find_error_is_none_without_errors() -> None:
    assert (await run(TestPipe(order_pipe()))).find_error() is None


def test_test_result_is_a_plain_dataclass() -> None:
    result: TestResult[Any] = TestResult(events=[], final_state="s")
    assert result.step_starts == []
    assert result.tokens == []
    assert result.find_error() is None
    assert TestPipe.__test__ is False


async def test_final_state_ignores_forwarded_child_step_ends() -> None:
    child: Pipe[Any, Any] = Pipe(name="child")
    child.step("inner")(lambda s: None)
    pipe: Pipe[Any, Any] = Pipe()
    pipe.sub("sb", pipeline=child)(lambda s: {"child": True})
    state: dict[str, Any] = {"parent": True}
    result = await run(TestPipe(pipe), state)
    assert result.final_state is state


# --------------------------------------------------------------------------- mock


async def test_mock_replaces_the_step_and_receives_injected_kwargs() -> None:
    tester: TestPipe[Any, Any] = TestPipe(order_pipe())
    mock = tester.mock("charge")
    state: dict[str, Any] = {}
    result = await run(tester, state)
    mock.assert_awaited_once()
    assert mock.call_args.kwargs["state"] is state
    assert state == {"loaded": True}
    assert result.step_starts == ["load", "charge", "notify"]


async def test_mock_return_value_is_processed_like_a_step_result() -> None:
    tester: TestPipe[Any, Any] = TestPipe(order_pipe())
    tester.mock("load", return_value=Skip())
    result = await run(tester)
    assert result.step_starts == ["load"]


async def test_mock_return_value_can_route() -> None:
    tester: TestPipe[Any, Any] = TestPipe(order_pipe())
    tester.mock("load", return_value="notify")
    result = await run(tester)
    assert result.step_starts == ["load", "notify"]


async def test_mock_side_effect_async_generator_streams_tokens() -> None:
    tester: TestPipe[Any, Any] = TestPipe(order_pipe())

    async def fake_stream(**kwargs: Any) -> Any:
        yield "fake-1"
        yield "fake-2"

    tester.mock("notify", side_effect=fake_stream)
    result = await run(tester)
    assert result.tokens == ["fake-1", "fake-2"]


async def test_mock_with_streaming_side_effect_leaves_no_unawaited_coroutine() -> None:
    tester: TestPipe[Any, Any] = TestPipe(order_pipe())

    async def fake_stream(**kwargs: Any) -> Any:
        yield "fake"

    mock = tester.mock("notify", side_effect=fake_stream)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await run(tester)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert mock.call_count == 1


async def test_unknown_step_mock_lists_available_steps_and_suggests() -> None:
    tester: TestPipe[Any, Any] = TestPipe(order_pipe())
    with pytest.raises(ValueError, match=r"Step 'chrage' not found\. Available") as info:
        tester.mock("chrage")
    assert "charge" in str(info.value)
    assert "Did you mean 'charge'?" in str(info.value)


async def test_middleware_wraps_mocks_so_retries_apply() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(retries=2, retry_wait_min=0, retry_wait_max=0)
    async def flaky(state: Any) -> None:
        pass

    tester: TestPipe[Any, Any] = TestPipe(pipe)
    mock = tester.mock("flaky", side_effect=[ValueError("1"), ValueError("2"), None])
    result = await run(tester)
    assert mock.await_count == 3
    assert result.find_error() is None


async def test_mocks_see_middleware_context() -> None:
    seen: list[str] = []

    def spy(func: Any, ctx: StepContext) -> Any:
        seen.append(ctx.name)
        return func

    pipe: Pipe[Any, Any] = Pipe(middleware=[spy])
    pipe.step("a")(lambda s: None)
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    await run(tester)
    tester.mock("a")
    await run(tester)
    assert seen == ["a", "a"]


# --------------------------------------------------------------------------- hooks


async def test_mock_startup_replaces_every_startup_hook() -> None:
    calls: list[str] = []
    pipe = order_pipe()
    pipe.on_startup(lambda: calls.append("real-1"))
    pipe.on_startup(lambda: calls.append("real-2"))
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    mock = tester.mock_startup()
    await run(tester)
    assert calls == []
    assert mock.await_count == 2


async def test_mock_startup_side_effect_fails_startup() -> None:
    pipe = order_pipe()
    pipe.on_startup(lambda: None)
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    tester.mock_startup(side_effect=RuntimeError("no db"))
    result = await run(tester)
    assert result.find_error("startup") == "no db"
    finish = result.events[-1].payload
    assert finish.status is PipelineTerminalStatus.FAILED


async def test_mock_on_error_replaces_the_global_handler() -> None:
    handled: list[str] = []
    pipe = order_pipe()
    pipe.on_error(lambda error: handled.append("real"))
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    tester.mock("charge", side_effect=RuntimeError("boom"))
    mock = tester.mock_on_error(return_value=Skip())
    result = await run(tester)
    assert handled == []
    assert isinstance(mock.call_args.kwargs["error"], RuntimeError)
    assert result.step_starts == ["load", "charge"]


def test_mock_on_error_without_a_global_handler_is_an_error() -> None:
    tester: TestPipe[Any, Any] = TestPipe(order_pipe())
    with pytest.raises(ValueError, match="No global error hook registered"):
        tester.mock_on_error()


# --------------------------------------------------------------------------- restore


async def test_restore_puts_the_originals_back() -> None:
    calls: list[str] = []
    pipe = order_pipe()
    pipe.on_startup(lambda: calls.append("startup"))
    pipe.on_error(lambda error: calls.append("on_error"))
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    tester.mock("charge", side_effect=RuntimeError("x"))
    tester.mock_startup()
    tester.mock_on_error()
    await run(tester)
    tester.restore()
    state: dict[str, Any] = {}
    result = await run(tester, state)
    assert state == {"loaded": True, "charged": True}
    assert calls == ["startup"]
    assert result.find_error() is None


async def test_context_manager_restores_on_exit() -> None:
    pipe = order_pipe()
    tester: TestPipe[Any, Any]
    with TestPipe(pipe) as tester:
        tester.mock("load")
        state: dict[str, Any] = {}
        await run(tester, state)
        assert "loaded" not in state
    state = {}
    await run(TestPipe(pipe), state)
    assert state["loaded"] is True


async def test_mocking_twice_keeps_the_real_original() -> None:
    pipe = order_pipe()
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    tester.mock("load")
    tester.mock("load")
    tester.restore()
    state: dict[str, Any] = {}
    await run(tester, state)
    assert state["loaded"] is True


async def test_test_pipe_does_not_copy_the_pipe() -> None:
    pipe = order_pipe()
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    tester.mock("load")
    state: dict[str, Any] = {}
    async for _ in pipe.run(state):
        pass
    assert "loaded" not in state
    tester.restore()


# --------------------------------------------------------------------------- run() arguments


async def test_run_passes_context_start_and_timeout_through() -> None:
    seen: list[Any] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to="b")(lambda s, ctx: seen.append(("a", ctx)))
    pipe.step("b")(lambda s, ctx: seen.append(("b", ctx)))
    tester: TestPipe[Any, Any] = TestPipe(pipe)
    result = await run_with_watchdog(tester.run({}, "CTX", start="b", timeout=5, queue_size=1))
    assert seen == [("b", "CTX")]
    assert result.step_starts == ["b"]
