"""justpipe: an asyncio pipeline orchestrator whose hot path is compiled with Cython.

Decorate async functions to build the graph, then iterate ``pipe.run(state)``::

    pipe = Pipe()

    @pipe.step(to="shout")
    async def greet(state): state["text"] = "hello"

    @pipe.step
    async def shout(state): yield state["text"].upper()

    async for event in pipe.run({}): ...
"""

from justpipe.middleware import simple_logging_middleware
from justpipe.pipe import Pipe
from justpipe.testing import TestPipe, TestResult
from justpipe.types import (
    DefinitionError,
    Event,
    EventType,
    Meta,
    Raise,
    Retry,
    Skip,
    Stop,
    Suspend,
)

__version__ = "0.12.0"

__all__ = [
    "DefinitionError",
    "Event",
    "EventType",
    "Meta",
    "Pipe",
    "Raise",
    "Retry",
    "Skip",
    "Stop",
    "Suspend",
    "TestPipe",
    "TestResult",
    "simple_logging_middleware",
]
