"""The eager-start core (`_core._eager` / `_eager_py`): 3.11 only, cycle-free, fail-soft.

* Both twins free what they touch by reference counting: a step that fails or is
  cancelled must not leave a Shell in a reference cycle (exception -> traceback ->
  frame -> the exception again), or every failed step would wait for the cyclic GC.
* The private asyncio names the core needs are looked up defensively: with one of
  them gone, `import justpipe` still works and tasks start the ordinary way.
* 3.12+ never imports it (asyncio starts tasks eagerly itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import justpipe._core as core

pytestmark = pytest.mark.backend_agnostic

ON_311 = sys.version_info < (3, 12)
EAGER_CORE_ONLY = pytest.mark.skipif(
    not ON_311, reason="the eager-start core is 3.11's (3.12+ starts tasks with eager_start)"
)


def start_eagerly_of(backend: str) -> Callable[..., Any]:
    if backend not in core.AVAILABLE_BACKENDS:
        from conftest import backend_unavailable

        backend_unavailable(backend)
    start: Callable[..., Any] = core._namespace(backend)["start_eagerly"]
    return start


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def fails_at_once() -> Any:
    async def coro() -> None:
        raise ValueError("in the eager step")

    return coro()


def fails_after_suspending() -> Any:
    async def coro() -> None:
        await asyncio.sleep(0)
        raise ValueError("after the eager step")

    return coro()


def waits_forever() -> Any:
    async def coro() -> None:
        await asyncio.get_running_loop().create_future()

    return coro()


@EAGER_CORE_ONLY
@pytest.mark.parametrize("backend", ["cython", "python"])
@pytest.mark.parametrize(
    ("make", "cancel"),
    [(fails_at_once, False), (fails_after_suspending, False), (waits_forever, True)],
    ids=["raised-eagerly", "raised-later", "cancelled-while-suspended"],
)
def test_failed_and_cancelled_tasks_leave_no_cycles(
    saved_garbage: list[Any], backend: str, make: Callable[[], Any], cancel: bool
) -> None:
    start_eagerly = start_eagerly_of(backend)

    async def once() -> None:
        task = start_eagerly(asyncio.get_running_loop(), make())
        if cancel:
            await asyncio.sleep(0)
            task.cancel()
        with contextlib.suppress(ValueError, asyncio.CancelledError):
            await task
        del task

    async def main() -> None:
        await once()  # warm-up
        gc.collect()
        saved_garbage.clear()
        for _ in range(5):
            await once()
        gc.collect()

    asyncio.run(main())
    mine = Counter(
        type(obj).__qualname__
        for obj in saved_garbage
        if type(obj).__module__.startswith("justpipe")
    )
    assert mine == Counter(), f"freed only by the cyclic GC: {dict(mine)}"


def run_child(script: str, backend: str) -> dict[str, Any]:
    """Run `script` in a fresh interpreter on `backend`; it prints one JSON object."""
    env = dict(os.environ)
    env.pop("JUSTPIPE_NO_EXTENSIONS", None)
    if backend == "python":
        env["JUSTPIPE_NO_EXTENSIONS"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


MISSING_NAME = """
import asyncio, asyncio.tasks, json
del asyncio.tasks._enter_task  # as if a Python release had renamed it

import justpipe
from justpipe import Pipe
import justpipe._core as core

order = []
pipe = Pipe(name="fallback")

@pipe.step(to="second")
async def first(s):
    order.append("first")

@pipe.step
async def second(s):
    order.append("second")

async def main():
    events = [e async for e in pipe.run({})]
    loop = asyncio.get_running_loop()
    started = []

    async def probe():
        started.append(True)
        return 7

    task = core.start_eagerly(loop, probe())
    not_started_yet = started == []
    value = await task
    return events[-1].payload.status.value, not_started_yet, value

status, not_started_yet, value = asyncio.run(main())
print(json.dumps({
    "backend": core.BACKEND,
    "eager": getattr(__import__(core.start_eagerly.__module__, fromlist=["EAGER"]), "EAGER"),
    "status": status,
    "order": order,
    "not_started_yet": not_started_yet,
    "value": value,
}))
"""


@EAGER_CORE_ONLY
@pytest.mark.parametrize("backend", ["cython", "python"])
def test_a_missing_private_asyncio_name_falls_back_to_ordinary_task_start(backend: str) -> None:
    if backend not in core.AVAILABLE_BACKENDS:
        from conftest import backend_unavailable

        backend_unavailable(backend)
    report = run_child(MISSING_NAME, backend)
    assert report["backend"] == backend
    assert report["eager"] is False
    assert report["status"] == "success"
    assert report["order"] == ["first", "second"]
    assert report["not_started_yet"] is True  # an ordinary task: nothing ran before the await
    assert report["value"] == 7


@EAGER_CORE_ONLY
def test_start_eagerly_is_eager_where_the_names_exist() -> None:
    for backend in core.AVAILABLE_BACKENDS:
        module = sys.modules[core._namespace(backend)["start_eagerly"].__module__]
        assert module.EAGER is True, backend


NOT_IMPORTED = """
import json, sys
import justpipe, justpipe._core as core
from justpipe import Pipe
print(json.dumps({
    "loaded": sorted(m for m in sys.modules if m.startswith("justpipe._core._eager")),
    "start_eagerly": core.start_eagerly,
}))
"""


@pytest.mark.skipif(ON_311, reason="3.11 uses the eager-start core")
@pytest.mark.parametrize("backend", ["cython", "python"])
def test_3_12_and_later_never_import_the_eager_core(backend: str) -> None:
    if backend not in core.AVAILABLE_BACKENDS:
        from conftest import backend_unavailable

        backend_unavailable(backend)
    report = run_child(NOT_IMPORTED, backend)
    assert report == {"loaded": [], "start_eagerly": None}
