"""Event -> JSON, the one format every store and tool reads (spec §15.4 "Event JSON format").

Payloads and meta are converted to JSON-native values first:

* enum members become their ``.value`` (converted in turn);
* dataclass instances become a dict of their fields (converted in turn);
* dicts keep their keys and convert their values; lists and tuples become lists;
* ``str``, ``int``, ``bool``, ``None`` and finite floats stay as they are;
* anything else, including sets, bytes, datetimes and non-finite floats, becomes ``str(value)``.

A value that cannot be converted as a whole (a dict key JSON cannot represent, a field
that cannot be read, a reference cycle) becomes ``str(value)`` instead; if even that
raises, ``repr(value)``, and failing that a ``<unserializable TypeName>`` marker. An
event therefore always serializes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from enum import Enum
from typing import Any

from justpipe.types import Event

__all__ = ["dumps_jsonable", "event_to_dict", "event_to_json", "parse_event_object", "to_jsonable"]

_JSON_KEY_TYPES = (str, int, float, bool, type(None))

# Conversion guarantees JSON-native values, so this encoder needs no cycle or NaN checks.
_ENCODER = json.JSONEncoder(check_circular=False, allow_nan=False)
# For raw values: raises on anything that needs conversion instead of guessing.
_STRICT_ENCODER = json.JSONEncoder(allow_nan=False)


class _Unconvertible(Exception):
    """Raised inside the converter when a value has no faithful JSON form."""


def to_jsonable(value: Any) -> Any:
    """Return `value` as JSON-native data following the rules in the module docstring."""
    try:
        return _convert(value)
    except Exception:  # a bad key, a failing getter, a cycle: the value as a whole is text
        return _as_text(value)


def dumps_jsonable(value: Any, *, indent: int | None = None) -> str:
    """Encode `value` after :func:`to_jsonable`; never raises for any input."""
    converted = to_jsonable(value)
    if indent is None:
        return _ENCODER.encode(converted)
    return json.dumps(converted, indent=indent, allow_nan=False)


def event_to_dict(event: Event) -> dict[str, Any]:
    """Return the JSON-ready dict of one event, keys in the documented order."""
    fields = _event_fields(event, event.meta, event.payload)
    if fields["meta"] is not None:
        fields["meta"] = to_jsonable(fields["meta"])
    fields["payload"] = to_jsonable(fields["payload"])
    return fields


def event_to_json(event: Event) -> str:
    """Encode one event as the JSON text that stores keep.

    Most payloads are JSON-native already, so the event is encoded directly; only when
    that fails (an enum, a dataclass, a NaN ...) is it converted first. Both routes give
    the same text as ``json.dumps(event_to_dict(event))``.
    """
    try:
        return _STRICT_ENCODER.encode(_event_fields(event, event.meta, event.payload))
    except (TypeError, ValueError, RecursionError):
        return _ENCODER.encode(event_to_dict(event))


def _event_fields(event: Event, meta: Any, payload: Any) -> dict[str, Any]:
    return {
        "type": event.type.value,
        "stage": event.stage,
        "timestamp": event.timestamp,
        "run_id": event.run_id,
        "origin_run_id": event.origin_run_id,
        "parent_run_id": event.parent_run_id,
        "seq": event.seq,
        "node_kind": event.node_kind.value,
        "invocation_id": event.invocation_id,
        "parent_invocation_id": event.parent_invocation_id,
        "owner_invocation_id": event.owner_invocation_id,
        "attempt": event.attempt,
        "scope": list(event.scope),
        "meta": meta,
        "payload": payload,
    }


def _convert(value: Any) -> Any:
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Enum):
        return _convert(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return _convert_dict(value)
    if isinstance(value, (list, tuple)):
        return [_convert(item) for item in value]
    if isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return _convert(float(value))
    return _as_text(value)


def _convert_dict(value: dict[Any, Any]) -> dict[Any, Any]:
    converted: dict[Any, Any] = {}
    for key, item in value.items():
        if not isinstance(key, _JSON_KEY_TYPES):
            raise _Unconvertible(f"dict key of type {type(key).__name__} has no JSON form")
        converted[key] = _convert(item)
    return converted


def _as_text(value: Any) -> str:
    for render in (str, repr):
        try:
            return render(value)
        except Exception:  # a broken __str__ must not lose the event; try the next form
            continue
    return f"<unserializable {type(value).__qualname__}>"


def parse_event_object(run_id: str, index: int, data: str) -> dict[str, Any]:
    """Decode one stored event, raising ``json.JSONDecodeError`` that names the event.

    `index` is the event's 0-based position in the batch being stored.
    """
    if not isinstance(data, str):
        raise TypeError(
            f"event #{index + 1} of run {run_id!r} must be a JSON string, got {type(data).__name__}"
        )
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(
            f"event #{index + 1} of run {run_id!r} is not valid JSON ({exc.msg})",
            exc.doc,
            exc.pos,
        ) from None
    if not isinstance(parsed, dict):
        raise TypeError(
            f"event #{index + 1} of run {run_id!r} must be a JSON object, "
            f"got {type(parsed).__name__}"
        )
    return parsed
