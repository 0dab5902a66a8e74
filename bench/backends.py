"""Switch `justpipe._core` between its compiled and pure-Python backends in-process.

The kernel reads every core class through the `justpipe._core` module when it
builds a run (`_core.EventFactory(...)`), and `_core._use(name)` rebinds those
names, so a benchmark can time the compiled and the pure backend side by side
in one session. `check_no_stale_bindings()` guards that assumption: it fails if
any `justpipe.*` module holds a direct reference to a core class of the other
backend (which would silently benchmark the wrong one).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["activate", "available", "backend_namespace", "check_no_stale_bindings"]

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
    """Fail if a justpipe module bound a core class of the other backend at import."""
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
            if id(value) in foreign:
                raise RuntimeError(
                    f"{mod_name}.{attr} is bound to another backend's {foreign[id(value)]}; "
                    f"the benchmark would not measure the {name} backend"
                )
