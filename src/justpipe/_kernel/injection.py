"""Dependency injection: which value each parameter of a user function receives (spec §5).

Analysis runs once per function at registration; at run time the kernel turns the
result into a prebuilt keyword dict per step, so no per-call inspection happens.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from justpipe.types import CancellationToken, DefinitionError, InjectionSource

__all__ = [
    "HOOK_UNKNOWN_ALLOWED",
    "STEP_UNKNOWN_ALLOWED",
    "OnResultInjection",
    "analyze",
    "analyze_on_result",
    "resolve_name",
]

STEP_UNKNOWN_ALLOWED = 1
HOOK_UNKNOWN_ALLOWED = 0

_NAME_FALLBACK: dict[str, InjectionSource] = {
    "s": InjectionSource.STATE,
    "state": InjectionSource.STATE,
    "c": InjectionSource.CONTEXT,
    "ctx": InjectionSource.CONTEXT,
    "context": InjectionSource.CONTEXT,
    "e": InjectionSource.ERROR,
    "error": InjectionSource.ERROR,
    "exception": InjectionSource.ERROR,
    "step_name": InjectionSource.STEP_NAME,
    "stage": InjectionSource.STEP_NAME,
    "cancel": InjectionSource.CANCEL,
    "cancellation_token": InjectionSource.CANCEL,
}

_SKIPPED_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def resolve_name(target: Any) -> str:
    """The step name a target refers to: a string as is, else the callable's name."""
    if isinstance(target, str):
        return target
    inner = getattr(target, "func", None)
    if inner is not None and hasattr(inner, "__name__"):
        return str(inner.__name__)
    name = getattr(target, "__name__", None)
    if isinstance(name, str):
        return name
    if callable(target):
        return type(target).__name__
    raise ValueError(
        f"Cannot resolve a step name for {target!r}: pass a step name (str) or a function."
    )


def _matches(runtime_type: type, annotation: Any) -> bool:
    if annotation is typing.Any:
        return False
    if annotation is runtime_type:
        return True
    try:
        return issubclass(runtime_type, annotation)
    except TypeError:
        return False


def _by_type(annotation: Any, state_type: type, context_type: type) -> InjectionSource | None:
    if annotation is inspect.Parameter.empty:
        return None
    if _matches(state_type, annotation):
        return InjectionSource.STATE
    if _matches(context_type, annotation):
        return InjectionSource.CONTEXT
    if _matches(CancellationToken, annotation):
        return InjectionSource.CANCEL
    if _matches(Exception, annotation):
        return InjectionSource.ERROR
    return None


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:
        return dict(getattr(func, "__annotations__", {}) or {})


def _signature(func: Callable[..., Any], name: str) -> inspect.Signature:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(
            f"Step '{name}': cannot read the signature of {func!r} ({exc}). "
            "Register a plain function, async function or async generator.",
            step_name=name,
        ) from exc


def analyze(
    func: Callable[..., Any],
    *,
    name: str,
    state_type: type,
    context_type: type,
    allowed_unknown: int,
    role: str = "step",
) -> dict[str, InjectionSource]:
    """Map each injectable parameter of `func` to its source; reject too many unknowns."""
    sig = _signature(func, name)
    hints = _hints(func)
    result: dict[str, InjectionSource] = {}
    unknown: list[str] = []
    for pname, param in sig.parameters.items():
        if param.kind in _SKIPPED_KINDS or param.default is not inspect.Parameter.empty:
            continue
        annotation = hints.get(pname, param.annotation)
        source = _by_type(annotation, state_type, context_type) or _NAME_FALLBACK.get(pname)
        if source is None:
            source = InjectionSource.UNKNOWN
            unknown.append(pname)
        result[pname] = source
    if len(unknown) > allowed_unknown:
        raise DefinitionError(
            _too_many_unknown(name, unknown, allowed_unknown, role, state_type, context_type),
            step_name=name,
        )
    return result


def _too_many_unknown(
    name: str,
    unknown: list[str],
    allowed: int,
    role: str,
    state_type: type,
    context_type: type,
) -> str:
    if allowed:
        purpose = f"A {role} may take one extra parameter (a map worker receives its item there)."
    else:
        purpose = f"A {role} receives only injected values; it takes no extra parameters."
    return (
        f"Step '{name}' has {len(unknown)} unrecognized parameters: {unknown} "
        f"(at most {allowed} allowed). {purpose} Fix: annotate them with the state type "
        f"({state_type.__name__}) or context type ({context_type.__name__}), name them "
        "'state'/'s', 'context'/'ctx'/'c', 'error'/'e', 'step_name' or 'cancel', "
        "or give them default values."
    )


OnResultInjection = tuple[tuple[str, str], ...]
_ON_RESULT_SOURCES = {
    InjectionSource.STATE: "state",
    InjectionSource.CONTEXT: "context",
    InjectionSource.CANCEL: "token",
}


def analyze_on_result(
    func: Callable[..., Any], *, name: str, state_type: type, context_type: type
) -> OnResultInjection:
    """Which value each parameter of step `name`'s `on_result=` receives.

    `item` and `result` by name; state, context and the cancellation token by type or by
    their usual names. Anything else cannot be injected: a DefinitionError says so.
    """
    sig = _signature(func, name)
    hints = _hints(func)
    plan: list[tuple[str, str]] = []
    for pname, param in sig.parameters.items():
        if param.kind in _SKIPPED_KINDS or param.default is not inspect.Parameter.empty:
            continue
        if pname in ("item", "result"):
            plan.append((pname, pname))
            continue
        annotation = hints.get(pname, param.annotation)
        source = _by_type(annotation, state_type, context_type) or _NAME_FALLBACK.get(pname)
        value = _ON_RESULT_SOURCES.get(source) if source is not None else None
        if value is None:
            raise DefinitionError(
                f"Step '{name}': on_result={getattr(func, '__name__', func)!r} has parameter "
                f"'{pname}', which cannot be injected. on_result receives state, context, item "
                "(the map item) and result (the step's return value): rename the parameter or "
                "give it a default.",
                step_name=name,
            )
        plan.append((pname, value))
    return tuple(plan)
