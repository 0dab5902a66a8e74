"""Checks of public parameters, shared by `Pipe`, its decorators, `run()` and the executors.

Each check raises `TypeError` (wrong kind of value) or `ValueError` (right kind, bad
value) whose message names the parameter as the caller wrote it (`subject`, e.g.
``"run(timeout=...)"`` or ``"Step 'fetch': timeout="``), the value it got and what to
pass instead. The decorators turn these into `DefinitionError`s naming the step.

What is accepted follows justpipe 0.12 wherever 0.12 did something sensible with a
value (e.g. an infinite timeout means no limit, `1`/`0` work as flags); what it
accepted and then misbehaved on (a NaN timeout that expires at once, the string
``"false"`` switching a flag on) is refused here, before anything runs.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_callable", "check_count", "check_flag", "check_name", "check_seconds"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_seconds(
    value: Any,
    subject: str,
    *,
    allow_none: bool = True,
    allow_zero: bool = False,
    maximum: float = math.inf,
) -> None:
    """A duration in seconds: an int or float > 0 (>= 0 with `allow_zero`), never NaN.

    `math.inf` is accepted and means no limit, as in 0.12, unless a `maximum` (what a
    thread timer can wait) says otherwise.
    """
    if value is None and allow_none:
        return
    bound = ">= 0" if allow_zero else "> 0"
    none_hint = ", or None for no limit" if allow_none else ""
    if not _is_number(value):
        raise TypeError(
            f"{subject} must be a number of seconds {bound}{none_hint}, got "
            f"{type(value).__name__}: {value!r}. Pass e.g. 30 or 2.5."
        )
    if isinstance(value, int) and not _fits_a_float(value):
        raise ValueError(
            f"{subject} must be a number of seconds {bound}{none_hint}, got an int too large "
            "for a float (no timer can count it). Pass math.inf for no limit."
        )
    if math.isnan(value):
        raise ValueError(
            f"{subject} must be a number of seconds {bound}{none_hint}, got NaN (not a "
            "number, so no duration). Check how the value is computed."
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"{subject} must be a number of seconds {bound}{none_hint}, got {value!r}."
        )
    if value > maximum:
        raise ValueError(f"{subject} must be at most {maximum:g} seconds, got {value!r}.")


def _fits_a_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def check_count(value: Any, subject: str, *, minimum: int, allow_none: bool = False) -> None:
    """A whole number >= `minimum` (an int, not a bool or a float)."""
    if value is None and allow_none:
        return
    none_hint = " or None" if allow_none else ""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"{subject} must be an int >= {minimum}{none_hint}, got "
            f"{type(value).__name__}: {value!r}."
        )
    if value < minimum:
        raise ValueError(f"{subject} must be an int >= {minimum}{none_hint}, got {value}.")


def check_flag(value: Any, subject: str, *, allow_none: bool = False) -> None:
    """A flag: True or False (1 and 0 too, which 0.12 treated the same way).

    Anything else is refused: 0.12 took any truthy value as True, so the string
    ``"false"`` switched the option on.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return
    none_hint = " (or None for the default)" if allow_none else ""
    raise TypeError(
        f"{subject} must be True or False{none_hint}, got {type(value).__name__}: {value!r}."
        + (" A non-empty string counts as True: pass the bool." if isinstance(value, str) else "")
    )


def check_name(value: Any, subject: str) -> None:
    """A name: a non-empty string."""
    if not isinstance(value, str):
        raise TypeError(
            f"{subject} must be a non-empty string, got {type(value).__name__}: {value!r}."
        )
    if not value:
        raise ValueError(f"{subject} must be a non-empty string, got ''. Pass a name, e.g. 'etl'.")


def check_callable(value: Any, subject: str, *, allow_none: bool = True, shape: str = "") -> None:
    """A function (or any callable); `shape` describes what it is called with."""
    if value is None and allow_none:
        return
    if not callable(value):
        raise TypeError(
            f"{subject} must be a function{' ' + shape if shape else ''}, got "
            f"{type(value).__name__}: {value!r}."
        )
