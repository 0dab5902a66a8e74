"""Live changes of a PostgreSQL run store: ``LISTEN`` instead of polling (the dashboard).

Every write that changes a run notifies ``justpipe_runs`` (see
`justpipe.storage.postgres.CHANGES_CHANNEL`: appended events, a run saved, reopened or
deleted, a checkpoint with events). A `ChangeFeed` holds one listening connection per
event loop and wakes whoever waits on a changed run (``run:<id>``), a changed pipeline
(``pipeline:<hash>``) or any change (``all``).

A waiter reads `mark(key)` before it looks at the store and then `wait(key, mark,
timeout)`: a change between the two is not lost (the mark moved, the wait returns at
once). `wait` also returns after `timeout` without a change, so what no write announces
(a process that died: its lease only grows old) is still seen, and while the feed cannot
listen (the server went away) waiting is plain polling; on reconnecting every waiter is
woken, as changes may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from justpipe.storage.postgres import CHANGES_CHANNEL
from justpipe.storage.url import PostgresLocation

__all__ = ["ALL", "ChangeFeed", "pipeline_key", "run_key"]

ALL = "all"
RECONNECT_S = 1.0


def run_key(run_id: str) -> str:
    return f"run:{run_id}"


def pipeline_key(pipeline_hash: str) -> str:
    return f"pipeline:{pipeline_hash}"


class ChangeFeed:
    """Wakes waiters when runs of the database at `location` change (module docstring)."""

    def __init__(self, location: PostgresLocation) -> None:
        self.location = location
        self.notifications = 0  # how many the feed received (tests and the probe read it)
        self._marks: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening = False

    @property
    def listening(self) -> bool:
        """Whether a connection listens now (else waiting polls)."""
        return self._listening

    def mark(self, key: str) -> int:
        """How many changes of `key` were seen so far (pass it to `wait`)."""
        self._start()
        return self._marks.get(key, 0)

    async def wait(self, key: str, mark: int, timeout: float) -> bool:
        """Until `key` changes after `mark`, or `timeout` seconds; whether it changed."""
        self._start()
        if self._marks.get(key, 0) != mark:
            return True
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        finally:
            waiters.discard(waiter)
        return True

    async def close(self) -> None:
        """Stop listening (the connection closes)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- listening ------------------------------------------------------------------

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._loop is loop:
            return
        self._loop = loop
        self._task = loop.create_task(self._listen(), name="justpipe-change-feed")

    async def _listen(self) -> None:
        conninfo = make_conninfo("", **self.location.connect_kwargs())
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="justpipe-dashboard",
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._listening = True
                    self._wake_everyone()  # what changed while it did not listen
                    async for note in conn.notifies():
                        self._changed(note.payload)
            except (psycopg.Error, OSError):
                pass  # the server went away: poll until it is back
            finally:
                self._listening = False
            await asyncio.sleep(RECONNECT_S)

    def _changed(self, payload: Any) -> None:
        self.notifications += 1
        pipeline_hash, _, run_id = str(payload).partition(" ")
        for key in (run_key(run_id), pipeline_key(pipeline_hash), ALL):
            self._marks[key] = self._marks.get(key, 0) + 1
            for waiter in self._waiters.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def _wake_everyone(self) -> None:
        for key in list(self._waiters):
            self._marks[key] = self._marks.get(key, 0) + 1
            for waiter in self._waiters.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)
