# Declarations shared by the compiled core: _scheduler.pyx cimports JoinTable to mark
# arrivals without going through Python calls.

cdef enum:
    C_IGNORED = 0
    C_FIRST = 1
    C_PROGRESS = 2
    C_FIRED = 3


cdef class JoinTable:
    cdef Py_ssize_t _nodes
    cdef Py_ssize_t *_counts      # parent slots per node
    cdef Py_ssize_t *_offsets     # first slot of each node in _stamps
    cdef Py_ssize_t *_arrived     # arrivals in the current wave, per node
    cdef unsigned long long *_waves    # current wave number, per node (starts at 1)
    cdef unsigned long long *_stamps   # per slot: the wave it last arrived in (0 = never)
    cdef unsigned char *_is_any
    cdef unsigned char *_disabled

    cdef void _release(self) noexcept
    cdef Py_ssize_t _node_index(self, object node) except -1
    cdef int _mark(self, Py_ssize_t node, Py_ssize_t slot) noexcept
    cdef Py_ssize_t _checked(self, object index) except -1
