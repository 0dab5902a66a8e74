"""Profile one benchmark scenario on one justpipe backend (or the floor).

    python bench/profile_scenario.py "fanout_map[unbounded]" --impl cython
    python bench/profile_scenario.py "token_stream" --impl python --profiler pyinstrument
    python bench/profile_scenario.py "long_chain[L=1000]" --impl cython --per-unit
    python bench/profile_scenario.py --list

Builds the scenario exactly as the benchmark does, runs it once to warm up,
then once under the profiler, and prints the top functions by own time
(cProfile: tottime, with call counts and cumulative time) or pyinstrument's
call tree. `--impl python` sets ``JUSTPIPE_NO_EXTENSIONS=1`` before importing
justpipe; `--impl cython` requires the compiled core. Note that cProfile sees
no frames inside compiled (Cython) functions: their time is charged to the
Python function that called them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import (
    FANOUT_ITEMS,
    MEMORY_CONCURRENCY,
    RUNS,
    SUB_ITEMS,
    TOKENS,
    Implementation,
    Workload,
)

# benchmark group name -> (Implementation method, arguments)
SCENARIOS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "fanout_map[unbounded]": ("fanout_map", (FANOUT_ITEMS, None)),
    "fanout_map[max_concurrency=64]": ("fanout_map", (FANOUT_ITEMS, 64)),
    "sub_pipeline_fanout": ("sub_pipeline_fanout", (SUB_ITEMS,)),
    "wide_dag[W=50]": ("wide_dag", (50,)),
    "wide_dag[W=1000]": ("wide_dag", (1_000,)),
    "wide_dag[W=10000]": ("wide_dag", (10_000,)),
    "long_chain[L=1000]": ("long_chain", (1_000,)),
    "long_chain[L=10000]": ("long_chain", (10_000,)),
    "token_stream": ("token_stream", (TOKENS,)),
    "many_small_runs": ("many_small_runs", (RUNS,)),
    "lazy_map[items=100000]": ("lazy_map", (100_000, MEMORY_CONCURRENCY)),
}


def implementation(impl: str) -> Implementation:
    if impl == "floor":
        from floors import FloorWorkloads

        return FloorWorkloads()
    if impl == "python":
        os.environ["JUSTPIPE_NO_EXTENSIONS"] = "1"
    import justpipe._core as core

    if impl == "cython" and core.BACKEND == "python":
        raise SystemExit("the compiled backend of justpipe._core is not available")
    from pipelines import PipelineWorkloads

    return PipelineWorkloads()


def build(scenario: str, impl: str) -> Workload:
    method, args = SCENARIOS[scenario]
    return getattr(implementation(impl), method)(*args)  # type: ignore[no-any-return]


def repeats_for(workload: Workload) -> int:
    """Small scenarios are run several times under the profiler, for enough samples."""
    return max(1, 2_000 // workload.units)


def run_profiled(workload: Workload, repeat: int, start: Any, stop: Any) -> None:
    """Warm up, then profile `repeat` runs on one event loop (as the benchmark does)."""
    with asyncio.Runner() as runner:
        runner.run(workload.run())
        gc.collect()
        start()
        for _ in range(repeat):
            delivered = runner.run(workload.run())
        stop()
    assert delivered == workload.expected_events, delivered


def profile_cprofile(workload: Workload, repeat: int) -> tuple[pstats.Stats, int]:
    """The profile of `repeat` runs, and the number of tasks they created."""
    profiler = cProfile.Profile()
    counter = TaskCounter()

    def start() -> None:
        counter.__enter__()
        profiler.enable()

    def stop() -> None:
        profiler.disable()
        counter.__exit__()

    run_profiled(workload, repeat, start, stop)
    return pstats.Stats(profiler, stream=io.StringIO()), counter.count


def top_functions(stats: pstats.Stats, top: int, sort: str) -> str:
    """pstats' table of the `top` functions (after `own_time_by_area`: it strips paths)."""
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    return out.getvalue()


