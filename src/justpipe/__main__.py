"""`python -m justpipe info`: which justpipe this is and which core backend it runs on.

Only `justpipe._core` is imported here (plus the package itself, which Python imports
first), so the command works, and answers fast, even where the runtime's optional
dependencies are missing.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from importlib import metadata

USAGE = "usage: python -m justpipe info"


def installed_version() -> str:
    """The installed distribution's version, else the package's own `__version__`."""
    try:
        return metadata.version("justpipe")
    except metadata.PackageNotFoundError:
        import justpipe

        return str(getattr(justpipe, "__version__", "unknown"))


def info_lines() -> list[str]:
    """The report printed by `python -m justpipe info`, one line per fact."""
    from justpipe import _core

    lines = [
        f"justpipe {installed_version()}",
        f"backend: {_core.BACKEND}",
        f"available backends: {', '.join(_core.AVAILABLE_BACKENDS)}",
    ]
    if _core.COMPILED_IMPORT_ERROR is not None:
        lines.append(f"compiled core unavailable: {_core.COMPILED_IMPORT_ERROR}")
    lines += [
        f"python: {platform.python_implementation()} {platform.python_version()}",
        f"platform: {platform.platform()} ({platform.machine()})",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line in `argv` (default: `sys.argv[1:]`); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["info"]:
        print("\n".join(info_lines()))
        return 0
    if args in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    print(USAGE, file=sys.stderr)
    if args:
        print(f"unknown command: {' '.join(args)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
