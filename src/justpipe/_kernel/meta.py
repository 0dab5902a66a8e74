"""Structured metadata (spec §12): `ctx.meta.step`, `ctx.meta.run`, `ctx.meta.pipeline`."""

from __future__ import annotations

import dataclasses
import typing
from contextvars import ContextVar
from typing import Any

from justpipe.types import DefinitionError, Meta

__all__ = ["_MetaImpl", "_ScopedMetaImpl", "attach_meta", "current_step_meta"]


class _ScopedMetaImpl:
    """One metadata scope: data, tags, metric samples and counters."""

    __slots__ = ("_data", "_tags", "_metrics", "_counters")

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._tags: set[str] = set()
        self._metrics: dict[str, list[float]] = {}
        self._counters: dict[str, float] = {}

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def add_tag(self, tag: str) -> None:
        self._tags.add(tag)

    def record_metric(self, name: str, value: float) -> None:
        self._metrics.setdefault(name, []).append(value)

    def increment(self, name: str, amount: float = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + amount

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {}
        if self._data:
            snap["data"] = dict(self._data)
        if self._tags:
            snap["tags"] = sorted(self._tags)
        if self._metrics:
            snap["metrics"] = {k: list(v) for k, v in self._metrics.items()}
        if self._counters:
            snap["counters"] = dict(self._counters)
        return snap


_current_step: ContextVar[_ScopedMetaImpl | None] = ContextVar("justpipe_step_meta", default=None)


def current_step_meta() -> ContextVar[_ScopedMetaImpl | None]:
    return _current_step


class _StepMetaProxy:
    """`ctx.meta.step`: resolves to the running invocation's scope (context-variable based)."""

    __slots__ = ()

    def _scope(self) -> _ScopedMetaImpl:
        scope = _current_step.get()
        if scope is None:
            raise RuntimeError(
                "ctx.meta.step is only available inside a step invocation; "
                "use ctx.meta.run in hooks."
            )
        return scope

    def set(self, key: str, value: Any) -> None:
        self._scope().set(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        return self._scope().get(key, default)

    def add_tag(self, tag: str) -> None:
        self._scope().add_tag(tag)

    def record_metric(self, name: str, value: float) -> None:
        self._scope().record_metric(name, value)

    def increment(self, name: str, amount: float = 1) -> None:
        self._scope().increment(name, amount)


class _PipelineMetaImpl:
    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)


class _MetaImpl:
    __slots__ = ("_run", "_step", "_pipeline")

    def __init__(self, pipeline_metadata: dict[str, Any]) -> None:
        self._run = _ScopedMetaImpl()
        self._step = _StepMetaProxy()
        self._pipeline = _PipelineMetaImpl(pipeline_metadata)

    @property
    def step(self) -> _StepMetaProxy:
        return self._step

    @property
    def run(self) -> _ScopedMetaImpl:
        return self._run

    @property
    def pipeline(self) -> _PipelineMetaImpl:
        return self._pipeline


def _is_meta_annotation(annotation: Any) -> bool:
    if annotation is Meta:
        return True
    return Meta in typing.get_args(annotation)


def _meta_fields(cls: type) -> list[str]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
        for klass in reversed(cls.__mro__):
            hints.update(getattr(klass, "__annotations__", {}) or {})
    return [name for name, ann in hints.items() if _is_meta_annotation(ann)]


def attach_meta(context: Any, pipeline_metadata: dict[str, Any]) -> _MetaImpl | None:
    """Assign a fresh Meta to the context's Meta field, if it declares one."""
    if context is None:
        return None
    cls = type(context)
    fields = _meta_fields(cls)
    if not fields:
        return None
    if len(fields) > 1:
        raise DefinitionError(
            f"Only one Meta field is allowed on context type {cls.__name__}; found "
            f"{', '.join(fields)}. Keep one and remove the others."
        )
    if dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise DefinitionError(
            f"Context type {cls.__name__} is a frozen dataclass, but its Meta field "
            f"'{fields[0]}' must be assigned at run start. Make the dataclass mutable."
        )
    meta = _MetaImpl(pipeline_metadata)
    setattr(context, fields[0], meta)
    return meta
