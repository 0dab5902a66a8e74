"""justpipe: an asyncio pipeline orchestrator whose hot path is compiled with Cython."""

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
