"""justpipe's loggers, one per component, and `HideState` to keep run state out of them.

Every record justpipe logs goes to a child of the ``justpipe`` logger, so
``logging.getLogger("justpipe")`` configures them all and each component can be tuned
on its own (README "Logging", docs/compatibility.md "Logging"):

==========================  =====================================================
``justpipe.kernel``         a step that failed for good (ERROR, with the traceback
                            and, unless hidden, the run's state); an observer hook
                            that raised (ERROR)
``justpipe.executors``      a worker process replaced, a Dask call submitted
                            again (WARNING)
``justpipe.persistence``    a run that could not be stored (WARNING)
``justpipe.storage``        the run store's own notices (WARNING)
``justpipe``                `simple_logging_middleware`'s step durations (DEBUG),
                            under the name 0.12 used
==========================  =====================================================

A failed step is logged as 0.12 logged it (``Step '<name>' failed with <Type>:
<message>`` then ``State: <str(state)>``, the first 1000 characters), with
``step_name``, ``error_type`` and ``state_type`` as record attributes. A state that
holds secrets stays out of the log with `HideState`.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["EXECUTORS", "KERNEL", "PERSISTENCE", "ROOT", "STORAGE", "HideState"]

ROOT = "justpipe"
KERNEL = "justpipe.kernel"
EXECUTORS = "justpipe.executors"
PERSISTENCE = "justpipe.persistence"
STORAGE = "justpipe.storage"

STATE_CHARS = 1000  # of str(state) in a step-failure record, as in 0.12

_STEP_FAILED = "Step '%s' failed with %s: %s\nState: %s"
_STEP_FAILED_NO_STATE = "Step '%s' failed with %s: %s"

_kernel_log = logging.getLogger(KERNEL)


class HideState(logging.Filter):
    """Leaves the run's state out of justpipe's step-failure records.

    Add it to the ``justpipe.kernel`` logger (every such record passes there) or to a
    handler (it then applies to what that handler writes)::

        logging.getLogger("justpipe.kernel").addFilter(HideState())

    The record keeps its first line (step, error type, message) and its traceback; the
    ``State:`` line is dropped, and the record's ``state_type`` attribute stays.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg is _STEP_FAILED and isinstance(record.args, tuple):
            record.msg = _STEP_FAILED_NO_STATE
            record.args = record.args[:3]
        return True


def log_step_failure(step: str, error: BaseException, state: Any) -> None:
    """A step failed for good (no handler recovered): ERROR on ``justpipe.kernel``."""
    _kernel_log.error(
        _STEP_FAILED,
        step,
        type(error).__name__,
        error,
        _state_text(state),
        exc_info=(type(error), error, error.__traceback__),
        extra={
            "step_name": step,
            "error_type": type(error).__name__,
            "state_type": type(state).__name__ if state is not None else None,
        },
    )


def log_observer_error(observer: object, method: str, error: BaseException) -> None:
    """An observer hook raised (the run goes on): ERROR on ``justpipe.kernel``."""
    _kernel_log.error(
        "Observer %s.%s error: %s",
        type(observer).__name__,
        method,
        error,
        exc_info=(type(error), error, error.__traceback__),
        extra={"observer": type(observer).__name__, "method": method},
    )


def _state_text(state: Any) -> str:
    """`str(state)`, cut to `STATE_CHARS`; a state whose `str()` fails does not stop the
    failure from being reported."""
    try:
        return str(state)[:STATE_CHARS]
    except Exception as exc:
        return f"<{type(state).__name__} whose str() raised {type(exc).__name__}: {exc}>"
