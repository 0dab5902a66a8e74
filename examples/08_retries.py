"""Retries: `retries=` (needs the `retry` extra, tenacity) and Retry() from an error handler."""

import asyncio

from justpipe import EventType, Pipe, Retry
from justpipe.middleware import HAS_TENACITY

pipe = Pipe(name="flaky")
calls = {"fetch": 0, "parse": 0}


@pipe.step(to="parse", retries=3, retry_wait_min=0, retry_wait_max=0)
async def fetch(state: dict) -> None:
    calls["fetch"] += 1
    if HAS_TENACITY and calls["fetch"] < 3:  # without tenacity there would be no retry
        raise ConnectionError("temporarily unavailable")


def retry_twice(error: Exception) -> Retry | None:
    return Retry() if calls["parse"] < 3 else None


@pipe.step(on_error=retry_twice)
async def parse(state: dict) -> None:
    calls["parse"] += 1
    if calls["parse"] < 3:
        raise ValueError("bad chunk")


async def main() -> None:
    events = [e async for e in pipe.run({})]
    status = events[-1].payload.status.value
    print(calls, status)
    assert status == "success" and calls["parse"] == 3
    if HAS_TENACITY:
        assert calls["fetch"] == 3
    attempts = [e.attempt for e in events if e.type is EventType.STEP_START and e.stage == "parse"]
    assert attempts == [1, 2, 3]


if __name__ == "__main__":
    asyncio.run(main())