def per_unit_table(stats: pstats.Stats, units: int, top: int) -> str:
    """The top functions by own time, as µs and calls per unit of work (under the profiler)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    whole = sum(v[2] for v in raw.values()) or 1.0
    rows = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    lines = [
        f"own time per unit: {whole / units * 1e6:.2f} µs (profiled; cProfile inflates it)",
        "   µs own  share     µs cum   calls  function",
    ]
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in rows:
        where = f"{filename.replace(chr(92), '/').rsplit('/', 1)[-1]}:{line}({func})"
        lines.append(
            f"{tottime / units * 1e6:9.2f} {100 * tottime / whole:5.1f}% "
            f"{cumtime / units * 1e6:10.2f} {ncalls / units:7.2f}  {where}"
        )
    return "\n".join(lines)


def own_time_by_area(stats: pstats.Stats) -> str:
    """Own time summed per source area: justpipe modules, asyncio, the scenario, builtins."""
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        totals[_area(filename, func)] = totals.get(_area(filename, func), 0.0) + tottime
    whole = sum(totals.values()) or 1.0
    rows = [kv for kv in sorted(totals.items(), key=lambda kv: -kv[1]) if kv[1] / whole >= 0.005]
    return "\n".join(f"{t * 1e3:9.1f} ms {100 * t / whole:5.1f}%  {area}" for area, t in rows)


_STRUCTURE = (
    ("event-loop iterations", "base_events.py", "_run_once"),
    ("futures created", "base_events.py", "create_future"),
    ("callbacks scheduled", "base_events.py", "_call_soon"),
)


class TaskCounter:
    """Counts the asyncio tasks created while active, however they were created.

    `loop.create_task` is not the only way in (justpipe's 3.11 eager start builds its
    tasks with `asyncio.Task(...)` directly), but every task registers itself in
    asyncio's task registry; the counter listens there (its own call adds one per
    task to the function-call count, for every implementation alike).
    """

    def __init__(self) -> None:
        self.count = 0
        self._registry: Any = getattr(asyncio.tasks, "_all_tasks", None)

    def __enter__(self) -> TaskCounter:
        registry = self._registry
        if registry is not None:
            add = registry.add

            def counting_add(task: Any) -> None:
                self.count += 1
                add(task)

            registry.add = counting_add
        return self

    def __exit__(self, *exc: object) -> None:
        if self._registry is not None:
            del self._registry.add


def structure_per_unit(stats: pstats.Stats, units: int, tasks: int) -> str:
    """Deterministic counts per unit of work: they explain a ratio without timing noise."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    counts = dict.fromkeys((label for label, _, _ in _STRUCTURE), 0)
    calls = 0
    for (filename, _line, func), (_cc, ncalls, _tt, _ct, _callers) in raw.items():
        calls += ncalls
        for label, file_suffix, name in _STRUCTURE:
            if func == name and filename.endswith(file_suffix):
                counts[label] += ncalls
    rows = [("function calls (Python and C)", calls), ("tasks created", tasks), *counts.items()]
    return "\n".join(f"{n / units:10.2f}  {label}" for label, n in rows)


def _area(filename: str, func: str) -> str:
    path = filename.replace("\\", "/")
    if "/justpipe/" in path:
        return "justpipe/" + path.split("/justpipe/", 1)[1]
    if "/asyncio/" in path:
        return "asyncio/" + path.rsplit("/", 1)[1]
    if filename == "~" and "justpipe._core" in func:
        return "justpipe._core (compiled)"
    if filename == "~":
        return "C functions and methods (builtins, deque, Future, ...)"
    return path.rsplit("/", 1)[-1]


def profile_pyinstrument(workload: Workload, repeat: int) -> str:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    run_profiled(workload, repeat, profiler.start, profiler.stop)
    text = profiler.output_text(
        unicode=False,
        color=False,
        show_all=False,
        processor_options={"show_regex": r".*[/\\]justpipe[/\\].*", "filter_threshold": 0.005},
    )
    return str(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS))
    parser.add_argument("--impl", choices=("cython", "python", "floor"), default="cython")
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--per-unit", action="store_true", help="top functions as µs and calls per unit"
    )
    parser.add_argument("--repeat", type=int, default=0, help="profiled runs (default: auto)")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    args = parser.parse_args()
    if args.list or args.scenario is None:
        print("\n".join(sorted(SCENARIOS)))
        return
    workload = build(args.scenario, args.impl)
    repeat = args.repeat or repeats_for(workload)
    units = workload.units * repeat
    print(f"{args.scenario} on {args.impl}: {repeat} run(s), {units:,} units profiled\n")
    if args.profiler == "cprofile":
        stats, tasks = profile_cprofile(workload, repeat)
        areas = own_time_by_area(stats)
        structure = structure_per_unit(stats, units, tasks)
        if args.per_unit:
            print(per_unit_table(stats, units, args.top))
        else:
            print(top_functions(stats, args.top, args.sort))
        print("own time by area:")
        print(areas)
        print("\nper unit:")
        print(structure)
    else:
        print(profile_pyinstrument(workload, repeat))


if __name__ == "__main__":
    main()
