"""Counters of one run: invocation ids and per-step attempts.

Pure-Python twin of `_ids.pyx`; both must behave identically (tests/test_core_parity.py).
"""

from __future__ import annotations

__all__ = ["AttemptCounter", "InvocationIds"]


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
