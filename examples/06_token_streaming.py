"""Token streaming: an async-generator step streams tokens to the consumer as they come."""

import asyncio

from justpipe import EventType, Pipe

pipe = Pipe(name="llm", queue_size=4)  # backpressure: the producer waits for the consumer


@pipe.step
async def generate(state: dict):  # type: ignore[no-untyped-def]
    for word in ["the", "quick", "brown", "fox", "jumps"]:
        await asyncio.sleep(0.001)  # pretend a model is thinking
        yield word + " "


async def main() -> None:
    text = ""
    async for event in pipe.run({}):
        if event.type is EventType.TOKEN:
            text += event.payload
            print(event.payload, end="", flush=True)
    print()
    assert text == "the quick brown fox jumps "


if __name__ == "__main__":
    asyncio.run(main())
