"""Counters of one run: event sequence numbers, invocation ids and per-step attempts.

Pure-Python twin of `_ids.pyx`; both must behave identically (tests/test_core_parity.py).
"""

from __future__ import annotations

__all__ = ["AttemptCounter", "InvocationIds", "Sequencer"]


class Sequencer:
    """A monotonic counter: `next()` returns 1, 2, 3, ...; `value` is the last one issued."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value = 0

    def next(self) -> int:
        """Issue the next number."""
        self._value += 1
        return self._value

    @property
    def value(self) -> int:
        """The last number issued (0 before the first `next()`)."""
        return self._value


class InvocationIds:
    """Invocation ids of one run: `next()` returns `"<run_id>:1"`, `"<run_id>:2"`, ..."""

    __slots__ = ("_count", "_prefix", "_run_id")

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._prefix = f"{run_id}:"
        self._count = 0

    def next(self) -> str:
        """Issue the next invocation id."""
        self._count += 1
        return f"{self._prefix}{self._count}"

    @property
    def count(self) -> int:
        """How many ids were issued."""
        return self._count

    @property
    def run_id(self) -> str:
        """The run the ids belong to."""
        return self._run_id


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

    def get(self, name: str) -> int:
        """The last attempt number issued for `name` (0 if none)."""
        return self._counts.get(name, 0)
