"""Switch routing: the return value picks the next step; Stop ends the run."""

import asyncio

from justpipe import EventType, Pipe, Stop

pipe = Pipe(name="router")


@pipe.switch(to={"question": "answer", "greeting": "greet", "bye": Stop}, default="shrug")
async def classify(state: dict) -> str:
    text = state["text"]
    if text.endswith("?"):
        return "question"
    return "greeting" if text.startswith("hi") else "bye" if text == "bye" else "other"


@pipe.step
async def answer(state: dict) -> None:
    state["reply"] = "42"


@pipe.step
async def greet(state: dict) -> None:
    state["reply"] = "hello!"


@pipe.step
async def shrug(state: dict) -> None:
    state["reply"] = "?"


async def route(text: str) -> str | None:
    state = {"text": text}
    async for event in pipe.run(state):
        if event.type is EventType.FINISH:
            assert event.payload.status.value == "success"
    return state.get("reply")


async def main() -> None:
    replies = {t: await route(t) for t in ["why?", "hi there", "bye", "hmm"]}
    print(replies)
    assert replies == {"why?": "42", "hi there": "hello!", "bye": None, "hmm": "?"}


if __name__ == "__main__":
    asyncio.run(main())
