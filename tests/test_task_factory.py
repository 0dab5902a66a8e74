"""A task factory set on the run's loop (`loop.set_task_factory`) sees every step task.

Steps start eagerly (3.12+: `eager_start=True`, 3.11: `_core.start_eagerly`), and the
eager path must not bypass the loop's factory: tracing, context propagation and task
naming libraries install one and expect to see each task the run creates.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import collect
from justpipe import EventType, Pipe


class RecordingFactory:
    """A task factory that builds ordinary tasks and remembers them."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        self.tasks.append(task)
        return task


@pytest.fixture
async def factory() -> AsyncIterator[RecordingFactory]:
    loop = asyncio.get_running_loop()
    recording = RecordingFactory()
    previous = loop.get_task_factory()
    loop.set_task_factory(recording)
    try:
        yield recording
    finally:
        loop.set_task_factory(previous)


def build_pipe(seen: dict[str, list[asyncio.Task[Any] | None]]) -> Pipe[Any, Any]:
    """Steps of every kind; each records the task it runs in."""
    pipe: Pipe[Any, Any] = Pipe(name="factory")

    def mark(name: str) -> None:
        seen.setdefault(name, []).append(asyncio.current_task())

    @pipe.step(to="fan")
    async def first(state: Any) -> None:
        mark("first")  # never suspends: the eager path finishes it at once

    @pipe.map(each="worker", to="talk")
    async def fan(state: Any) -> list[int]:
        mark("fan")
        return [1, 2, 3]

    @pipe.step
    async def worker(item: int) -> None:
        mark("worker")
        await asyncio.sleep(0)  # suspends: the task outlives its eager step

    @pipe.step(to="last")
    async def talk(state: Any) -> Any:
        mark("talk")
        yield "token"

    @pipe.step
    def last(state: Any) -> None:
        mark("last")

    return pipe


async def test_every_step_task_comes_from_the_loops_task_factory(
    factory: RecordingFactory,
) -> None:
    assert asyncio.get_running_loop().get_task_factory() is factory
    seen: dict[str, list[asyncio.Task[Any] | None]] = {}
    events = await collect(build_pipe(seen))

    assert [e.stage for e in events if e.type is EventType.STEP_START].count("worker") == 3
    assert sorted(seen) == ["fan", "first", "last", "talk", "worker"]
    assert len(seen["worker"]) == 3
    made = set(map(id, factory.tasks))
    for name, tasks in seen.items():
        for task in tasks:
            assert task is not None, name
            assert id(task) in made, f"step {name!r} ran in a task the factory never made"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is 3.12+")
async def test_an_eager_task_factory_runs_the_pipeline_unchanged() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    seen: dict[str, list[asyncio.Task[Any] | None]] = {}
    plain = [(e.type.value, e.stage) for e in await collect(build_pipe({}))]
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        eager = [(e.type.value, e.stage) for e in await collect(build_pipe(seen))]
    finally:
        loop.set_task_factory(previous)
    assert sorted(eager) == sorted(plain)  # the same events (their interleaving may differ)
    assert eager[-1] == plain[-1] == (EventType.FINISH.value, "system")
    assert len(seen["worker"]) == 3
