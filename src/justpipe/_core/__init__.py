"""The hot path of a run, compiled with Cython, with a pure-Python twin of every module.

This module is the one place that chooses between them:

* ``JUSTPIPE_NO_EXTENSIONS`` set to ``1``/``true``/``yes``/``on`` selects the pure twins;
* otherwise the compiled modules are imported, and the pure twins are used if that fails
  (a pure ``py3-none-any`` install, an interpreter other than CPython, a broken build).

`BACKEND` names the active backend (``"cython"`` or ``"python"``), `AVAILABLE_BACKENDS`
those importable in this install (the compiled modules are probed even when the
environment switch selects the pure ones, so `AVAILABLE_BACKENDS` stays accurate).
The runtime reads ``_core.X`` when it builds a run, so `_use()` can switch backends
in-process (the test suite runs everything on both).
Type checkers see the pure twins.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any, Final

__all__ = [
    "AVAILABLE_BACKENDS",
    "BACKEND",
    "FIRED",
    "FIRST",
    "IGNORED",
    "PROGRESS",
    "AttemptCounter",
    "ControlChannel",
    "Dispatcher",
    "EventFactory",
    "InvocationIds",
    "JoinTable",
    "MetricsRecorder",
    "Readiness",
    "RecordBuilder",
    "Shell",
    "start_eagerly",
]

NO_EXTENSIONS_ENV: Final = "JUSTPIPE_NO_EXTENSIONS"
_TRUTHY: Final = frozenset({"1", "true", "yes", "on"})

_EAGER_CORE: Final = sys.version_info < (3, 12)
"""Whether the core supplies eager task start (`_eager`): on 3.11 only, as 3.12+ has
``asyncio.Task(..., eager_start=True)``; so only 3.11 imports it and the private asyncio
names it needs."""

_MODULES: Final = (
    "_barrier",
    "_scheduler",
    "_ids",
    "_events",
    "_channel",
    "_metrics",
    "_dispatch",
) + (("_eager",) if _EAGER_CORE else ())
"""The twin pairs: compiled `NAME` (from NAME.pyx) and pure `NAME_py`."""

# Why two sources per pair, not one `.py` compiled with an augmenting `.pxd` (aiohttp's
# `reader_py.py` + `reader_c.pxd`): CMakeLists.txt compiles the `*.pyx` glob, so the
# shared source would have to sit under the compiled name (`_ids.py` + `_ids.pxd`), and a
# `.py` ships in every wheel (wheel.exclude drops .pyx/.pxd/.c): a pure install would then
# import `_core._ids` as interpreted code and report the compiled backend as available.
# And most pairs differ on purpose (C arrays in `_barrier`/`_scheduler`, C-slot
# construction in `_events`: under 20% of their lines match); the close ones are short.

_EXPORTED: Final = (
    "JoinTable",
    "Readiness",
    "InvocationIds",
    "AttemptCounter",
    "EventFactory",
    "RecordBuilder",
    "ControlChannel",
    "MetricsRecorder",
    "Dispatcher",
    "IGNORED",
    "FIRST",
    "PROGRESS",
    "FIRED",
) + (("Shell", "start_eagerly") if _EAGER_CORE else ())
"""The names every backend provides; `_use()` rebinds exactly these (and `BACKEND`)."""


def env_flag(name: str) -> bool:
    """Whether environment variable `name` is set to a truthy word (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def _namespace(backend: str) -> dict[str, Any]:
    """Import backend `backend` and return its exported names (ImportError if it is missing)."""
    suffix = {"cython": "", "python": "_py"}[backend]
    namespace: dict[str, Any] = {}
    for module_name in _MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}{suffix}")
        for name in _EXPORTED:
            if hasattr(module, name):
                namespace[name] = getattr(module, name)
    missing = [name for name in _EXPORTED if name not in namespace]
    if missing:
        raise ImportError(f"justpipe._core {backend} backend lacks {', '.join(missing)}")
    return namespace


def _probe_compiled() -> dict[str, Any] | None:
    """The compiled namespace, or None (recording why in `COMPILED_IMPORT_ERROR`)."""
    global COMPILED_IMPORT_ERROR
    if sys.implementation.name != "cpython":
        COMPILED_IMPORT_ERROR = f"not built for {sys.implementation.name}"
        return None
    try:
        return _namespace("cython")
    except ImportError as exc:
        COMPILED_IMPORT_ERROR = str(exc)
        return None


COMPILED_IMPORT_ERROR: str | None = None
"""Why the compiled backend could not be imported (None when it can)."""

_BACKENDS: Final[dict[str, dict[str, Any]]] = {"python": _namespace("python")}
_compiled = _probe_compiled()
if _compiled is not None:
    _BACKENDS["cython"] = _compiled
del _compiled

AVAILABLE_BACKENDS: Final[tuple[str, ...]] = tuple(
    name for name in ("cython", "python") if name in _BACKENDS
)
"""The backends importable in this install, compiled first."""

if TYPE_CHECKING:
    from justpipe._core._barrier_py import FIRED, FIRST, IGNORED, PROGRESS, JoinTable
    from justpipe._core._channel_py import ControlChannel
    from justpipe._core._dispatch_py import Dispatcher
    from justpipe._core._eager_py import Shell, start_eagerly
    from justpipe._core._events_py import EventFactory, RecordBuilder
    from justpipe._core._ids_py import AttemptCounter, InvocationIds
    from justpipe._core._metrics_py import MetricsRecorder
    from justpipe._core._scheduler_py import Readiness

    BACKEND: str

if sys.version_info >= (3, 12):
    # no eager core here (see `_EAGER_CORE`); the kernel starts tasks with eager_start=True
    Shell = start_eagerly = None


def _use(name: str) -> None:
    """Make backend `name` ("cython" or "python") the one this module exposes.

    Objects built before the switch keep their backend; anything built afterwards through
    ``_core.X`` gets the new one. ValueError if `name` is unknown or not importable here.
    """
    global BACKEND
    if name not in _BACKENDS:
        why = f" ({COMPILED_IMPORT_ERROR})" if name == "cython" and COMPILED_IMPORT_ERROR else ""
        raise ValueError(
            f"justpipe._core backend {name!r} is not available{why}; "
            f"available: {', '.join(AVAILABLE_BACKENDS)}"
        )
    globals().update(_BACKENDS[name])
    BACKEND = name


_use("python" if env_flag(NO_EXTENSIONS_ENV) or "cython" not in _BACKENDS else "cython")
