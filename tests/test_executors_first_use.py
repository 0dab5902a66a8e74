"""An executor that has not started yet works on first use, on the real engines.

The first call starts the engine (docs/executors.md): a plain step and an unbounded
map wait for one of the executor's `capacity` slots, and the capacity of Dask and Ray
is known only once they run, so the slots must open after the start, not before
(issue 20, defect 1: "DaskExecutor.capacity is known once the executor has started").
Each test builds a fresh, unstarted executor on the session's engine (`engines.py`),
so the engine itself is started once per test session.

Also here: the executors do not import the kernel (one home for the step timeout,
`justpipe._timeouts`).
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import justpipe.executors
from helpers import collect, end_data, of_type
from justpipe import EventType, Pipe
from justpipe.executors import (
    DaskExecutor,
    Executor,
    ProcessExecutor,
    RayExecutor,
    ThreadExecutor,
)
from justpipe.executors.base import CallInfo
from justpipe.types import PipelineTerminalStatus

pytestmark = pytest.mark.backend_agnostic


def triple(item: int) -> int:
    return item * 3


def answer() -> int:
    return 42


def keep(state: dict[str, Any], result: Any, item: Any = None) -> None:
    state.setdefault("results", []).append(result)


@pytest.fixture(params=["thread", "process", "dask", "ray"])
async def fresh(request: pytest.FixtureRequest) -> AsyncIterator[Executor]:
    """A new executor, not started, on the session's engine."""
    executor: Executor
    if request.param == "thread":
        executor = ThreadExecutor(2)
    elif request.param == "process":
        executor = ProcessExecutor(2)
    elif request.param == "dask":
        executor = DaskExecutor(client=request.getfixturevalue("dask_client"))
    else:
        request.getfixturevalue("ray_session")  # Ray runs: the executor uses it
        executor = RayExecutor()
    assert not executor.started
    yield executor
    await executor.aclose()


async def test_a_plain_step_starts_the_executor(fresh: Executor) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="first-use")
    pipe.step("answer", executor=fresh, on_result=keep)(answer)
    events = await collect(pipe, {}, watchdog=120)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS, of_type(
        events, EventType.STEP_ERROR
    )
    assert fresh.started


async def test_an_unbounded_map_starts_the_executor(fresh: Executor) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="first-use-map")

    @pipe.map(each="triple")
    async def items(state: dict[str, Any]) -> list[int]:
        return [1, 2, 3, 4, 5]

    pipe.step("triple", executor=fresh, on_result=keep)(triple)
    state: dict[str, Any] = {}
    events = await collect(pipe, state, watchdog=120)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS, of_type(
        events, EventType.STEP_ERROR
    )
    assert sorted(state["results"]) == [3, 6, 9, 12, 15]


async def test_limiter_before_start_opens_capacity_slots_once_started(fresh: Executor) -> None:
    limiter = fresh.limiter()
    assert not limiter.locked()  # waiting for the start is not waiting for a slot
    async with limiter:
        assert fresh.started
        assert await fresh.call(answer, {}, info=CallInfo("answer")) == 42
    taken = 0
    while not limiter.locked():
        await limiter.acquire()
        taken += 1
    assert taken == fresh.capacity
    assert fresh.limiter() is limiter  # one per event loop


async def test_concurrent_first_users_share_one_start(fresh: Executor) -> None:
    limiter = fresh.limiter()

    async def use() -> int:
        async with limiter:
            return int(await fresh.call(triple, {"item": 2}, info=CallInfo("triple")))

    assert await asyncio.wait_for(asyncio.gather(*(use() for _ in range(5))), 120) == [6] * 5


def kernel_imports(path: Path) -> list[str]:
    """The `justpipe._kernel` modules a source file imports, lazily or not."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if name.startswith("justpipe._kernel")]
    return found


def test_the_executors_do_not_import_the_kernel() -> None:
    """The kernel imports the executors; they depend on `justpipe._timeouts`, not on it."""
    package = Path(justpipe.executors.__file__).parent
    sources = sorted(package.glob("*.py"))
    assert len(sources) >= 5
    assert {path.name: kernel_imports(path) for path in sources if kernel_imports(path)} == {}
