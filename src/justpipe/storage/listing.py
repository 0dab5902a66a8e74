"""Listing a pipeline's runs in the database: pages, counts and statistics without loading
every run (the dashboard's list pages, ``justpipe list --status``).

A run's status (``storage.status.run_status``) comes from its row, its lease and, for a
durable run, its checkpoint; a lease's liveness needs Python (is that process alive?).
But most rows are *settled*: they ended, are not a durable run still waiting, and every
time in them can be read. Their status is their row's status (``failed`` for an unknown
one), which SQL can filter, count and page. The few others, the *unsettled* rows (still
``running``, a durable run not finished, a time that may be unreadable), are read whole
and classified in Python. `RunListing` is that split for one store (SQL that SQLite and
PostgreSQL share, `Dialect` says how they differ); the registry merges the two parts
(``cli.registry``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from justpipe.storage.interface import _FIRST_EPOCH, _LAST_EPOCH, RunRecord
from justpipe.storage.sqlite import RUNNING_STATUS, NamedRow, _row_to_run
from justpipe.types import PipelineTerminalStatus

__all__ = ["Dialect", "RunListing", "Totals"]

ROW_STATUSES = tuple(status.value for status in PipelineTerminalStatus)
_LONGEST_S = 8.6e13  # a duration a timedelta can hold (999,999,999 days), rounded down


@dataclass(frozen=True)
class Dialect:
    """How one store's SQL differs: its tables, its rows, its placeholders, its dates.

    `columns`: the select list of a run row (``storage.sqlite._row_to_run`` reads it);
    `scope`: the condition that selects this pipeline's rows (with `scope_params`);
    `number`: a condition that a column (``{c}``) holds a number (typed columns: TRUE);
    `day`: the UTC date (``YYYY-MM-DD``) of ``start_time``; `tiebreak`: the column that
    orders rows with the same start time, newest first (insertion order).
    """

    runs: str
    columns: str
    checkpoints: str | None
    scope: str
    scope_params: tuple[object, ...]
    mark: str
    number: str
    day: str
    tiebreak: str


@dataclass(frozen=True)
class Totals:
    """The settled rows of one row status: how many, and their durations."""

    count: int
    durations: int
    duration_sum: float
    duration_min: float | None
    duration_max: float | None


Query = Callable[[str, str, Sequence[object]], Sequence[NamedRow]]
"""Runs one read (`action` for errors, SQL, parameters) and returns its rows."""


class RunListing:
    """One store's runs of one pipeline, listed in SQL (see the module docstring)."""

    def __init__(self, dialect: Dialect, query: Query) -> None:
        self.dialect = dialect
        self._query = query
        d = dialect
        mark = d.mark

        def readable(column: str, low: float, high: float) -> str:
            number = d.number.format(c=column)
            return f"({column} IS NOT NULL AND {number} AND {column} BETWEEN {low!r} AND {high!r})"

        unsettled = [
            f"COALESCE(status, '') = '{RUNNING_STATUS}'",
            f"NOT {readable('start_time', _FIRST_EPOCH, _LAST_EPOCH)}",
            f"(end_time IS NOT NULL AND NOT {readable('end_time', _FIRST_EPOCH, _LAST_EPOCH)})",
            f"(duration_s IS NOT NULL AND NOT {readable('duration_s', -_LONGEST_S, _LONGEST_S)})",
        ]
        if d.checkpoints is not None:
            unsettled.append(
                f"run_id IN (SELECT run_id FROM {d.checkpoints} WHERE status <> 'finished')"
            )
        self._unsettled = "(" + " OR ".join(unsettled) + ")"
        known = ", ".join(f"'{status}'" for status in ROW_STATUSES)
        # a settled row's status: its row's, an unknown or NULL one read as failed
        self._group = f"CASE WHEN status IN ({known}) THEN status ELSE 'failed' END"
        self._settled = f"{d.scope} AND NOT {self._unsettled}"
        self._order = f"ORDER BY start_time DESC, {d.tiebreak} DESC"
        self._mark = mark

    # -- the unsettled rows ---------------------------------------------------------

    def unsettled(self) -> list[RunRecord]:
        """Every row whose status Python must work out, newest first."""
        d = self.dialect
        rows = self._query(
            "list unsettled runs",
            f"SELECT {d.columns} FROM {d.runs} WHERE {d.scope} AND {self._unsettled}"
            f" {self._order}",
            d.scope_params,
        )
        return [_row_to_run(row) for row in rows]

    # -- the settled rows -----------------------------------------------------------

    def runs(
        self,
        statuses: Sequence[str] | None,
        limit: int,
        offset: int,
        since: float | None = None,
        with_duration: bool = False,
    ) -> list[RunRecord]:
        """Settled rows (of these row `statuses`; started at `since` or later), newest first."""
        where, params = self._where(statuses, since)
        if with_duration:
            where += " AND duration_s IS NOT NULL"
        rows = self._query(
            "list runs",
            f"SELECT {self.dialect.columns} FROM {self.dialect.runs} WHERE {where} {self._order}"
            f" LIMIT {self._mark} OFFSET {self._mark}",
            (*params, limit, offset),
        )
        return [_row_to_run(row) for row in rows]

    def count(self, statuses: Sequence[str] | None) -> int:
        where, params = self._where(statuses, None)
        rows = self._query(
            "count runs", f"SELECT COUNT(*) AS n FROM {self.dialect.runs} WHERE {where}", params
        )
        return int(rows[0]["n"])

    def totals(self, since: float | None = None) -> dict[str, Totals]:
        """Per row status of the settled rows (started at `since` or later): `Totals`."""
        where, params = self._where(None, since)
        rows = self._query(
            "count runs",
            f"SELECT {self._group} AS status, COUNT(*) AS n, COUNT(duration_s) AS timed,"
            " SUM(duration_s) AS total, MIN(duration_s) AS shortest,"
            f" MAX(duration_s) AS longest FROM {self.dialect.runs} WHERE {where}"
            f" GROUP BY {self._group}",
            params,
        )
        return {
            str(row["status"]): Totals(
                int(row["n"]),
                int(row["timed"]),
                float(row["total"] or 0.0),
                None if row["shortest"] is None else float(row["shortest"]),
                None if row["longest"] is None else float(row["longest"]),
            )
            for row in rows
        }

    def daily(self, since: float) -> list[tuple[str, str, int]]:
        """``(UTC date, row status, runs)`` of the settled rows started at `since` or later."""
        where, params = self._where(None, since)
        day = self.dialect.day
        rows = self._query(
            "count runs per day",
            f"SELECT {day} AS day, {self._group} AS status, COUNT(*) AS n"
            f" FROM {self.dialect.runs} WHERE {where} GROUP BY {day}, {self._group}",
            params,
        )
        return [(str(row["day"]), str(row["status"]), int(row["n"])) for row in rows]

    def failing_steps(self, statuses: Sequence[str], since: float) -> list[tuple[str | None, int]]:
        """``(error step, runs)`` of the settled rows of `statuses` started since `since`."""
        where, params = self._where(statuses, since)
        rows = self._query(
            "count failing steps",
            # (through the select list: an older file may lack the column)
            f"SELECT error_step, COUNT(*) AS n FROM (SELECT {self.dialect.columns}"
            f" FROM {self.dialect.runs} WHERE {where}) AS failed GROUP BY error_step",
            params,
        )
        return [(_text(row["error_step"]), int(row["n"])) for row in rows]

    def _where(
        self, statuses: Sequence[str] | None, since: float | None
    ) -> tuple[str, tuple[object, ...]]:
        where = self._settled
        params: tuple[object, ...] = self.dialect.scope_params
        if statuses is not None:
            wanted = list(dict.fromkeys(statuses))
            if not wanted:
                return "1 = 0", ()
            where += f" AND {self._group} IN ({', '.join(self._mark for _ in wanted)})"
            params += tuple(wanted)
        if since is not None:
            where += f" AND start_time >= {self._mark}"
            params += (since,)
        return where, params


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
