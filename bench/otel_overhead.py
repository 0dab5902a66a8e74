"""CPU cost of OpenTelemetryObserver per event: a 1,000-step chain and a 10,000-item map.

    PYTHONPATH=src python bench/otel_overhead.py [--repeat 5] [--chain 1000] [--items 10000]

Each scenario is run without an observer, with a do-nothing `Observer()` (``plain``: what
any observer costs, the runtime awaiting its hooks), then with `OpenTelemetryObserver` under:
``unset`` (no provider configured anywhere: the global proxies), ``no-op`` (the API's
no-op providers passed explicitly), ``own`` (the observer's own bookkeeping: a tracer
provider that hands out non-recording spans, so every span call is made but nothing is
recorded), ``traces`` and ``metrics`` (the OpenTelemetry SDK for
one signal, the no-op provider for the other) and ``sdk`` (both: an in-memory span
exporter behind a SimpleSpanProcessor and an in-memory metric reader; every span is
built, ended and exported). CPU time (`time.process_time`) per run, best of `--repeat`
interleaved rounds (a round of the chain times 10 runs); the overhead per event is
(with - without) / events. Needs the SDK
(``pip install opentelemetry-sdk``). Figures are recorded in docs/opentelemetry.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import justpipe._core as core
from justpipe import Pipe
from justpipe.observability import Observer
from justpipe.observability.otel import OpenTelemetryObserver


class NonRecordingTracerProvider(trace.TracerProvider):
    """Hands out the API's no-op tracer without being the no-op provider the observer skips:
    the observer does all its own work, every span is a non-recording one."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return trace.NoOpTracer()


def chain(length: int) -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="chain")

    def make(index: int) -> None:
        async def step(state: dict[str, Any]) -> None:
            return None

        step.__name__ = f"s{index}"
        target = f"s{index + 1}" if index + 1 < length else None
        if target is None:
            pipe.step(f"s{index}")(step)
        else:
            pipe.step(f"s{index}", to=target)(step)

    for index in range(length):
        make(index)
    return pipe


def fanout(items: int) -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(name="map")

    @pipe.map(each="work")
    async def spread(state: dict[str, Any]) -> range:
        return range(items)

    @pipe.step
    async def work(state: dict[str, Any], item: int) -> None:
        return None

    return pipe


async def _drain(pipe: Pipe[dict[str, Any], None]) -> int:
    count = 0
    async for _event in pipe.run({}, queue_size=0):
        count += 1
    return count


def once(
    build: Callable[[], Pipe[dict[str, Any], None]], observer: Any, runs: int
) -> tuple[float, int]:
    """CPU seconds per run (mean of `runs` runs of one pipe) and events per run."""
    pipe = build()
    if observer is not None:
        pipe.add_observer(observer)

    async def drain_all() -> int:
        events = 0
        for _ in range(runs):
            events = await _drain(pipe)
        return events

    started = time.process_time()
    events = asyncio.run(drain_all())
    return (time.process_time() - started) / runs, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chain", type=int, default=1000)
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()

    exporter = InMemorySpanExporter()
    sdk_tracer = TracerProvider()
    sdk_tracer.add_span_processor(SimpleSpanProcessor(exporter))
    sdk_meter = MeterProvider(metric_readers=[InMemoryMetricReader()])
    observers: dict[str, Any] = {
        "none": None,
        "plain": Observer(),
        "unset": OpenTelemetryObserver(),
        "no-op": OpenTelemetryObserver(trace.NoOpTracerProvider(), NoOpMeterProvider()),
        "own": OpenTelemetryObserver(NonRecordingTracerProvider(), NoOpMeterProvider()),
        "traces": OpenTelemetryObserver(sdk_tracer, NoOpMeterProvider()),
        "metrics": OpenTelemetryObserver(trace.NoOpTracerProvider(), sdk_meter),
        "sdk": OpenTelemetryObserver(sdk_tracer, sdk_meter),
    }
    # (build, runs per sample): a sample of the short chain is several runs, to time ~0.5 s
    scenarios: dict[str, tuple[Callable[[], Pipe[dict[str, Any], None]], int]] = {
        f"chain of {args.chain} steps": (lambda: chain(args.chain), 10),
        f"map of {args.items} items": (lambda: fanout(args.items), 1),
    }
    print(f"justpipe._core backend: {core.BACKEND}; best of {args.repeat}, CPU time")
    print(f"{'scenario':<24} {'observer':<8} {'events':>7} {'run ms':>9} {'us/event':>9}")
    for label, (build, runs) in scenarios.items():
        best = dict.fromkeys(observers, float("inf"))
        events = 0
        for _ in range(args.repeat):  # interleaved, so drifting load hits every variant
            for name, observer in observers.items():
                cpu, events = once(build, observer, runs)
                best[name] = min(best[name], cpu)
            exporter.clear()
        for name in observers:
            per_event = (best[name] - best["none"]) / events * 1e6
            print(f"{label:<24} {name:<8} {events:>7} {best[name] * 1e3:>9.1f} {per_event:>9.2f}")


if __name__ == "__main__":
    main()
