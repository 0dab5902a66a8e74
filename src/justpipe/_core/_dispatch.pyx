"""The run loop's inner dispatch (compiled twin of `_dispatch_py.py`, which documents it)."""

__all__ = ["FINISH", "START", "Dispatcher"]

START = 0
FINISH = 1


cdef class Dispatcher:
    """Turns the control channel's records into published events (see `_dispatch_py`)."""

    cdef object _pop
    cdef object _build
    cdef object _forward
    cdef object _hooks
    cdef object _record
    cdef object _notable
    cdef object _complete

    def __init__(self, channel, factory, hooks, record, notable, complete):
        self._pop = channel.pop
        self._build = factory.build
        self._forward = factory.forward
        self._hooks = hooks
        self._record = record
        self._notable = notable
        self._complete = complete

    def next(self):
        """The next published event, `START` / `FINISH`, or None when nothing is queued."""
        cdef Py_ssize_t size
        cdef tuple record
        pop = self._pop
        while True:
            item = pop()
            if item is None:
                return None
            record = <tuple?>item
            size = len(record)
            if size == 11:  # EVENT_LEN, FORWARD_LEN, DONE_LEN of `_dispatch_py`: 11, 5, 3
                event = self._build(*record)
            elif size == 3:
                self._complete(record)
                continue
            elif size == 5:
                event = self._forward(*record)
            elif size == 0:
                return START
            else:
                return FINISH
            if self._hooks is not None:
                event = self._hooks(event)
            if self._record(event):
                self._notable(event)
            return event
