"""Where runs are stored: ``JUSTPIPE_STORAGE_URL``, ``JUSTPIPE_STORAGE_PATH`` or the default.

Every component that reads or writes runs (persistence, durable checkpoints and
``pipe.resume()``, the CLI, the dashboard) resolves its store here, so they all agree:

* ``JUSTPIPE_STORAGE_URL=postgresql://USER:PASSWORD@HOST:PORT/DBNAME`` (or
  ``postgres://``): one PostgreSQL database for every pipeline (`PostgresLocation`);
  further libpq parameters may follow as a query string (``?sslmode=require``);
* ``JUSTPIPE_STORAGE_URL=sqlite:///ABS/PATH``: what ``JUSTPIPE_STORAGE_PATH=/ABS/PATH``
  means, one SQLite file per pipeline under that directory (`SQLiteLocation`);
* otherwise ``JUSTPIPE_STORAGE_PATH`` (``~`` expanded), else ``~/.justpipe``.

The URL wins over the path. Nothing here connects to anything or imports a driver; a
URL that cannot be used raises `StorageURLError` (a ``ValueError``) saying which forms
are accepted, and never repeats a password.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "DEFAULT_STORAGE_DIR",
    "STORAGE_PATH_ENV",
    "STORAGE_URL_ENV",
    "PostgresLocation",
    "SQLiteLocation",
    "StorageError",
    "StorageLocation",
    "StorageQueryError",
    "StorageURLError",
    "StorageUnavailableError",
    "parse_storage_url",
    "redact_url",
    "resolve_storage",
]

STORAGE_URL_ENV = "JUSTPIPE_STORAGE_URL"
STORAGE_PATH_ENV = "JUSTPIPE_STORAGE_PATH"
DEFAULT_STORAGE_DIR = "~/.justpipe"
DEFAULT_POSTGRES_PORT = 5432

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_FORMS = (
    "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (a PostgreSQL database) or "
    "sqlite:///ABSOLUTE/PATH (a directory of SQLite run stores)"
)
# libpq parameters that the URL's own parts set: a query string may not set them again
_URL_PARTS = frozenset({"host", "hostaddr", "port", "dbname", "user", "password"})


class StorageURLError(ValueError):
    """A storage URL that names no store justpipe can use (the message shows it redacted)."""


class StorageError(Exception):
    """A server run store (PostgreSQL) failed; the message names the server and what was
    being done, never the password. The tools (CLI, dashboard) report it as a store that
    cannot be used."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The store's server cannot be reached, refused the login, or dropped the connection."""


class StorageQueryError(StorageError):
    """The server refused a statement (a permission, a damaged schema...); `sqlstate` is
    the server's error code (None when it gave none)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class SQLiteLocation:
    """Runs stored as SQLite files under `root` (``<root>/<pipeline_hash>/runs.db``)."""

    root: Path

    @property
    def display(self) -> str:
        return str(self.root)


@dataclass(frozen=True)
class PostgresLocation:
    """One PostgreSQL database holding every pipeline's runs.

    `password` never appears in `display`, `repr()` or any message built from them;
    `params` are further libpq connection parameters from the URL's query string.
    """

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(default="", repr=False)
    params: tuple[tuple[str, str], ...] = ()

    @property
    def display(self) -> str:
        """``postgresql://USER@HOST:PORT/DBNAME``: what messages show (no password)."""
        user = f"{self.user}@" if self.user else ""
        return f"postgresql://{user}{_host_text(self.host)}:{self.port}/{self.dbname}"

    @property
    def server(self) -> str:
        """``host HOST, port PORT, database DBNAME``: how errors name the server."""
        return f"host {self.host}, port {self.port}, database {self.dbname}"

    def connect_kwargs(self) -> dict[str, str]:
        """The libpq connection parameters (given to the driver as keywords, never as text)."""
        kwargs = dict(self.params)
        kwargs.update(host=self.host, port=str(self.port), dbname=self.dbname)
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def redact(self, text: str) -> str:
        """`text` with this location's password replaced by ``***`` (for foreign messages)."""
        if len(self.password) >= 4:
            return text.replace(self.password, "***")
        return text


StorageLocation = SQLiteLocation | PostgresLocation


def resolve_storage(url: str | None = None) -> StorageLocation:
    """The store to use: `url` if given, else ``$JUSTPIPE_STORAGE_URL``, else the path.

    The path is ``$JUSTPIPE_STORAGE_PATH`` (``~`` expanded) or ``~/.justpipe``.
    """
    if url is None:
        url = os.environ.get(STORAGE_URL_ENV, "").strip() or None
        source = STORAGE_URL_ENV
    else:
        source = "the storage URL"
    if url is not None:
        return parse_storage_url(url, source=source)
    configured = os.environ.get(STORAGE_PATH_ENV) or DEFAULT_STORAGE_DIR
    return SQLiteLocation(Path(configured).expanduser())


def parse_storage_url(url: str, *, source: str = "the storage URL") -> StorageLocation:
    """Read a ``postgresql://`` or ``sqlite:///`` URL (see the module docstring)."""
    if not isinstance(url, str):
        raise TypeError(f"{source} must be a str, got {type(url).__name__}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return _sqlite_location(url, source)
    if scheme in _POSTGRES_SCHEMES:
        return _postgres_location(url, source)
    raise StorageURLError(
        f"{source} {redact_url(url)!r} is not a storage URL justpipe knows: use {_FORMS}."
    )


def redact_url(url: str) -> str:
    """`url` with the password of its ``user:password@`` part replaced by ``***``."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{head}://{user}:***@{hostport}{slash}{tail}"


def _sqlite_location(url: str, source: str) -> SQLiteLocation:
    rest = url[len("sqlite://") :]
    path_text, _, query = rest.partition("?")
    if query or not path_text.startswith("/"):
        raise StorageURLError(
            f"{source} {url!r}: a SQLite storage URL is sqlite:///ABSOLUTE/PATH (the directory "
            "that holds one runs.db per pipeline, as JUSTPIPE_STORAGE_PATH), with no host "
            "and no query."
        )
    path = unquote("/" + path_text.lstrip("/"))
    return SQLiteLocation(Path(path))


def _postgres_location(url: str, source: str) -> PostgresLocation:
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_POSTGRES_PORT
    except ValueError as exc:
        raise StorageURLError(f"{source} {shown!r}: {exc}; use {_FORMS}.") from None
    host = unquote(parts.hostname or "")
    dbname = unquote(parts.path.lstrip("/"))
    if not host or not dbname or "/" in dbname:
        raise StorageURLError(
            f"{source} {shown!r} must name a host and a database: "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME."
        )
    params: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _URL_PARTS:
            raise StorageURLError(
                f"{source} {shown!r}: give {name!r} in the URL itself, not in its query string."
            )
        params.append((name, value))
    return PostgresLocation(
        host=host,
        port=port,
        dbname=dbname,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        params=tuple(params),
    )


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
