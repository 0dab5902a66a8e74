"""Counters of one run (compiled twin of `_ids_py.py`, which documents them)."""

__all__ = ["AttemptCounter", "InvocationIds", "Sequencer"]


cdef class Sequencer:
    """A monotonic counter: `next()` returns 1, 2, 3, ...; `value` is the last one issued."""

    cdef long long _value

    def next(self):
        """Issue the next number."""
        self._value += 1
        return self._value

    @property
    def value(self):
        """The last number issued (0 before the first `next()`)."""
        return self._value


cdef class InvocationIds:
    """Invocation ids of one run: `next()` returns `"<run_id>:1"`, `"<run_id>:2"`, ..."""

    cdef object _run_id
    cdef str _prefix
    cdef long long _count

    def __init__(self, run_id):
        self._run_id = run_id
        self._prefix = f"{run_id}:"
        self._count = 0

    def next(self):
        """Issue the next invocation id."""
        self._count += 1
        return f"{self._prefix}{self._count}"

    @property
    def count(self):
        """How many ids were issued."""
        return self._count

    @property
    def run_id(self):
        """The run the ids belong to."""
        return self._run_id


cdef class AttemptCounter:
    """Attempt numbers counted per name: `next(name)` returns 1, 2, 3, ... for each name."""

    cdef dict _counts

    def __init__(self):
        self._counts = {}

    def next(self, name):
        """Count one more attempt of `name` and return its number."""
        attempt = self._counts.get(name, 0) + 1
        self._counts[name] = attempt
        return attempt

    def get(self, name):
        """The last attempt number issued for `name` (0 if none)."""
        return self._counts.get(name, 0)
