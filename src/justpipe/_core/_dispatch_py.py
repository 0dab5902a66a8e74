"""The run loop's inner dispatch (pure-Python twin of `_dispatch.pyx`).

The run's loop is the only consumer of the control channel. `Dispatcher.next()`
does what it does for every record until one gives the consumer an event:

* an event record (11 items) is built once, with its final seq, by the run's
  `EventFactory`; the run's event hooks (if any) transform it; the metrics
  recorder reads it, and a failure or cancellation goes on to the publisher's
  `notable` (the failure journal). The event is returned;
* a forwarded child event (5 items) is re-stamped into this run the same way;
* a completion (3 items) goes to the orchestrator's `complete` and the next
  record is taken;
* the two markers are returned as codes for the loop to act on: `START`
  (schedule the roots) and `FINISH` (publish the run's FINISH);
* `None` when the channel is empty (the loop waits, or shuts the run down).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FINISH", "START", "Dispatcher"]

START = 0  # the record `()`: schedule the roots
FINISH = 1  # the record `(None,)`: publish FINISH
EVENT_LEN, FORWARD_LEN, DONE_LEN = 11, 5, 3


class Dispatcher:
    """Turns the control channel's records into published events (see the module)."""

    __slots__ = ("_pop", "_build", "_forward", "_hooks", "_record", "_notable", "_complete")

    def __init__(
        self,
        channel: Any,
        factory: Any,
        hooks: Callable[[Any], Any] | None,
        record: Callable[[Any], bool],
        notable: Callable[[Any], None],
        complete: Callable[[tuple[Any, ...]], None],
    ) -> None:
        self._pop = channel.pop
        self._build = factory.build
        self._forward = factory.forward
        self._hooks = hooks
        self._record = record
        self._notable = notable
        self._complete = complete

    def next(self) -> Any:
        """The next published event, `START` / `FINISH`, or None when nothing is queued."""
        pop = self._pop
        while True:
            item = pop()
            if item is None:
                return None
            size = len(item)
            if size == EVENT_LEN:
                event = self._build(*item)
            elif size == DONE_LEN:
                self._complete(item)
                continue
            elif size == FORWARD_LEN:
                event = self._forward(*item)
            elif size == 0:
                return START
            else:
                return FINISH
            if self._hooks is not None:
                event = self._hooks(event)
            if self._record(event):
                self._notable(event)
            return event
