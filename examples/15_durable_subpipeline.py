"""Durable runs with a sub-pipeline: the question is asked inside the child.

The parent `publishing` loads an article, runs the `editing` sub-pipeline on the
article's `review` part, then publishes. Inside the child, `ask_editor` returns
`Suspend`: the whole durable run ends suspended (`suspended_steps` names it
``edit:ask_editor``). `pipe.resume(run_id, value=...)` re-enters the sub step and the
child goes on after its question (`apply_answer` reads `resume_value()`); what the child
had done (`check_spelling`) does not run again, and the parent then publishes.

The child works on `state.review`, an attribute of the parent's state: the checkpoint
records that path, so after the resume parent and child still share that object.
An in-memory store keeps this example self-contained; `durable=True` would use SQLite
under JUSTPIPE_STORAGE_PATH, resumable from another process (see examples/14_durable.py).

    python examples/15_durable_subpipeline.py
"""

import asyncio
from dataclasses import dataclass, field

from justpipe import EventType, Pipe, Suspend
from justpipe.durable import InMemoryCheckpointStore, SuspendedEndData, resume_value


@dataclass
class Review:
    notes: list[str] = field(default_factory=list)
    verdict: str | None = None


@dataclass
class Article:
    title: str = ""
    review: Review = field(default_factory=Review)
    published: bool = False


editing: Pipe[Review, None] = Pipe(Review, name="editing")


@editing.step(to="ask_editor")
async def check_spelling(state: Review) -> None:
    state.notes.append("spelling checked")


@editing.step(to="apply_answer")
async def ask_editor(state: Review) -> Suspend:
    return Suspend(reason="the editor must approve")


@editing.step
async def apply_answer(state: Review) -> None:
    state.verdict = resume_value()  # the value given to pipe.resume()
    state.notes.append(f"editor said {state.verdict}")


pipe: Pipe[Article, None] = Pipe(Article, name="publishing", durable=InMemoryCheckpointStore())


@pipe.step(to="edit")
async def load(state: Article) -> None:
    state.title = "Durable pipelines"


@pipe.sub(pipeline=editing, to="publish")
async def edit(state: Article) -> Review:
    return state.review  # the child works on this part of the parent's state


@pipe.step
async def publish(state: Article) -> None:
    state.published = state.review.verdict == "approved"


async def main() -> None:
    article = Article()
    run_id = ""
    async for event in pipe.run(article):
        if event.type is EventType.SUSPEND:
            print(f"suspended at {event.stage}: {event.payload}")
        if event.type is EventType.FINISH and event.stage == "system":  # (not the child's)
            assert isinstance(event.payload, SuspendedEndData)
            print("waiting on:", event.payload.suspended_steps)
            run_id = event.run_id or ""

    # ... later (any process, with a store that outlives it): the editor answers
    steps = []
    restored = None
    async for event in pipe.resume(run_id, value="approved"):
        if event.type is EventType.START and event.stage == "system":
            restored = event.payload  # the state, as the checkpoint restored it
        if event.type is EventType.STEP_START:
            steps.append(event.stage)
        if event.type is EventType.FINISH and event.stage == "system":
            print(f"run {event.run_id} finished: {event.payload.status.value}")
    print("resumed steps:", steps)
    assert "edit:check_spelling" not in steps  # done before the suspend: not again
    assert steps == ["edit", "edit:apply_answer", "publish"]
    print("article:", restored)
    assert isinstance(restored, Article) and restored.published
    assert restored.review.notes == ["spelling checked", "editor said approved"]


if __name__ == "__main__":
    asyncio.run(main())
