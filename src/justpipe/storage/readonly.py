"""Reading a store directory without changing it: the SQLite file and ``pipeline.json``.

:func:`connect_read_only` is the one place the tools connect to a store they read;
:func:`read_description` reads a pipeline's ``pipeline.json`` whatever it holds.

The CLI and the dashboard only read (cleanup aside), so they must never change a store:
no journal-mode switch, no schema creation or migration, nothing written. A connection
from :func:`connect_read_only` is opened with ``mode=ro``, so SQLite itself refuses any
write. A store on a read-only file system (a mounted backup, a read-only volume), or in
a directory this user cannot write, cannot give a WAL-mode reader its shared-memory
file; there it is opened ``immutable=1``: SQLite then takes no locks, which is safe on a
read-only file system (nothing can write the file) and, in a directory only another user
can write, means a read that races with that user's write can fail (the next one works).
An immutable reader does not see writes still in a ``-wal`` file beside the store
(a store copied while a process was writing it): a warning says so.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["connect_read_only", "on_read_only_file_system", "read_description"]

_log = logging.getLogger("justpipe.storage")


def on_read_only_file_system(path: Path) -> bool:
    """Whether `path` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _uri(path: Path, *, immutable: bool) -> str:
    location = quote(str(path.resolve()), safe="/")
    return f"file:{location}?mode=ro" + ("&immutable=1" if immutable else "")


def connect_read_only(
    path: str | Path, *, timeout: float = 5.0, check_same_thread: bool = True
) -> sqlite3.Connection:
    """A connection to the existing SQLite file `path` that can only read.

    Raises ``sqlite3.OperationalError`` when the file does not exist (it is never
    created) or cannot be opened; ``sqlite3.DatabaseError`` surfaces on the first query
    when the file is not a database.
    """
    target = Path(path)
    if not target.is_file():
        raise sqlite3.OperationalError(f"unable to open database file: {target} does not exist")
    immutable = on_read_only_file_system(target) or not os.access(target.parent, os.W_OK)
    if immutable:
        _warn_unread_log(target)
    return sqlite3.connect(
        _uri(target, immutable=immutable),
        uri=True,
        timeout=timeout,
        check_same_thread=check_same_thread,
        isolation_level=None,
    )


def _warn_unread_log(target: Path) -> None:
    wal = target.with_name(target.name + "-wal")
    try:
        size = wal.stat().st_size
    except OSError:
        return
    if size:
        _log.warning(
            "%s is on a read-only file system with %d bytes of unmerged writes in %s; "
            "they cannot be read there (copy the store to a writable place to see them)",
            target,
            size,
            wal.name,
        )


MAX_DESCRIPTION_BYTES = 16 * 1024 * 1024
"""A ``pipeline.json`` larger than this is not read (``describe()`` output is far smaller)."""


def read_description(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A pipeline's ``pipeline.json`` (its ``describe()``) and, when it cannot be used, why.

    Returns ``(description, None)``, ``(None, None)`` when the file does not exist, or
    ``(None, reason)`` for a file that is unreadable, too large, not JSON, nested too
    deeply to parse, or not a JSON object. Never raises for what the file holds.
    """
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_DESCRIPTION_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path.name} cannot be read: {exc.strerror or exc}"
    if len(raw) > MAX_DESCRIPTION_BYTES:
        return None, f"{path.name} is larger than {MAX_DESCRIPTION_BYTES // 2**20} MiB"
    try:
        described = json.loads(raw.decode("utf-8"))
    except RecursionError:
        return None, f"{path.name} is nested too deeply to read"
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} is not valid JSON: {exc}"
    if not isinstance(described, dict):
        return None, f"{path.name} does not hold a JSON object"
    return described, None
