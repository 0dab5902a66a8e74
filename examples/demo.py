"""The `make demo` pipeline: a small research assistant, streamed event by event.

fetch -> (summarise, keywords) in parallel -> report (an ALL join), with a map over
sources and a streaming step. Prints every event as it arrives and, at the end,
which core backend (compiled Cython or pure Python) ran it.
"""

from __future__ import annotations

import asyncio

from justpipe import EventType, Pipe, _core


class Research:
    """The run's state: every step reads and mutates this one object."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sources: list[str] = []
        self.notes: dict[str, str] = {}
        self.keywords: list[str] = []


pipe: Pipe[Research, None] = Pipe(Research, name="research")


@pipe.map(each="read_source", to=["summarise", "keywords"], max_concurrency=2)
async def fetch(state: Research) -> list[str]:
    state.sources = [f"{state.topic}-paper-{i}" for i in range(3)]
    return state.sources


@pipe.step
async def read_source(state: Research, source: str) -> None:
    await asyncio.sleep(0.01)  # pretend to download
    state.notes[source] = f"{source} says {state.topic} is fast"


@pipe.step(to="report")
async def summarise(state: Research):  # type: ignore[no-untyped-def]
    for source in state.sources:
        yield f"summary of {source}"  # streamed as TOKEN events


@pipe.step(to="report")
async def keywords(state: Research) -> None:
    state.keywords = sorted({w for note in state.notes.values() for w in note.split()})[:4]


@pipe.step
async def report(state: Research) -> None:
    state.notes["report"] = f"{len(state.sources)} sources, keywords {state.keywords}"


async def main() -> None:
    state = Research(topic="asyncio")
    async for event in pipe.run(state):
        detail = ""
        if event.type is EventType.TOKEN:
            detail = f" {event.payload!r}"
        elif event.type is EventType.FINISH:
            detail = f" status={event.payload.status.value} in {event.payload.duration_s:.3f}s"
        print(f"{event.seq:3} {event.type.value:<15} {event.stage}{detail}")
    print(f"report: {state.notes['report']}")
    print(f"backend: {_core.BACKEND}")


if __name__ == "__main__":
    asyncio.run(main())
