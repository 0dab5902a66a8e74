"""Reading a store directory without changing it: the SQLite file and ``pipeline.json``.

:func:`connect_read_only` is the one place the tools connect to a store they read;
:func:`read_description` reads a pipeline's ``pipeline.json`` whatever it holds, and
:func:`parse_stored_json` any JSON text a store holds (events, run meta).

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
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = [
    "MAX_JSON_DEPTH",
    "connect_read_only",
    "on_read_only_file_system",
    "parse_stored_json",
    "read_description",
]

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
        raw = _read_regular_file(path, MAX_DESCRIPTION_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path.name} cannot be read: {exc.strerror or exc}"
    if raw is None:
        return None, f"{path.name} is not a regular file"
    if len(raw) > MAX_DESCRIPTION_BYTES:
        return None, f"{path.name} is larger than {MAX_DESCRIPTION_BYTES // 2**20} MiB"
    try:
        described = _loads(raw.decode("utf-8"))
    except RecursionError:
        return None, f"{path.name} is nested too deeply to read"
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} is not valid JSON: {exc}"
    if _nested_deeper_than(described, MAX_JSON_DEPTH):
        return None, f"{path.name} is nested too deeply to read"
    if not isinstance(described, dict):
        return None, f"{path.name} does not hold a JSON object"
    return described, None


def _read_regular_file(path: Path, limit: int) -> bytes | None:
    """Up to `limit` bytes of `path`; None when it is not a regular file.

    Opened without blocking and checked before reading, so a FIFO (which blocks an open
    until a writer comes) or a device never stalls the tools.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(descriptor, "rb", closefd=True) as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        return stream.read(limit)


MAX_JSON_DEPTH = 200
"""Stored JSON nested deeper than this is not used (rendering it would recurse too far)."""


def parse_stored_json(text: object, default: Any = None) -> Any:
    """The value of JSON text read from a store, or `default` when it has none.

    Never raises, whatever the column held: text that is not JSON, nested deeper than
    :data:`MAX_JSON_DEPTH` (or than Python can parse), a BLOB that is not UTF-8 or a
    non-text value gives `default`. Numbers no float can hold (``1e400``) and the
    non-standard ``NaN`` / ``Infinity`` come back as their text, so what is read can
    always be written as JSON again.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return default
    if not isinstance(text, str):
        return default
    try:
        value = _loads(text)
    except (ValueError, RecursionError):
        return default
    if _bracket_count(text) > MAX_JSON_DEPTH and _nested_deeper_than(value, MAX_JSON_DEPTH):
        return default
    return value


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=_finite_float, parse_constant=str)


def _finite_float(text: str) -> float | str:
    value = float(text)
    return value if value - value == 0 else text  # inf - inf is NaN


def _bracket_count(text: str) -> int:
    return text.count("[") + text.count("{")


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and dicts nest more than `limit` levels in `value` (no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return False
