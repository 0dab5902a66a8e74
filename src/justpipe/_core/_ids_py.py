"""Counters of one run: invocation ids and per-step attempts.

Pure-Python twin of `_ids.pyx`; both must behave identically (tests/test_core_parity.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["AttemptCounter", "InvocationIds", "check_seed"]


def check_seed(what: str, value: Any) -> int:
    """`value` as a counter seed (an int >= 0), or TypeError/ValueError naming `what`."""
    if type(value) is not int:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


class InvocationIds:
    """Invocation ids of one run: `next()` returns `"<run_id>:1"`, `"<run_id>:2"`, ..."""

    __slots__ = ("_count", "_prefix")

    def __init__(self, run_id: str) -> None:
        self._prefix = f"{run_id}:"
        self._count = 0

    def next(self) -> str:
        """Issue the next invocation id."""
        self._count += 1
        return f"{self._prefix}{self._count}"

    def snapshot(self) -> int:
        """How many ids were issued (a durable run's checkpoint keeps it)."""
        return self._count

    def restore(self, count: int) -> None:
        """Continue after `count` issued ids (a resumed durable run): the next is count + 1."""
        self._count = check_seed("InvocationIds.restore(count)", count)


class AttemptCounter:
    """Attempt numbers counted per name: `next(name)` returns 1, 2, 3, ... for each name."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def next(self, name: str) -> int:
        """Count one more attempt of `name` and return its number."""
        attempt = self._counts.get(name, 0) + 1
        self._counts[name] = attempt
        return attempt

    def snapshot(self, names: Iterable[str] | None = None) -> dict[str, int]:
        """A copy of the counts per name (a durable run's checkpoint keeps it).

        With `names`: only those names' counts (names never counted are left out), so a
        checkpoint can save the counts that changed at a cost independent of the others.
        """
        counts = self._counts
        if names is None:
            return dict(counts)
        return {name: counts[name] for name in names if name in counts}

    def restore(self, counts: dict[str, int]) -> None:
        """Replace the counts (a resumed durable run continues from its checkpoint's)."""
        if not isinstance(counts, dict):
            raise TypeError(
                f"AttemptCounter.restore(counts) needs a dict, got {type(counts).__name__}"
            )
        restored: dict[str, int] = {}
        for name, count in counts.items():
            if type(name) is not str:
                raise TypeError(f"AttemptCounter.restore: names must be str, got {name!r}")
            restored[name] = check_seed(f"AttemptCounter.restore: the count of {name!r}", count)
        self._counts = restored
