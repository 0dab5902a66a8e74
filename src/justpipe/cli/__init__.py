"""The ``justpipe`` command line: inspect, compare, export and clean up persisted runs.

The CLI is an optional extra (``pip install "justpipe[cli]"``: click and rich). This
package imports neither, so ``justpipe.cli.registry`` and ``justpipe.cli.formatting``
stay usable without them; only ``justpipe.cli.main`` needs click.
"""

from __future__ import annotations

import sys
from types import TracebackType

CLI_INSTALL_HINT = (
    "The justpipe CLI needs its optional dependencies. "
    'Install them with: pip install "justpipe[cli]"'
)


def report_uncaught_cleanly(error: BaseException) -> None:
    """Make an uncaught `error` print as one line on stderr instead of a traceback.

    ``justpipe.cli.main`` must raise ``ImportError`` when click is missing (code that
    imports it may catch that), yet the console script imports it at top level, where
    an uncaught error would dump a traceback. Chaining ``sys.excepthook`` for exactly
    this exception object serves both: callers still see the exception, and the
    console script exits non-zero (status 1) with the message alone.
    """
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if exc is error:
            print(f"Error: {error}", file=sys.stderr)
        else:
            previous(exc_type, exc, tb)

    sys.excepthook = hook
