"""Suspend and resume: a step pauses the run for a human; a second run resumes it."""

import asyncio

from justpipe import EventType, Pipe, Suspend

pipe = Pipe(name="approval")


@pipe.step(to="ask_approval")
async def draft(state: dict) -> None:
    state["draft"] = "Dear customer, ..."


@pipe.step(to="send")
async def ask_approval(state: dict) -> Suspend | None:
    if "approved" not in state:
        return Suspend(reason="waiting for a human to approve the draft")
    return None


@pipe.step
async def send(state: dict) -> None:
    state["sent"] = True


async def main() -> None:
    state: dict = {}
    first = [e async for e in pipe.run(state)]
    reason = next(e.payload for e in first if e.type is EventType.SUSPEND)
    print("suspended:", reason)
    state["approved"] = True  # ... later, after the human said yes
    second = [e async for e in pipe.run(state, start="ask_approval")]
    print("resumed:", [e.stage for e in second if e.type is EventType.STEP_START])
    assert "sent" not in first[-1].payload.__dict__ and state["sent"] is True


if __name__ == "__main__":
    asyncio.run(main())
