"""Run storage: records, the backend protocol, and the in-memory and SQLite stores (spec §15)."""

from justpipe.storage.interface import RunRecord, StorageBackend, StoredEvent
from justpipe.storage.memory import InMemoryBackend
from justpipe.storage.sqlite import SQLiteBackend

__all__ = ["InMemoryBackend", "RunRecord", "SQLiteBackend", "StorageBackend", "StoredEvent"]
