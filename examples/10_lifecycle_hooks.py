"""Lifecycle hooks: startup and shutdown hooks around every run, and a global error handler."""

import asyncio

from justpipe import EventType, Pipe

pipe = Pipe(name="lifecycle")
log: list[str] = []


@pipe.on_startup
async def connect(state: dict) -> None:
    log.append("connect")
    state["db"] = "connection"


@pipe.on_shutdown
async def disconnect(state: dict) -> None:
    log.append("disconnect")  # runs whatever happened, even after a failure


@pipe.on_error
async def report(error: Exception, step_name: str) -> None:
    log.append(f"handled {type(error).__name__} in {step_name}")  # None = carry on


@pipe.step
async def work(state: dict) -> None:
    raise RuntimeError("boom")


async def main() -> None:
    events = [e async for e in pipe.run({})]
    print(log)
    assert log == ["connect", "handled RuntimeError in work", "disconnect"]
    assert events[-1].type is EventType.FINISH and events[-1].payload.status.value == "success"


if __name__ == "__main__":
    asyncio.run(main())
