"""Counters of one run (compiled twin of `_ids_py.py`, which documents them)."""

__all__ = ["AttemptCounter", "InvocationIds"]


cdef class InvocationIds:
    """Invocation ids of one run: `next()` returns `"<run_id>:1"`, `"<run_id>:2"`, ..."""

    cdef str _prefix
    cdef long long _count

    def __init__(self, run_id):
        self._prefix = f"{run_id}:"
        self._count = 0

    def next(self):
        """Issue the next invocation id."""
        self._count += 1
        return f"{self._prefix}{self._count}"


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
