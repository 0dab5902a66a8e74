"""A parallel DAG: one root fans out to three branches that join (ALL barrier)."""

import asyncio

from justpipe import EventType, Pipe

pipe = Pipe(name="parallel")


@pipe.step(to=["weather", "news", "stocks"])
async def start(state: dict) -> None:
    state["parts"] = {}


@pipe.step(to="briefing")
async def weather(state: dict) -> None:
    await asyncio.sleep(0.02)
    state["parts"]["weather"] = "sunny"


@pipe.step(to="briefing")
async def news(state: dict) -> None:
    await asyncio.sleep(0.01)
    state["parts"]["news"] = "calm"


@pipe.step(to="briefing")
async def stocks(state: dict) -> None:
    state["parts"]["stocks"] = "up"


@pipe.step
async def briefing(state: dict) -> None:  # runs once, after all three parents
    state["briefing"] = ", ".join(f"{k}: {v}" for k, v in sorted(state["parts"].items()))


async def main() -> None:
    state: dict = {}
    starts = [e.stage async for e in pipe.run(state) if e.type is EventType.STEP_START]
    print(state["briefing"])
    assert starts[0] == "start" and starts[-1] == "briefing" and starts.count("briefing") == 1


if __name__ == "__main__":
    asyncio.run(main())
