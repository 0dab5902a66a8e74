"""Join bookkeeping for one run (compiled twin of `_barrier_py.py`, which documents it)."""

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.number cimport PyNumber_AsSsize_t

from operator import index as _index

from justpipe._core._barrier_py import _ints

__all__ = ["FIRED", "FIRST", "IGNORED", "PROGRESS", "JoinTable"]

IGNORED = C_IGNORED
FIRST = C_FIRST
PROGRESS = C_PROGRESS
FIRED = C_FIRED


cdef void *_zeroed(Py_ssize_t count, size_t size) except NULL:
    """Zeroed memory for `count` items (at least one, so an empty table is not NULL)."""
    cdef void *block = PyMem_Calloc(count if count > 0 else 1, size)
    if block == NULL:
        raise MemoryError()
    return block


cdef class JoinTable:
    """Parent-arrival tracking for every join node of one run (see `_barrier_py.JoinTable`)."""

    def __cinit__(self):
        self._nodes = 0

    def __init__(self, slot_counts, any_flags):
        cdef list counts = [int(c) for c in slot_counts]
        cdef list flags = [bool(f) for f in any_flags]
        cdef Py_ssize_t nodes = len(counts)
        cdef Py_ssize_t node, count, total = 0
        if nodes != len(flags):
            raise ValueError(
                f"slot_counts has {nodes} nodes but any_flags has {len(flags)}"
            )
        for node in range(nodes):
            if counts[node] < 0:
                raise ValueError(f"node {node} has a negative slot count ({counts[node]})")
        self._release()
        self._counts = <Py_ssize_t *>_zeroed(nodes, sizeof(Py_ssize_t))
        self._offsets = <Py_ssize_t *>_zeroed(nodes, sizeof(Py_ssize_t))
        self._arrived = <Py_ssize_t *>_zeroed(nodes, sizeof(Py_ssize_t))
        self._waves = <unsigned long long *>_zeroed(nodes, sizeof(unsigned long long))
        self._is_any = <unsigned char *>_zeroed(nodes, sizeof(unsigned char))
        self._disabled = <unsigned char *>_zeroed(nodes, sizeof(unsigned char))
        for node in range(nodes):
            count = counts[node]
            self._counts[node] = count
            self._offsets[node] = total
            self._waves[node] = 1
            self._is_any[node] = flags[node]
            total += count
        self._stamps = <unsigned long long *>_zeroed(total, sizeof(unsigned long long))
        self._nodes = nodes

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        PyMem_Free(self._counts)
        PyMem_Free(self._offsets)
        PyMem_Free(self._arrived)
        PyMem_Free(self._waves)
        PyMem_Free(self._stamps)
        PyMem_Free(self._is_any)
        PyMem_Free(self._disabled)
        self._counts = self._offsets = self._arrived = NULL
        self._waves = self._stamps = NULL
        self._is_any = self._disabled = NULL
        self._nodes = 0

    cdef Py_ssize_t _node_index(self, object node) except -1:
        cdef Py_ssize_t index = PyNumber_AsSsize_t(node, IndexError)
        if index < 0 or index >= self._nodes:
            raise IndexError(f"node {node} out of range (0..{self._nodes - 1})")
        return index

    cdef int _mark(self, Py_ssize_t node, Py_ssize_t slot) noexcept:
        """`mark()` for indexes already known to be valid."""
        cdef unsigned long long wave
        cdef Py_ssize_t index, arrived
        cdef bint complete
        if self._disabled[node]:
            return C_IGNORED
        wave = self._waves[node]
        index = self._offsets[node] + slot
        if self._stamps[index] == wave:
            return C_IGNORED
        self._stamps[index] = wave
        arrived = self._arrived[node] + 1
        complete = arrived == self._counts[node]
        if complete:
            self._arrived[node] = 0
            self._waves[node] = wave + 1
        else:
            self._arrived[node] = arrived
        if self._is_any[node]:
            return C_FIRED if arrived == 1 else C_PROGRESS
        if complete:
            return C_FIRED
        return C_FIRST if arrived == 1 else C_PROGRESS

    def mark(self, node, slot):
        """Record that parent `slot` of `node` arrived; return IGNORED, FIRST, PROGRESS or FIRED."""
        cdef Py_ssize_t n = self._node_index(node)
        cdef Py_ssize_t s = PyNumber_AsSsize_t(slot, IndexError)
        if s < 0 or s >= self._counts[n]:
            raise IndexError(f"slot {slot} out of range for node {n} ({self._counts[n]} slots)")
        return self._mark(n, s)

    def disable(self, node):
        """Make every later `mark()` of `node` IGNORED (its barrier timed out)."""
        self._disabled[self._node_index(node)] = 1

    def snapshot(self):
        """`(arrivals, disabled)` for a later `restore()` (see `_barrier_py.JoinTable`)."""
        cdef Py_ssize_t node, slot, first
        cdef unsigned long long wave
        cdef dict arrivals = {}
        for node in range(self._nodes):
            if self._arrived[node]:
                wave = self._waves[node]
                first = self._offsets[node]
                arrivals[node] = tuple(
                    [slot for slot in range(self._counts[node]) if self._stamps[first + slot] == wave]
                )
        disabled = tuple([node for node in range(self._nodes) if self._disabled[node]])
        return arrivals, disabled

    def restore(self, arrivals, disabled=()):
        """Go on from a `snapshot()` (see `_barrier_py.JoinTable.restore`)."""
        cdef Py_ssize_t node, slot, first, count
        cdef unsigned long long wave
        if not isinstance(arrivals, dict):
            raise TypeError(
                "JoinTable.restore(arrivals) needs a dict {node: slots}, got "
                f"{type(arrivals).__name__}"
            )
        cdef list marks = []
        cdef list off = []
        for key, slots in arrivals.items():
            node = self._checked(_index(key))
            count = self._counts[node]
            got = set()
            for value in _ints(slots):
                index = _index(value)
                if not 0 <= index < count:
                    raise IndexError(
                        f"slot {index} out of range for node {node} ({count} slots)"
                    )
                got.add(index)
            if got and len(got) == count:
                raise ValueError(
                    f"node {node}: all {count} slots arrived, which ends the wave; a snapshot "
                    "never holds a complete wave"
                )
            marks.append((node, got))
        for value in _ints(disabled):
            off.append(self._checked(_index(value)))
        for node in range(self._nodes):
            self._waves[node] += 1
            self._arrived[node] = 0
            self._disabled[node] = 0
        for node, got in marks:
            wave = self._waves[node]
            first = self._offsets[node]
            for slot in got:
                self._stamps[first + slot] = wave
            self._arrived[node] = len(got)
        for node in off:
            self._disabled[node] = 1

    cdef Py_ssize_t _checked(self, object index) except -1:
        """A node index already an int: IndexError (the pure twin's message) out of range."""
        if not 0 <= index < self._nodes:
            raise IndexError(f"node {index} out of range (0..{self._nodes - 1})")
        return index
