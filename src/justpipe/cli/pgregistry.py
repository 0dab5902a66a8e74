"""The tools' read side over a PostgreSQL run store (``JUSTPIPE_STORAGE_URL=postgresql://``).

The same `PipelineRegistry`, with the four methods a store kind overrides: the pipelines
come from the database's ``pipelines`` table, each one's store is a `PostgresBackend`
scoped to its hash, and durable runs are read from the checkpoint tables beside. Like the
SQLite side it only reads (cleanup aside): it never creates or migrates the schema, and a
database no justpipe process wrote to yet holds no pipelines.
"""

from __future__ import annotations

from pathlib import Path

from justpipe.cli.registry import PipelineInfo, PipelineRegistry
from justpipe.storage.interface import StorageBackend
from justpipe.storage.pgchanges import ChangeFeed
from justpipe.storage.postgres import PostgresBackend, PostgresDatabase
from justpipe.storage.segments import DurableRun
from justpipe.storage.url import PostgresLocation

__all__ = ["PostgresRegistry"]


class PostgresRegistry(PipelineRegistry):
    """Every pipeline of one PostgreSQL database (see the module docstring).

    `timeout` is kept for the interface (a PostgreSQL reader does not wait for writers).
    """

    def __init__(self, location: PostgresLocation, *, timeout: float = 5.0) -> None:
        super().__init__(Path(), timeout=timeout)
        self.location = self.postgres = location
        self.database = PostgresDatabase(location, create=False)

    @property
    def where(self) -> str:
        return self.postgres.display

    def close(self) -> None:
        super().close()
        self.database.close()

    def list_pipelines(self) -> list[PipelineInfo]:
        """Every pipeline the database records, by hash."""
        return [
            PipelineInfo(name, pipeline_hash, Path(pipeline_hash))
            for pipeline_hash, name in self.database.pipelines()
        ]

    def get_backend(self, pipeline_hash: str) -> StorageBackend:
        backend = self._backends.get(pipeline_hash)
        if backend is None:
            backend = self._backends[pipeline_hash] = PostgresBackend(self.database, pipeline_hash)
        return backend

    def get_writable_backend(self, pipeline_hash: str) -> StorageBackend:
        return PostgresBackend(self.database, pipeline_hash)

    def description(self, info: PipelineInfo) -> dict[str, object] | None:
        return self.database.description(info.hash)

    def change_feed(self) -> ChangeFeed:
        """A feed of this database's run changes (the dashboard's live pages listen)."""
        return ChangeFeed(self.postgres)

    def durable_runs(
        self, pipeline_hash: str, run_ids: list[str] | None = None
    ) -> dict[str, DurableRun]:
        return PostgresBackend(self.database, pipeline_hash).durable_runs(run_ids)
