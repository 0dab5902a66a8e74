"""The readiness check (compiled twin of `_scheduler_py.py`, which documents it)."""

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.number cimport PyNumber_AsSsize_t

from justpipe._core._barrier cimport C_FIRED, C_FIRST, JoinTable

from justpipe._core._scheduler_py import _validated_edges

__all__ = ["Readiness"]


cdef Py_ssize_t *_allocate(Py_ssize_t count) except NULL:
    cdef Py_ssize_t *block = <Py_ssize_t *>PyMem_Malloc((count if count > 0 else 1) * sizeof(Py_ssize_t))
    if block == NULL:
        raise MemoryError()
    return block


cdef class Readiness:
    """Static successor edges plus the run's `JoinTable` (see `_scheduler_py.Readiness`).

    The edges live in three flat arrays: the edges of node `u` are the entries
    `first[u] <= e < first[u + 1]` of `target` and `slot`.
    """

    cdef readonly JoinTable table
    cdef Py_ssize_t _nodes
    cdef Py_ssize_t *_first
    cdef Py_ssize_t *_target
    cdef Py_ssize_t *_slot

    def __init__(self, successors, slot_counts, any_flags):
        cdef list rows = _validated_edges(successors, slot_counts)
        cdef JoinTable table = JoinTable(slot_counts, any_flags)
        cdef Py_ssize_t nodes = len(rows)
        cdef Py_ssize_t edges = sum([len(row) for row in rows])
        cdef Py_ssize_t u, e = 0
        self._release()
        self._first = _allocate(nodes + 1)
        self._target = _allocate(edges)
        self._slot = _allocate(edges)
        for u in range(nodes):
            self._first[u] = e
            for v, slot in rows[u]:
                self._target[e] = v
                self._slot[e] = slot
                e += 1
        self._first[nodes] = e
        self._nodes = nodes
        self.table = table

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        PyMem_Free(self._first)
        PyMem_Free(self._target)
        PyMem_Free(self._slot)
        self._first = self._target = self._slot = NULL
        self._nodes = 0

    def complete(self, node):
        """Mark `node`'s arrival at each successor; the FIRED (`v`) and FIRST (`~v`) ones."""
        cdef Py_ssize_t u = PyNumber_AsSsize_t(node, IndexError)
        cdef Py_ssize_t e, v
        cdef int result
        cdef list ready = []
        if u < 0 or u >= self._nodes:
            raise IndexError(f"node {node} out of range (0..{self._nodes - 1})")
        for e in range(self._first[u], self._first[u + 1]):
            v = self._target[e]
            result = self.table._mark(v, self._slot[e])
            if result == C_FIRED:
                ready.append(v)
            elif result == C_FIRST:
                ready.append(~v)
        return ready
