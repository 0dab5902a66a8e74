"""Optional extras in tests: skip locally when one is missing, fail where it is required.

Tests of a feature that lives behind an optional extra (`justpipe[dask]`, `[ray]`,
`[otel]`, `[dashboard]`) import its third-party modules through `require()`. Where
the set-up installs the extras (`make test` on the main interpreter sets
``JUSTPIPE_EXTRAS_REQUIRED=1``), a missing module fails the test, so a broken set-up
cannot pass by skipping; elsewhere (a bare venv, a secondary Python that runs the
core suite only) the test is skipped with the reason shown.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRED_ENV = "JUSTPIPE_EXTRAS_REQUIRED"


def extras_required() -> bool:
    return os.environ.get(REQUIRED_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def require(module: str, extra: str) -> ModuleType:
    """Import `module` (from the `justpipe[extra]` extra): skip, or fail where required."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not installed (pip install 'justpipe[{extra}]'): {exc}"
        if extras_required():
            pytest.fail(f"{reason}; {REQUIRED_ENV}=1 demands it", pytrace=False)
        # also at a test module's top level (`require(...)` before its imports): the
        # whole module is skipped then
        pytest.skip(reason, allow_module_level=True)
