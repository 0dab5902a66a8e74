"""OpenTelemetry: every run a trace, every invocation a span, plus justpipe.* metrics.

Needs the `otel` extra and an SDK: pip install 'justpipe[otel]' opentelemetry-sdk.
Here the spans go to an in-memory exporter and are printed as a tree; in production
you would add an OTLP exporter to the TracerProvider instead.
"""

import asyncio
import importlib.util

from justpipe import Pipe, Retry

if importlib.util.find_spec("opentelemetry.sdk") is None:
    OTEL = False
else:
    OTEL = True
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from justpipe.observability.otel import OpenTelemetryObserver

enrich = Pipe(name="enrich")


@enrich.step(to="score")
async def lookup(state: dict) -> None:
    state["looked_up"] = True


@enrich.step
async def score(state: dict) -> None:
    state["score"] = 0.9


pipe = Pipe(name="orders")
attempts = {"charge": 0}


@pipe.map(each="check", to="charge")
async def split(state: dict) -> list[str]:
    return ["stock", "fraud", "address"]


@pipe.step
async def check(state: dict, item: str) -> None:
    state.setdefault("checked", []).append(item)


def try_again(error: Exception) -> Retry | None:
    return Retry() if attempts["charge"] < 2 else None


@pipe.step(to="details", on_error=try_again)
async def charge(state: dict) -> None:
    attempts["charge"] += 1
    if attempts["charge"] == 1:
        raise ConnectionError("payment gateway busy")


@pipe.sub(pipeline=enrich)
async def details(state: dict) -> dict:
    return state


def print_tree(spans: list, parent_id: int | None = None, depth: int = 0) -> None:
    children = [s for s in spans if (s.parent.span_id if s.parent else None) == parent_id]
    for span in sorted(children, key=lambda s: s.start_time):
        attributes = span.attributes
        extra = []
        if "justpipe.map.index" in attributes:
            extra.append(f"index={attributes['justpipe.map.index']}")
        elif "justpipe.attempt" in attributes:  # (map workers count attempts per step name)
            extra.append(f"attempt={attributes['justpipe.attempt']}")
        for key in ("justpipe.invocation.status", "justpipe.run.status"):
            if key in attributes:
                extra.append(str(attributes[key]))
        print(f"{'  ' * depth}{span.name}  [{', '.join(extra)}]")
        print_tree(spans, span.context.span_id, depth + 1)


async def main() -> None:
    if not OTEL:
        print("install the otel extra and an SDK: pip install 'justpipe[otel]' opentelemetry-sdk")
        return
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    observer = OpenTelemetryObserver(tracer_provider=tracer_provider, meter_provider=meter_provider)
    observer.instrument(pipe)  # = pipe.add_observer(observer), and learn the pipeline hash

    # the caller's span (say, a web request) contains the run
    with tracer_provider.get_tracer("web").start_as_current_span("POST /orders"):
        events = [event async for event in pipe.run({})]
    assert events[-1].payload.status.value == "success"

    spans = list(exporter.get_finished_spans())
    print_tree(spans)
    run = next(s for s in spans if s.name == "RUN orders")
    assert len({s.context.trace_id for s in spans}) == 1  # one trace
    assert run.parent is not None  # inside the request span
    charges = [s for s in spans if s.name == "charge"]
    assert [s.attributes["justpipe.invocation.status"] for s in charges] == ["retried", "success"]
    assert len(charges[1].links) == 1  # the second attempt links to the first

    metrics = reader.get_metrics_data()
    for metric in metrics.resource_metrics[0].scope_metrics[0].metrics:
        total = sum(getattr(p, "value", getattr(p, "count", 0)) for p in metric.data.data_points)
        print(f"{metric.name} ({metric.unit}): {total}")


if __name__ == "__main__":
    asyncio.run(main())
