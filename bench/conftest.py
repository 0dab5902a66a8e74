"""Benchmark fixtures: which implementation runs a scenario, and on which event loop.

Every benchmark takes the `implementation` fixture, parametrised as
``cython`` (justpipe on its compiled core), ``python`` (justpipe on the
pure-Python twin) and ``floor`` (a hand-written raw-asyncio program doing the
same work, `floors.py`), in the style of aio-libs/multidict's benchmarks, so
the three appear side by side in one pytest-benchmark group per scenario.

Options: ``--loop asyncio|uvloop`` (or ``JUSTPIPE_BENCH_LOOP``) picks the event
loop; ``--no-compiled`` deselects the compiled backend. Results go to
``bench/.results/<loop>.json`` unless ``--benchmark-json`` says otherwise;
``python bench/report.py`` turns them into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import backends
import pytest
import report
from floors import FLOOR_QUEUE_SIZE
from harness import DEFAULT_ROUNDS, PARTS, BenchImplementation, Measure
from workloads import MEMORY_ITEMS, Workload

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / ".results"
LOOPS = ("asyncio", "uvloop")
_stash: dict[str, Any] = {}  # session-wide: load average at start, the JSON written at the end
COMPILED_MARK = pytest.mark.compiled_backend
PURE_MARK = pytest.mark.pure_backend
FLOOR_MARK = pytest.mark.asyncio_floor


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("justpipe-bench")
    group.addoption(
        "--loop",
        choices=LOOPS,
        default=os.environ.get("JUSTPIPE_BENCH_LOOP", "asyncio"),
        help="event loop for the benchmarks (default: $JUSTPIPE_BENCH_LOOP or asyncio)",
    )
    group.addoption(
        "--compiled",  # disabled with --no-compiled
        action=argparse.BooleanOptionalAction,
        default=True,
        dest="bench_compiled",
        help="benchmark the compiled backend too (on by default)",
    )
    group.addoption(
        "--bench-parts",
        type=int,
        default=PARTS,
        help=f"run each benchmark in N interleaved parts (default {PARTS})",
    )
    group.addoption(
        "--memory-items",
        type=int,
        default=MEMORY_ITEMS,
        help=f"items of the memory scenario's map (default {MEMORY_ITEMS:,})",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for mark, text in (
        (COMPILED_MARK, "runs justpipe on the compiled core"),
        (PURE_MARK, "runs justpipe on the pure-Python core"),
        (FLOOR_MARK, "runs the hand-written raw-asyncio floor"),
    ):
        config.addinivalue_line("markers", f"{mark.name}: {text}")
    loop = config.getoption("--loop")
    if loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise pytest.UsageError("--loop uvloop needs uvloop: pip install uvloop") from None
    _stash["loadavg"] = [os.getloadavg()[0]]
    if not any(a.startswith("--benchmark-timer") for a in config.invocation_params.args):
        config.option.benchmark_timer = "time.process_time"
    if config.getoption("benchmark_storage", None) == "file://./.benchmarks":
        config.option.benchmark_storage = f"file://{RESULTS_DIR / 'storage'}"
    if config.getoption("benchmark_json", None) is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        config.option.benchmark_json = RESULTS_DIR / f"{loop}.json"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_part" in metafunc.fixturenames:
        parts = int(metafunc.config.getoption("--bench-parts"))
        metafunc.parametrize("bench_part", range(1, parts + 1), ids=lambda p: f"part{p}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("bench_compiled"):
        keep = [i for i in items if i.get_closest_marker(COMPILED_MARK.name) is None]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
    items[:] = _interleaved(items)


_IMPL_ORDER = ("cython", "python", "floor")


def _interleaved(items: list[pytest.Item]) -> list[pytest.Item]:
    """Order: per scenario and size, part 1 of every implementation, then part 2, ..."""
    scenarios: dict[tuple[str, str], int] = {}

    def key(item: pytest.Item) -> tuple[int, int, int]:
        callspec = getattr(item, "callspec", None)
        params = dict(callspec.params) if callspec is not None else {}
        impl = params.pop("implementation", None)
        part = params.pop("bench_part", 0)
        base = (getattr(item, "originalname", item.name), repr(sorted(params.items())))
        rank = scenarios.setdefault(base, len(scenarios))
        impl_rank = _IMPL_ORDER.index(impl.name) if impl is not None else 0
        return rank, int(part), impl_rank

    return sorted(items, key=key)


@pytest.fixture(
    params=(
        pytest.param(BenchImplementation("cython"), marks=COMPILED_MARK),
        pytest.param(BenchImplementation("python"), marks=PURE_MARK),
        pytest.param(BenchImplementation("floor"), marks=FLOOR_MARK),
    ),
    ids=str,
)
def implementation(request: pytest.FixtureRequest) -> Iterator[BenchImplementation]:
    """The implementation under test, with its justpipe backend active for the test."""
    impl: BenchImplementation = request.param
    if impl.is_floor:
        yield impl
        return
    if not backends.available(impl.name):
        pytest.skip(f"the {impl.name} backend of justpipe._core is not available (not built)")
    with backends.activate(impl.name):
        yield impl


@pytest.fixture
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--loop"))


@pytest.fixture
def runner(loop_name: str) -> Iterator[asyncio.Runner]:
    """A fresh event loop per benchmark (uvloop's when asked for)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as r:
        yield r


def _collect_garbage() -> None:
    """Every round starts from a collected heap (run outside the timed region)."""
    gc.collect()


def _active_backend(impl: BenchImplementation) -> str:
    if impl.is_floor:
        return "floor"
    from justpipe import _core

    return str(_core.BACKEND)


@pytest.fixture
def measure(
    implementation: BenchImplementation,
    benchmark: Any,
    runner: asyncio.Runner,
    loop_name: str,
    bench_part: int,
) -> Measure:
    """Time `workload.run()` with a fixed number of rounds; check it did the whole work."""

    def run(
        workload: Workload, *, scenario: str, variant: str, rounds: int = DEFAULT_ROUNDS
    ) -> int:
        benchmark.group = f"{scenario}[{variant}]"
        benchmark.extra_info.update(
            scenario=scenario,
            variant=variant,
            implementation=implementation.name,
            backend=_active_backend(implementation),
            units=workload.units,
            events=workload.expected_events,
            loop=loop_name,
            part=bench_part,
        )
        delivered = benchmark.pedantic(
            lambda: runner.run(workload.run()),
            setup=_collect_garbage,
            rounds=rounds,
            warmup_rounds=1,
            iterations=1,
        )
        assert delivered == workload.expected_events, (
            f"{implementation} delivered {delivered} events, expected {workload.expected_events}"
        )
        return int(delivered)

    return run


# ---------------------------------------------------------------------- reporting hooks


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    machine_info["justpipe_bench"] = {
        "loop": config.getoption("--loop"),
        "compiled_available": backends.available("cython"),
        "memory_total_bytes": _memory_total(),
        "uvloop": _version("uvloop"),
        "platform": platform.platform(),
        "justpipe": _justpipe_origin(),
        "floor_queue_size": FLOOR_QUEUE_SIZE,
        "loadavg": [*_stash.get("loadavg", []), os.getloadavg()[0]],
    }


def _justpipe_origin() -> str:
    import justpipe

    where = "installed" if "site-packages" in (justpipe.__file__ or "") else "source tree"
    return f"{getattr(justpipe, '__version__', '?')} ({where}: {Path(justpipe.__file__).parent})"


def _memory_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]
) -> None:
    _stash["json"] = output_json


def pytest_terminal_summary(terminalreporter: Any) -> None:
    data = _stash.get("json")
    if not data:
        return
    terminalreporter.write_sep("=", "justpipe: ratios to the raw-asyncio floor and targets")
    for line in report.render_summary([data]).splitlines():
        terminalreporter.write_line(line)
