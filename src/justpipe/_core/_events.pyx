"""Event construction for one run's stream (compiled twin of `_events_py.py`, which documents it).

An event is a bare instance of the event class (`object.__new__`, called through its C slot)
whose instance dict is filled in field order, key by key, so it shares the class's key table
like an instance made by `__init__`.
"""

from cpython.object cimport PyObject_GenericGetDict

from justpipe._core._events_py import EVENT_FIELDS, check_event_class, check_plain_dataclass
from justpipe._core._ids_py import check_seed

__all__ = ["EVENT_FIELDS", "EventFactory", "RecordBuilder", "check_event_class"]

cdef extern from *:
    """
    static PyObject *justpipe_bare_instance(PyObject *cls, PyObject *no_args) {
        return PyBaseObject_Type.tp_new((PyTypeObject *)cls, no_args, NULL);
    }
    """
    object _bare_instance "justpipe_bare_instance"(object cls, object no_args)

cdef tuple _NO_ARGS = ()


cdef class EventFactory:
    """Builds the events of one run's stream, numbering them 1, 2, 3, ... (`seq`)."""

    cdef object _cls
    cdef object _run_id
    cdef long long _seq

    def __init__(self, event_cls, run_id):
        check_event_class(event_cls)
        self._cls = event_cls
        self._run_id = run_id
        self._seq = 0

    def build(self, type, stage, payload, timestamp, node_kind, invocation_id,
              parent_invocation_id, owner_invocation_id, attempt, scope, meta):
        """A native event of this run (see `_events_py.EventFactory.build`)."""
        cdef object event
        cdef dict fields
        self._seq += 1
        event = _bare_instance(self._cls, _NO_ARGS)
        fields = <dict>PyObject_GenericGetDict(event, NULL)
        fields["type"] = type
        fields["stage"] = stage
        fields["payload"] = payload
        fields["timestamp"] = timestamp
        fields["run_id"] = self._run_id
        fields["origin_run_id"] = self._run_id
        fields["parent_run_id"] = None
        fields["seq"] = self._seq
        fields["node_kind"] = node_kind
        fields["invocation_id"] = invocation_id
        fields["parent_invocation_id"] = parent_invocation_id
        fields["owner_invocation_id"] = owner_invocation_id
        fields["attempt"] = attempt
        fields["scope"] = scope
        fields["meta"] = meta
        return event

    def snapshot(self):
        """The `seq` of the last event built (a durable run's checkpoint keeps it)."""
        return self._seq

    def restore(self, seq):
        """Continue numbering after `seq` (a resumed durable run: same run, seq goes on)."""
        self._seq = check_seed("EventFactory.restore(seq)", seq)

    def forward(self, child, stage, parent_invocation_id, owner_invocation_id, scope):
        """Re-emit a child pipeline's event here (see `_events_py.EventFactory.forward`)."""
        cdef object event
        cdef dict fields
        cdef object child_run_id = child.run_id
        cdef object origin = child.origin_run_id
        self._seq += 1
        event = _bare_instance(self._cls, _NO_ARGS)
        fields = <dict>PyObject_GenericGetDict(event, NULL)
        fields["type"] = child.type
        fields["stage"] = stage
        fields["payload"] = child.payload
        fields["timestamp"] = child.timestamp
        fields["run_id"] = self._run_id
        fields["origin_run_id"] = origin or child_run_id
        fields["parent_run_id"] = child_run_id
        fields["seq"] = self._seq
        fields["node_kind"] = child.node_kind
        fields["invocation_id"] = child.invocation_id
        fields["parent_invocation_id"] = parent_invocation_id
        fields["owner_invocation_id"] = owner_invocation_id
        fields["attempt"] = child.attempt
        fields["scope"] = scope
        fields["meta"] = child.meta
        return event


cdef class RecordBuilder:
    """Builds instances of a plain frozen dataclass (see `_events_py.RecordBuilder`)."""

    cdef object _cls
    cdef tuple _names

    def __init__(self, cls):
        self._names = check_plain_dataclass(cls)
        self._cls = cls

    def __call__(self, *values):
        cdef tuple names = self._names
        cdef Py_ssize_t i, n = len(names)
        cdef dict fields
        if len(values) != n:
            raise TypeError(
                f"{self._cls.__name__} needs {n} values {names}, got {len(values)}"
            )
        record = _bare_instance(self._cls, _NO_ARGS)
        fields = <dict>PyObject_GenericGetDict(record, NULL)
        for i in range(n):
            fields[names[i]] = values[i]
        return record
