"""Switch `justpipe._core` between its compiled and pure-Python backends in-process.

The kernel reads every core class through the `justpipe._core` module when it
builds a run (`_core.EventFactory(...)`), and `_core._use(name)` rebinds those
names, so a benchmark can time the compiled and the pure backend side by side
in one session. `check_no_stale_bindings()` guards that assumption: it warns if
any `justpipe.*` module holds a direct reference to a core class of the other
backend, which would silently benchmark the wrong one if the module constructs
it (a binding used only in annotations is harmless, hence a warning, once).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "StaleBackendBinding",
    "activate",
    "available",
    "backend_namespace",
    "check_no_stale_bindings",
]


class StaleBackendBinding(UserWarning):
    """A justpipe module holds a core class of a backend other than the active one."""


_warned: set[str] = set()

CORE = "justpipe._core"
BACKENDS = ("cython", "python")


def _core() -> Any:
    from justpipe import _core

    return _core


def available(name: str) -> bool:
    """Whether backend `name` is importable in this install (the compiled one may not be)."""
    core = _core()
    return name in getattr(core, "AVAILABLE_BACKENDS", (core.BACKEND,))


def backend_namespace(name: str) -> dict[str, Any]:
    """The names `justpipe._core` exposes while backend `name` is active."""
    core = _core()
    with activate(name, check=False):
        return {k: getattr(core, k) for k in core.__all__ if hasattr(core, k)}


@contextmanager
def activate(name: str, *, check: bool = True) -> Iterator[None]:
    """Make backend `name` the one every run started inside the block uses."""
    core = _core()
    previous = core.BACKEND
    if name != previous:
        core._use(name)
    try:
        if check:
            check_no_stale_bindings(name)
        yield
    finally:
        if previous != core.BACKEND:
            core._use(previous)


def check_no_stale_bindings(name: str) -> None:
    """Warn (once per binding) if a justpipe module bound another backend's core class."""
    others = [b for b in BACKENDS if b != name and available(b)]
    if not others:
        return
    wanted = backend_namespace(name)
    foreign = {
        id(v): k
        for other in others
        for k, v in backend_namespace(other).items()
        if isinstance(v, type) and wanted.get(k) is not v
    }
    for mod_name, module in list(sys.modules.items()):
        if not mod_name.startswith("justpipe.") or mod_name.startswith(CORE):
            continue
        for attr, value in vars(module).items():
            where = f"{mod_name}.{attr}"
            if id(value) in foreign and where not in _warned:
                _warned.add(where)
                warnings.warn(
                    f"{where} is bound to another backend's {foreign[id(value)]}: if the "
                    f"module builds it, the {name} benchmarks do not measure the {name} "
                    "backend (import it under TYPE_CHECKING if it is only an annotation)",
                    StaleBackendBinding,
                    stacklevel=2,
                )
