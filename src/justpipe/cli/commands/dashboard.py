"""``justpipe dashboard``: the web dashboard is not part of this build.

The command still exists so scripts and muscle memory get a clear answer: how to
install the dashboard's dependencies when they are missing, and that this build does
not bundle the dashboard when they are present. Both end with a non-zero status.
"""

from __future__ import annotations

import importlib.util
import sys

from justpipe.cli.formatting import EXIT_FAILURE
from justpipe.cli.registry import PipelineRegistry

__all__ = ["dashboard_command"]

DASHBOARD_DEPENDENCIES = ("fastapi", "uvicorn")


def dashboard_command(registry: PipelineRegistry, port: int = 8741, no_open: bool = False) -> int:
    """Explain why no dashboard starts; never serves anything."""
    missing = [name for name in DASHBOARD_DEPENDENCIES if importlib.util.find_spec(name) is None]
    if missing:
        print("Dashboard requires extra dependencies. Install with:")
        print('  pip install "justpipe[dashboard]"')
        return EXIT_FAILURE
    print(
        "The web dashboard is not bundled in this build of justpipe; "
        "use 'justpipe list', 'show', 'timeline' and 'stats' instead.",
        file=sys.stderr,
    )
    return EXIT_FAILURE
