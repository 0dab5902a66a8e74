"""Durable runs: a human approves a draft, and the run goes on in another process.

`Pipe(..., durable=True)` checkpoints the run into the run store (JUSTPIPE_STORAGE_PATH, or
the PostgreSQL database of JUSTPIPE_STORAGE_URL: then the resume may run on another machine).
`review` returns `Suspend`: the run ends with a `SuspendedEndData` payload and its
checkpoint stays resumable. Any process, later, calls `pipe.resume(run_id, value=...)`:
the same run (same run_id, seq going on) continues with review's successors, which read
the human's answer with `resume_value()`.

    python examples/14_durable.py                      # run, then resume in a child process
    python examples/14_durable.py resume RUN_ID yes    # resume a suspended run yourself
"""

import asyncio
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from justpipe import EventType, Pipe, Suspend
from justpipe.durable import SuspendedEndData, resume_value


@dataclass
class Review:
    draft: str = ""
    approved: bool | None = None
    sent_to: list[str] = field(default_factory=list)


pipe = Pipe(Review, name="approval", durable=True)


@pipe.step(to="review")
async def write(state: Review) -> None:
    state.draft = "Dear customer, ..."


@pipe.step(to="send")
async def review(state: Review) -> Suspend:
    return Suspend(reason="a human must approve the draft")


@pipe.step
async def send(state: Review) -> None:
    state.approved = resume_value() == "yes"  # the value given to pipe.resume()
    if state.approved:
        # at-least-once: if this process dies here, `send` runs again on resume; a real
        # mailer would be given an idempotency key (e.g. the invocation's run id)
        state.sent_to.append("customer@example.com")


async def first_segment() -> str:
    async for event in pipe.run(Review()):
        if event.type is EventType.SUSPEND:
            print("suspended:", event.payload)
        if event.type is EventType.FINISH:
            assert isinstance(event.payload, SuspendedEndData)
            print(f"run {event.run_id} waits (segment {event.payload.segment})")
            return event.run_id
    raise AssertionError("no FINISH")


async def resume(run_id: str, answer: str) -> None:
    async for event in pipe.resume(run_id, value=answer):
        if event.type is EventType.STEP_END:
            print(f"  seq {event.seq}: {event.stage} done, state {event.payload}")
        if event.type is EventType.FINISH:
            print(f"run {event.run_id} finished: {event.payload.status.value}")


def main() -> None:
    if sys.argv[1:2] == ["resume"]:
        asyncio.run(resume(sys.argv[2], sys.argv[3]))
        return
    # a throwaway store for the demo, unless one is configured (a path, or a database URL)
    own_store = not {"JUSTPIPE_STORAGE_PATH", "JUSTPIPE_STORAGE_URL"} & set(os.environ)
    if own_store:
        os.environ["JUSTPIPE_STORAGE_PATH"] = tempfile.mkdtemp(prefix="justpipe-")
    try:
        run_id = asyncio.run(first_segment())
        # ... hours later, in another process, the human's answer arrives:
        child = subprocess.run(
            [sys.executable, __file__, "resume", run_id, "yes"],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if own_store:
            del os.environ["JUSTPIPE_STORAGE_PATH"]
    print(child.stdout, end="")
    assert "send done" in child.stdout and "finished: success" in child.stdout


if __name__ == "__main__":
    main()
