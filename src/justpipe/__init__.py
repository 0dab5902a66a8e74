"""justpipe: an asyncio pipeline orchestrator whose hot path is compiled with Cython.

Decorate async functions to build the graph, then iterate ``pipe.run(state)``::

    pipe = Pipe()

    @pipe.step(to="shout")
    async def greet(state): state["text"] = "hello"

    @pipe.step
    async def shout(state): yield state["text"].upper()

    async for event in pipe.run({}): ...

or run it to the end in one call: ``pipe.execute_sync({})`` (``await pipe.execute({})``
in async code) returns a `RunOutcome`.

This is a drop-in re-implementation of justpipe 0.12.0 (`API_VERSION`); `__version__`
and `IMPLEMENTATION` tell it apart from upstream's package (docs/compatibility.md).
"""

from justpipe.middleware import simple_logging_middleware
from justpipe.outcome import RunFailed as RunFailed
from justpipe.outcome import RunOutcome as RunOutcome
from justpipe.outcome import StepFailure as StepFailure
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

# <upstream release implemented>.<our release>: PEP 440, higher than 0.12.0, never equal to
# an upstream release (docs/compatibility.md, "Telling it from upstream's justpipe")
__version__ = "0.12.0.1"
#: The upstream justpipe release whose API this package is a drop-in for.
API_VERSION = "0.12.0"
#: Names this implementation (upstream's package has no such attribute).
IMPLEMENTATION = "justpipe-cython"

# `__all__` stays upstream's 13 names; RunOutcome, RunFailed and StepFailure (the results
# of `Pipe.execute`) are importable from here too, without changing `from justpipe import *`

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
