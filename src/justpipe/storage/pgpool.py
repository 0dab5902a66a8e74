"""A small bounded pool of PostgreSQL connections (psycopg 3), shared by the stores.

Why not ``psycopg_pool``: the stores need little (a handful of connections, lent for one
transaction at a time, from worker threads), and two things it does differently matter
here: it starts background threads per pool, and it has no notion of a process forked
while holding connections. This pool opens connections on demand (none in the
background), never more than `max_size` at once, and:

* lends a connection for one ``with pool.connection() as conn:`` block (autocommit on;
  the stores open their transactions with ``conn.transaction()``); an open transaction
  left at the end of the block is committed, or rolled back when the block raised;
* drops a connection that broke, and with it every idle one (after a server restart
  they are all stale), so the next block connects afresh; an idle connection whose
  socket has something to read (the server said goodbye) is dropped before lending;
* in a forked child, never touches the parent's connections (they stay referenced, so
  the driver never finishes them: the parent keeps using them) and opens its own;
* ``close()`` closes every connection and refuses further blocks.

Any object with a ``connection()`` context manager that lends a psycopg connection
(``psycopg_pool.ConnectionPool`` is one) can stand in for it where the stores take a pool.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, Self

import psycopg
from psycopg.conninfo import make_conninfo

from justpipe.storage.url import PostgresLocation, StorageUnavailableError, parse_storage_url

__all__ = ["ConnectionSource", "PostgresPool", "unavailable"]

DEFAULT_MAX_SIZE = 4
DEFAULT_CONNECT_TIMEOUT_S = 5
DEFAULT_WAIT_TIMEOUT_S = 30.0
APPLICATION_NAME = "justpipe"

# connections inherited through fork(): kept referenced so the child never finishes them
_INHERITED: list[psycopg.Connection[Any]] = []


class ConnectionSource(Protocol):
    """What the PostgreSQL stores need of a pool: a block that lends a connection."""

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


class PostgresPool:
    """At most `max_size` connections to the database of `url` (see the module docstring).

    `url` is a ``postgresql://`` URL or a `PostgresLocation`. `connect_timeout` bounds
    each new connection (seconds, libpq's ``connect_timeout``); `timeout` how long a block
    waits for a connection when all are lent.
    """

    def __init__(
        self,
        url: str | PostgresLocation,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S,
        timeout: float = DEFAULT_WAIT_TIMEOUT_S,
    ) -> None:
        location = parse_storage_url(url) if isinstance(url, str) else url
        if not isinstance(location, PostgresLocation):
            raise ValueError(f"PostgresPool needs a postgresql:// URL, got {location.display!r}")
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
            raise ValueError(f"PostgresPool(max_size=...) must be an int >= 1, got {max_size!r}")
        if not isinstance(connect_timeout, int) or connect_timeout < 1:
            raise ValueError(
                f"PostgresPool(connect_timeout=...) must be whole seconds >= 1, got "
                f"{connect_timeout!r}"
            )
        self.location = location
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._idle: list[psycopg.Connection[Any]] = []
        self._open = 0  # connections of this process that exist (idle or lent)
        self._cond = threading.Condition()
        self._pid = os.getpid()
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresPool({self.location.display!r}, max_size={self.max_size})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        """How many connections this process has open through the pool (idle or lent)."""
        with self._cond:
            self._forget_if_forked()
            return self._open

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Lend a connection for the block (see the module docstring)."""
        conn = self._take()
        try:
            yield conn
        except BaseException:
            self._give_back(conn, failed=True)
            raise
        self._give_back(conn, failed=False)

    def close(self) -> None:
        """Close every idle connection now, and each lent one when it comes back."""
        with self._cond:
            self._closed = True
            self._forget_if_forked()
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            _close_quietly(conn)

    # -- lending --------------------------------------------------------------------

    def _take(self) -> psycopg.Connection[Any]:
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while True:
                self._refuse_if_closed()
                self._forget_if_forked()
                while self._idle:
                    conn = self._idle.pop()
                    if _usable(conn):
                        return conn
                    self._open -= 1
                    _close_quietly(conn)
                if self._open < self.max_size:
                    self._open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StorageUnavailableError(
                        f"PostgreSQL at {self.location.server}: no connection free after "
                        f"{self.timeout:g}s (all {self.max_size} of the pool are in use)"
                    )
                self._cond.wait(left)
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _give_back(self, conn: psycopg.Connection[Any], *, failed: bool) -> None:
        keep = not conn.closed and not conn.broken
        if keep:
            keep = _end_transaction(conn, commit=not failed)
        stale: list[psycopg.Connection[Any]] = []
        with self._cond:
            if os.getpid() != self._pid:  # lent in the parent, returned in a child
                _INHERITED.append(conn)
                return
            if keep and not self._closed:
                self._idle.append(conn)
            else:
                self._open -= 1
                if not keep:  # the server went away or restarted: the idle ones are stale
                    stale, self._idle = self._idle, []
                    self._open -= len(stale)
            self._cond.notify()
        if not keep or self._closed:
            _close_quietly(conn)
        for old in stale:
            _close_quietly(old)

    def _connect(self) -> psycopg.Connection[Any]:
        location = self.location
        try:
            return psycopg.Connection.connect(
                make_conninfo("", **location.connect_kwargs()),
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name=APPLICATION_NAME,
            )
        except psycopg.Error as exc:
            raise unavailable(location, "cannot connect", exc) from None

    def _forget_if_forked(self) -> None:
        """In a forked child: leave the parent's connections alone and start empty."""
        if self._pid == os.getpid():
            return
        _INHERITED.extend(self._idle)
        self._idle = []
        self._open = 0
        self._pid = os.getpid()

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise StorageUnavailableError(
                f"PostgreSQL at {self.location.server}: the connection pool was closed"
            )


def unavailable(location: PostgresLocation, action: str, exc: BaseException) -> Exception:
    """A `StorageUnavailableError` naming the server and what failed, without the password."""
    reason = location.redact(" ".join(str(exc).split())) or type(exc).__name__
    user = f" as user {location.user}" if location.user else ""
    return StorageUnavailableError(
        f"PostgreSQL run store at {location.server}{user}: {action}: {reason}"
    )


def _usable(conn: psycopg.Connection[Any]) -> bool:
    """False for a closed or broken connection, or one the server has written to meanwhile.

    An idle connection receives nothing unless the server is terminating it (a restart,
    ``pg_terminate_backend``), or the socket was closed: a readable socket means stale.
    """
    if conn.closed or conn.broken:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


def _end_transaction(conn: psycopg.Connection[Any], *, commit: bool) -> bool:
    """Commit (or roll back) what the block left open; whether the connection is still fine."""
    status = conn.info.transaction_status
    if status == psycopg.pq.TransactionStatus.IDLE:
        return True
    try:
        if commit and status == psycopg.pq.TransactionStatus.INTRANS:
            conn.commit()
        else:
            conn.rollback()
    except psycopg.Error:
        return False
    return not conn.broken


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # closing a broken connection: nothing more to do
        return
