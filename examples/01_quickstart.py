"""Quick start: two steps, a streamed token, and the event stream."""

import asyncio

from justpipe import EventType, Pipe

pipe = Pipe(name="quickstart")


@pipe.step(to="shout")
async def greet(state: dict) -> None:
    state["text"] = "hello, justpipe"


@pipe.step
async def shout(state: dict):  # type: ignore[no-untyped-def]
    yield state["text"].upper()  # every yielded value is a TOKEN event


async def main() -> None:
    state: dict = {}
    events = [event async for event in pipe.run(state)]
    for event in events:
        print(
            event.seq,
            event.type.value,
            event.stage,
            event.payload if event.type is EventType.TOKEN else "",
        )
    assert [e.payload for e in events if e.type is EventType.TOKEN] == ["HELLO, JUSTPIPE"]
    assert events[-1].type is EventType.FINISH


if __name__ == "__main__":
    asyncio.run(main())
