"""Switch `justpipe._core` between its compiled and pure-Python backends in-process.

The kernel reads every core class through the `justpipe._core` module at run
time (`_core.EventFactory(...)`, built per run), so a benchmark can time the
compiled and the pure backend side by side in one session: `activate("python")`
loads the selection module once more with ``JUSTPIPE_NO_EXTENSIONS=1`` and
copies its public names onto the live `justpipe._core` until the context exits.
`check_no_stale_bindings()` guards that assumption: it fails if any `justpipe.*`
module holds a direct reference to a core object of the other backend (which
would silently benchmark the wrong one).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["activate", "available", "backend_namespace", "check_no_stale_bindings"]

CORE = "justpipe._core"
NO_EXT = "JUSTPIPE_NO_EXTENSIONS"
_cache: dict[str, dict[str, Any]] = {}


def _load(pure: bool) -> dict[str, Any]:
    """Execute `justpipe/_core/__init__.py` into a fresh namespace under the env switch."""
    loaded = sys.modules.get(CORE)
    spec = importlib.util.find_spec(CORE) if getattr(loaded, "__spec__", True) else None
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        # a stand-in core without a package (development shim): only one backend
        core = sys.modules[CORE]
        return {k: v for k, v in vars(core).items() if not k.startswith("__")}
    saved = os.environ.get(NO_EXT)
    try:
        if pure:
            os.environ[NO_EXT] = "1"
        else:
            os.environ.pop(NO_EXT, None)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            os.environ.pop(NO_EXT, None)
        else:
            os.environ[NO_EXT] = saved
    return {k: v for k, v in vars(module).items() if not k.startswith("__")}


def backend_namespace(name: str) -> dict[str, Any]:
    """The public names of backend `name` ("cython" or "python"), loaded once."""
    if name not in _cache:
        _cache[name] = _load(pure=name == "python")
    return _cache[name]


def available(name: str) -> bool:
    """Whether backend `name` can be loaded (the compiled one may not be built)."""
    backend = backend_namespace(name).get("BACKEND")
    return backend == "python" if name == "python" else backend not in (None, "python")


@contextmanager
def activate(name: str) -> Iterator[None]:
    """Make backend `name` the one every run started inside the block uses."""
    core = importlib.import_module(CORE)
    wanted = backend_namespace(name)
    saved = {k: getattr(core, k) for k in wanted if hasattr(core, k)}
    for key, value in wanted.items():
        setattr(core, key, value)
    try:
        check_no_stale_bindings(name)
        yield
    finally:
        for key, value in saved.items():
            setattr(core, key, value)


def _other(name: str) -> str:
    return "python" if name == "cython" else "cython"


def check_no_stale_bindings(name: str) -> None:
    """Fail if a justpipe module bound a core object of the other backend at import."""
    other = _other(name)
    if not available(other):
        return
    wanted = backend_namespace(name)
    foreign = {
        id(v): k
        for k, v in backend_namespace(other).items()
        if isinstance(v, type) and wanted.get(k) is not v
    }
    for mod_name, module in list(sys.modules.items()):
        if not mod_name.startswith("justpipe.") or mod_name.startswith(CORE):
            continue
        for attr, value in vars(module).items():
            if id(value) in foreign:
                raise RuntimeError(
                    f"{mod_name}.{attr} is bound to the {other} backend's "
                    f"{foreign[id(value)]}; the benchmark would not measure the {name} backend"
                )
