"""Counters of one run (compiled twin of `_ids_py.py`, which documents them)."""

from justpipe._core._ids_py import check_seed

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

    def snapshot(self):
        """How many ids were issued (a durable run's checkpoint keeps it)."""
        return self._count

    def restore(self, count):
        """Continue after `count` issued ids (a resumed durable run): the next is count + 1."""
        self._count = check_seed("InvocationIds.restore(count)", count)


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

    def snapshot(self, names=None):
        """A copy of the counts per name (a durable run's checkpoint keeps it).

        With `names`: only those names' counts (names never counted are left out), so a
        checkpoint can save the counts that changed at a cost independent of the others.
        """
        counts = self._counts
        if names is None:
            return dict(counts)
        return {name: counts[name] for name in names if name in counts}

    def restore(self, counts):
        """Replace the counts (a resumed durable run continues from its checkpoint's)."""
        if not isinstance(counts, dict):
            raise TypeError(
                f"AttemptCounter.restore(counts) needs a dict, got {type(counts).__name__}"
            )
        restored = {}
        for name, count in counts.items():
            if type(name) is not str:
                raise TypeError(f"AttemptCounter.restore: names must be str, got {name!r}")
            restored[name] = check_seed(f"AttemptCounter.restore: the count of {name!r}", count)
        self._counts = restored
