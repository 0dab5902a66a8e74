"""Peak RSS growth of a 1,000,000-item map from a generator with max_concurrency=64.

Run in its own process (the benchmark `test_bench_memory.py` starts it) so that
nothing else lives in the heap:

    python bench/memory_probe.py --impl cython|python|floor [--items N] [--loop uvloop]

It imports everything, runs a small warm-up map (first-run caches are not what
we measure), collects garbage, notes the resident set size, resets the kernel's
peak-RSS mark (`/proc/self/clear_refs`), runs the big map once and reads the
peak (`VmHWM`). Growth = peak - baseline. Where the peak mark cannot be reset
(not Linux), a psutil sampling thread gives the peak instead. Prints one JSON
object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import MEMORY_CONCURRENCY, MEMORY_ITEMS, Workload

WARMUP_ITEMS = 10_000
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil  # type: ignore[import-untyped,unused-ignore]

    return int(psutil.Process().memory_info().rss)


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class Sampler:
    """Fallback peak: sample the RSS every few milliseconds in a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())


def _select_backend(impl: str) -> Callable[[int, int], Workload]:
    if impl == "floor":
        from floors import FloorWorkloads

        return FloorWorkloads().lazy_map
    if impl == "python":
        os.environ["JUSTPIPE_NO_EXTENSIONS"] = "1"
    else:
        os.environ.pop("JUSTPIPE_NO_EXTENSIONS", None)
    import justpipe._core as core

    if impl == "cython" and core.BACKEND == "python":
        raise SystemExit("the compiled backend of justpipe._core is not available")
    from pipelines import PipelineWorkloads

    return PipelineWorkloads().lazy_map


def _new_loop(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def probe(impl: str, items: int, concurrency: int, loop: str) -> dict[str, Any]:
    build = _select_backend(impl)
    warmup, workload = build(WARMUP_ITEMS, concurrency), build(items, concurrency)
    with asyncio.Runner(loop_factory=_new_loop(loop)) as runner:
        runner.run(warmup.run())
        gc.collect()
        exact = reset_peak()
        baseline = current_rss()  # read after the reset: the peak starts here
        with Sampler() as sampler:
            started, cpu_started = time.perf_counter(), time.process_time()
            delivered = runner.run(workload.run())
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
    hwm = _status_kib("VmHWM")
    peak = hwm * 1024 if exact and hwm is not None else sampler.peak
    if delivered != workload.expected_events:
        raise SystemExit(
            f"{impl}: delivered {delivered} events, expected {workload.expected_events}"
        )
    return {
        "implementation": impl,
        "backend": _backend_name(impl),
        "loop": loop,
        "items": items,
        "max_concurrency": concurrency,
        "events": delivered,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "rss_growth": peak - baseline,
        "sampled_peak_rss": sampler.peak,
        "peak_method": "VmHWM after clear_refs" if exact else "psutil sampling",
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _backend_name(impl: str) -> str:
    if impl == "floor":
        return "floor"
    from justpipe import _core

    return str(_core.BACKEND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("cython", "python", "floor"), required=True)
    parser.add_argument("--items", type=int, default=MEMORY_ITEMS)
    parser.add_argument("--concurrency", type=int, default=MEMORY_CONCURRENCY)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    print(json.dumps(probe(args.impl, args.items, args.concurrency, args.loop)))


if __name__ == "__main__":
    main()
