"""Run storage: records, the backend protocol, and the in-memory and SQLite stores (spec §15)."""

from justpipe.storage.interface import RunRecord, StorageBackend, StoredEvent

__all__ = ["RunRecord", "StorageBackend", "StoredEvent"]
