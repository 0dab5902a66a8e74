"""How a durable run's state (and the map items of its frontier) become checkpoint text.

`StateSerializer` turns a value into JSON text and back:

* JSON-native values stay as they are: ``None``, ``bool``, ``int``, finite ``float``,
  ``str``, lists, and dicts whose keys are strings;
* tuples, dataclass instances and pydantic models are written with a small tag
  (``{"__jp__": "tuple", ...}``) so they come back as the same type: a dataclass is
  rebuilt field by field (its ``__init__`` and ``__post_init__`` are not called), a
  pydantic model through ``model_validate``. Their classes must be importable by
  ``module:qualname`` in the resuming process;
* anything else (a set, bytes, a datetime, an open file, a lambda...) is refused with
  `StateSerializationError`, naming where it sits (``state.items[3].when``) and its
  type, at the first checkpoint, not at resume time;
* ``StateSerializer(allow_pickle=True)`` accepts such values by pickling them (base64
  inside the JSON). Only use it for checkpoints you trust: unpickling runs code.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import math
import pickle
from typing import Any

__all__ = ["StateSerializationError", "StateSerializer"]

_TAG = "__jp__"


class StateSerializationError(TypeError):
    """A value of a durable run cannot be written to (or read from) a checkpoint."""


class StateSerializer:
    """JSON with tagged dataclasses, pydantic models and tuples; pickle only when allowed."""

    __slots__ = ("allow_pickle",)

    def __init__(self, *, allow_pickle: bool = False) -> None:
        if not isinstance(allow_pickle, bool):
            raise TypeError(
                f"StateSerializer(allow_pickle=...) must be a bool, got {allow_pickle!r}"
            )
        self.allow_pickle = allow_pickle

    def __repr__(self) -> str:
        return f"StateSerializer(allow_pickle={self.allow_pickle})"

    # ------------------------------------------------------------------ encode

    def encode(self, value: Any, where: str = "state") -> Any:
        """`value` as JSON-native data; `where` names it in errors (``state``)."""
        return self._encode(value, where, set())

    def dumps(self, value: Any, where: str = "state") -> str:
        return json.dumps(self.encode(value, where), separators=(",", ":"), allow_nan=False)

    def _encode(self, value: Any, where: str, active: set[int]) -> Any:
        cls = type(value)
        if value is None or cls is str or cls is bool or cls is int:
            return value
        if cls is float:
            if math.isfinite(value):
                return value
            return self._fallback(value, where, "a non-finite float has no JSON form")
        if cls is list or cls is tuple or cls is dict or _is_record(value):
            key = id(value)
            if key in active:
                return self._fallback(value, where, "it refers back to itself (a cycle)")
            active.add(key)
            try:
                return self._encode_container(value, where, active)
            finally:
                active.discard(key)
        return self._fallback(value, where, None)

    def _encode_container(self, value: Any, where: str, active: set[int]) -> Any:
        cls = type(value)
        if cls is list:
            return [self._encode(item, f"{where}[{i}]", active) for i, item in enumerate(value)]
        if cls is tuple:
            items = [self._encode(item, f"{where}[{i}]", active) for i, item in enumerate(value)]
            return {_TAG: "tuple", "items": items}
        if cls is dict:
            out: dict[str, Any] = {}
            for key, item in value.items():
                if type(key) is not str:
                    return self._fallback(
                        value, where, f"its key {key!r} is a {type(key).__name__}, not a str"
                    )
                out[key] = self._encode(item, f"{where}[{key!r}]", active)
            if _TAG in out:
                return {_TAG: "dict", "items": out}
            return out
        if dataclasses.is_dataclass(value):
            fields = {
                f.name: self._encode(getattr(value, f.name), f"{where}.{f.name}", active)
                for f in dataclasses.fields(value)
            }
            return {_TAG: "dataclass", "type": _type_path(cls, where), "fields": fields}
        try:
            data = value.model_dump(mode="json")
        except Exception as exc:
            return self._fallback(value, where, f"model_dump failed: {exc}")
        return {_TAG: "pydantic", "type": _type_path(cls, where), "data": data}

    def _fallback(self, value: Any, where: str, why: str | None) -> Any:
        if not self.allow_pickle:
            because = f" ({why})" if why else ""
            raise StateSerializationError(
                f"cannot checkpoint {where}: a {type(value).__module__}."
                f"{type(value).__qualname__}{because}. Durable runs store JSON types, "
                "dataclasses and pydantic models; convert it (e.g. a set to a list, a datetime "
                "to an ISO string), or opt into pickle with "
                "Pipe(durable=Durable(serializer=StateSerializer(allow_pickle=True)))."
            )
        try:
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise StateSerializationError(
                f"cannot checkpoint {where}: a {type(value).__qualname__} that pickle "
                f"refuses too ({exc})."
            ) from exc
        return {_TAG: "pickle", "data": base64.b64encode(blob).decode("ascii")}

    # ------------------------------------------------------------------ decode

    def decode(self, data: Any) -> Any:
        """The value `encode` wrote (dataclasses and models rebuilt from their classes)."""
        cls = type(data)
        if cls is list:
            return [self.decode(item) for item in data]
        if cls is not dict:
            return data
        tag = data.get(_TAG)
        if tag is None:
            return {key: self.decode(item) for key, item in data.items()}
        if tag == "tuple":
            return tuple(self.decode(item) for item in data["items"])
        if tag == "dict":
            return {key: self.decode(item) for key, item in data["items"].items()}
        if tag == "dataclass":
            target = _import_type(data["type"])
            obj = object.__new__(target)
            for name, item in data["fields"].items():
                object.__setattr__(obj, name, self.decode(item))
            return obj
        if tag == "pydantic":
            return _import_type(data["type"]).model_validate(data["data"])
        if tag == "pickle":
            if not self.allow_pickle:
                raise StateSerializationError(
                    "the checkpoint holds a pickled value, but this pipe's serializer does not "
                    "allow pickle: resume with Pipe(durable=Durable(serializer="
                    "StateSerializer(allow_pickle=True))) if you trust the checkpoint."
                )
            return pickle.loads(base64.b64decode(data["data"]))
        raise StateSerializationError(f"unknown checkpoint value tag {tag!r}")

    def loads(self, text: str) -> Any:
        return self.decode(json.loads(text))


def _is_record(value: Any) -> bool:
    """A dataclass instance or a pydantic model (anything with model_dump/model_validate)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True
    cls = type(value)
    return callable(getattr(value, "model_dump", None)) and callable(
        getattr(cls, "model_validate", None)
    )


def _type_path(cls: type, where: str) -> str:
    qualname = cls.__qualname__
    if "<locals>" in qualname:
        raise StateSerializationError(
            f"cannot checkpoint {where}: its class {qualname} is defined inside a function, "
            "so a resuming process cannot import it; define it at module level."
        )
    return f"{cls.__module__}:{qualname}"


def _import_type(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise StateSerializationError(
            f"the checkpoint names the class {path}, which this process cannot import ({exc})"
        ) from exc
    return obj
