"""How a durable run's state (and the map items of its frontier) become checkpoint text, and back.

`StateSerializer` turns a value into JSON text and back:

* JSON-native values stay as they are: ``None``, ``bool``, ``int``, finite ``float``,
  ``str``, lists, and dicts whose keys are strings;
* tuples, dataclass instances and pydantic models are written with a small tag
  (``{"__jp__": "tuple", ...}``) so they come back as the same type: a dataclass is
  rebuilt field by field (its ``__init__`` and ``__post_init__`` are not called), a
  pydantic model through ``model_validate``;
* anything else (a set, bytes, a datetime, an open file, a lambda...) is refused with
  `StateSerializationError`, naming where it sits (``state.items[3].when``) and its
  type, at the first checkpoint, not at resume time;
* ``StateSerializer(allow_pickle=True)`` accepts such values by pickling them (base64
  inside the JSON). Only use it for checkpoints you trust: unpickling runs code.

A checkpoint is read back from a store, so its text is untrusted: what it says must not
decide which code runs. Decoding therefore never imports anything. A tag names its class
by a key (``module:qualname``) that is looked up in the serializer's *table*: the classes
the pipeline declares (its state type and every dataclass or pydantic model its
annotations reach, recursively: fields, container type arguments, ``Optional``/unions;
see `reachable_records`) and those registered on the serializer (``types=[...]``,
`StateSerializer.register`). A key not in the table is refused (`UndeclaredTypeError`,
naming the place), and so is a field the class does not have. Encoding refuses such a
class up front, so a run never writes a checkpoint it could not read back.

A serializer with a ``signing_key`` also signs each checkpoint (HMAC-SHA256 over the
stored text, see `justpipe.durable.signing`) and refuses to read one whose signature
is missing or does not match.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import pickle
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from justpipe.durable.signing import CheckpointSigner
from justpipe.durable.store import Checkpoint, CorruptCheckpointError, UndeclaredTypeError

__all__ = ["MAX_DEPTH", "StateSerializationError", "StateSerializer", "reachable_records"]

_TAG = "__jp__"

MAX_DEPTH = 200
"""How deeply containers (lists, dicts, tuples, records) may nest in a checkpointed value.

Deeper values are refused when written (`StateSerializationError`) and when read
(`CorruptCheckpointError`), so neither side can be driven into a `RecursionError`.
"""

_MAX_SHOWN = 120  # characters of a checkpoint's own text quoted in an error message

T = TypeVar("T", bound=type)


class StateSerializationError(TypeError):
    """A value of a durable run cannot be written to a checkpoint."""


class StateSerializer:
    """JSON with tagged dataclasses, pydantic models and tuples; pickle only when allowed.

    `types`: dataclasses and pydantic models a checkpoint may rebuild beyond those the
    pipeline declares (a durable Pipe adds its state type and what its annotations reach
    by itself, see `for_types`); what their own annotations reach comes with them.
    `allow_pickle`: accept any picklable value (base64 inside the JSON); unpickling runs
    code, so only for checkpoints you trust. `signing_key`: sign every checkpoint
    (HMAC-SHA256) and refuse one that is unsigned or whose signature does not match;
    `verify_keys`: older keys still accepted when reading (key rotation). Keys are bytes
    or str, at least 16 bytes (e.g. ``secrets.token_bytes(32)``).
    """

    __slots__ = ("_classes", "_declared", "_keys", "_registered", "_signer", "allow_pickle")

    def __init__(
        self,
        *,
        types: Iterable[type] = (),
        allow_pickle: bool = False,
        signing_key: bytes | str | None = None,
        verify_keys: Iterable[bytes | str] = (),
    ) -> None:
        if not isinstance(allow_pickle, bool):
            raise TypeError(
                f"StateSerializer(allow_pickle=...) must be a bool, got {allow_pickle!r}"
            )
        self.allow_pickle = allow_pickle
        self._signer = CheckpointSigner.create(signing_key, verify_keys)
        self._registered: tuple[type, ...] = ()
        self._declared: tuple[Any, ...] = ()
        self._classes: dict[str, type] = {}  # key ("module:qualname") -> class
        self._keys: dict[type, str] = {}  # class -> key
        if isinstance(types, (str, bytes)) or not isinstance(types, Iterable):
            raise TypeError(
                "StateSerializer(types=...) must be a list of dataclasses or pydantic models, "
                f"got {types!r}"
            )
        for index, cls in enumerate(types):
            _check_record_class(cls, f"StateSerializer(types=...)[{index}]")
        self._registered = tuple(types)
        self._rebuild()

    def __repr__(self) -> str:
        names = ", ".join(cls.__qualname__ for cls in self._registered)
        signed = f", {self._signer!r}" if self._signer is not None else ""
        return f"StateSerializer(types=[{names}], allow_pickle={self.allow_pickle}{signed})"

    # ------------------------------------------------------------------ the class table

    def register(self, cls: T) -> T:
        """Let checkpoints rebuild `cls` (a dataclass or pydantic model), and what its
        annotations reach. Returns `cls`, so it also works as a class decorator."""
        _check_record_class(cls, "StateSerializer.register(cls)")
        if cls not in self._registered:
            self._registered = (*self._registered, cls)
            self._rebuild()
        return cls

    @property
    def registered(self) -> tuple[type, ...]:
        """The classes registered on this serializer (``types=[...]``, `register`)."""
        return self._registered

    @property
    def types(self) -> tuple[type, ...]:
        """Every class a checkpoint read by this serializer may rebuild."""
        return tuple(self._classes.values())

    def for_types(self, *annotations: Any) -> StateSerializer:
        """A copy that also rebuilds the classes `annotations` reach (see `reachable_records`).

        A durable Pipe calls it with what it declares (its state type, its sub-pipelines'
        and its maps' items); the copy has the same options and keys.
        """
        bound = object.__new__(StateSerializer)
        bound.allow_pickle = self.allow_pickle
        bound._signer = self._signer
        bound._registered = self._registered
        bound._declared = (*self._declared, *annotations)
        bound._rebuild()
        return bound

    def _rebuild(self) -> None:
        classes = reachable_records((*self._registered, *self._declared))
        self._classes = classes
        self._keys = {cls: key for key, cls in classes.items()}

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
            if len(active) >= MAX_DEPTH:  # (`active`: the containers enclosing this one)
                raise StateSerializationError(
                    f"cannot checkpoint {where}: it is nested more than {MAX_DEPTH} "
                    "containers deep; flatten the state."
                )
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
        type_key = self._keys.get(cls)
        if type_key is None:
            return self._undeclared(value, where)
        if dataclasses.is_dataclass(value):
            fields = {
                f.name: self._encode(getattr(value, f.name), f"{where}.{f.name}", active)
                for f in dataclasses.fields(value)
            }
            return {_TAG: "dataclass", "type": type_key, "fields": fields}
        try:
            data = value.model_dump(mode="json")
        except Exception as exc:
            return self._fallback(value, where, f"model_dump failed: {exc}")
        return {_TAG: "pydantic", "type": type_key, "data": data}

    def _undeclared(self, value: Any, where: str) -> Any:
        cls = type(value)
        if self.allow_pickle:
            return self._fallback(value, where, None)
        raise StateSerializationError(
            f"cannot checkpoint {where}: its class {_name(cls)} is neither declared by the "
            "pipeline (its state type, and what that type's annotations reach) nor registered "
            "on the serializer, so a resume would refuse to rebuild it. Annotate the field "
            f"with it, or register it: Durable(serializer=StateSerializer(types=[{cls.__name__}]))."
        )

    def _fallback(self, value: Any, where: str, why: str | None) -> Any:
        if not self.allow_pickle:
            because = f" ({why})" if why else ""
            raise StateSerializationError(
                f"cannot checkpoint {where}: a {_name(type(value))}{because}. Durable runs store "
                "JSON types, dataclasses and pydantic models; convert it (e.g. a set to a list, "
                "a datetime to an ISO string), or opt into pickle with "
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

    def decode(self, data: Any, where: str = "state") -> Any:
        """The value `encode` wrote; `where` names it in errors (``state``).

        Only the classes of the table are rebuilt (`UndeclaredTypeError` for any other);
        anything else that is not what `encode` writes is a `CorruptCheckpointError`
        naming its place.
        """
        return self._decode(data, where, 0)

    def loads(self, text: str, where: str = "state") -> Any:
        return self.decode(parse_json(text, where), where)

    def _decode(self, data: Any, where: str, depth: int) -> Any:
        cls = type(data)
        if data is None or cls is str or cls is bool or cls is int:
            return data
        if cls is float:
            if math.isfinite(data):
                return data
            raise CorruptCheckpointError(f"{where}: a non-finite float ({data!r})")
        if cls is not list and cls is not dict:
            raise CorruptCheckpointError(f"{where}: a {cls.__name__} is not checkpoint data")
        if depth >= MAX_DEPTH:
            raise CorruptCheckpointError(
                f"{where}: nested more than {MAX_DEPTH} containers deep (a checkpoint never is)"
            )
        depth += 1
        if cls is list:
            return [self._decode(item, f"{where}[{i}]", depth) for i, item in enumerate(data)]
        tag = data.get(_TAG)
        if tag is None:
            return {
                key: self._decode(item, f"{where}[{key!r}]", depth) for key, item in data.items()
            }
        if tag == "tuple":
            items = _tagged(data, where, "items", list)
            return tuple(self._decode(item, f"{where}[{i}]", depth) for i, item in enumerate(items))
        if tag == "dict":
            entries = _tagged(data, where, "items", dict)
            return {
                key: self._decode(item, f"{where}[{key!r}]", depth) for key, item in entries.items()
            }
        if tag == "dataclass":
            return self._decode_dataclass(data, where, depth)
        if tag == "pydantic":
            return self._decode_model(data, where)
        if tag == "pickle":
            return self._unpickle(data, where)
        raise CorruptCheckpointError(f"{where}: unknown value tag {_shown(tag)}")

    def _record_class(self, data: dict[str, Any], where: str, kind: str, body: str) -> type:
        if data.keys() != {_TAG, "type", body}:
            raise CorruptCheckpointError(
                f"{where}: a {kind} value has the keys {_shown(sorted(map(str, data)))}, "
                f"not {_TAG!r}, 'type' and {body!r}"
            )
        key = data["type"]
        cls = self._classes.get(key) if type(key) is str else None
        if cls is None:
            raise UndeclaredTypeError(
                f"{where}: the checkpoint names the class {_shown(key)}, which this pipeline "
                "neither declares (its state type, and what that type's annotations reach) "
                "nor registers on its serializer; refusing to build it. If the checkpoint is "
                "yours, register the class: StateSerializer(types=[...])."
            )
        if (kind == "dataclass") != dataclasses.is_dataclass(cls):
            raise CorruptCheckpointError(f"{where}: {key} is not a {kind}")
        return cls

    def _decode_dataclass(self, data: dict[str, Any], where: str, depth: int) -> Any:
        cls = self._record_class(data, where, "dataclass", "fields")
        stored = data["fields"]
        if type(stored) is not dict:
            raise CorruptCheckpointError(f"{where}: the fields of a {_name(cls)} are not a dict")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in stored:
            if name not in fields:
                raise CorruptCheckpointError(
                    f"{where}.{_shown(name, quote=False)}: {_name(cls)} has no such field"
                )
        values: dict[str, Any] = {}
        for name, spec in fields.items():
            if name in stored:
                values[name] = self._decode(stored[name], f"{where}.{name}", depth)
            elif spec.default is not dataclasses.MISSING:
                values[name] = spec.default
            elif spec.default_factory is not dataclasses.MISSING:
                values[name] = spec.default_factory()
            else:
                raise CorruptCheckpointError(
                    f"{where}.{name}: missing, and {_name(cls)} gives it no default"
                )
        try:
            obj: Any = object.__new__(cls)
        except TypeError as exc:
            raise CorruptCheckpointError(f"{where}: cannot rebuild a {_name(cls)} ({exc})") from exc
        for name, value in values.items():
            object.__setattr__(obj, name, value)
        return obj

    def _decode_model(self, data: dict[str, Any], where: str) -> Any:
        cls = self._record_class(data, where, "pydantic", "data")
        try:
            return cls.model_validate(data["data"])  # type: ignore[attr-defined]
        except Exception as exc:
            raise CorruptCheckpointError(
                f"{where}: not a valid {_name(cls)}: {_shown(str(exc), quote=False)}"
            ) from exc

    def _unpickle(self, data: dict[str, Any], where: str) -> Any:
        if not self.allow_pickle:
            raise UndeclaredTypeError(
                f"{where}: the checkpoint holds a pickled value, but this pipe's serializer does "
                "not allow pickle: resume with Pipe(durable=Durable(serializer="
                "StateSerializer(allow_pickle=True))) only if you trust the checkpoint "
                "(unpickling runs code)."
            )
        blob = _tagged(data, where, "data", str)
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CorruptCheckpointError(f"{where}: the pickle is not base64 ({exc})") from exc
        try:
            return pickle.loads(raw)
        except Exception as exc:
            raise CorruptCheckpointError(f"{where}: the pickle does not load ({exc!r})") from exc

    # ------------------------------------------------------------------ signatures

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        """`checkpoint` as it is stored: signed when the serializer has a signing key."""
        signer = self._signer
        return checkpoint if signer is None else signer.sign(checkpoint)

    def verified(self, checkpoint: Checkpoint) -> Checkpoint:
        """A stored checkpoint as it was before `sign`: its signatures checked and removed.

        `CheckpointSignatureError` when the serializer has a key and the checkpoint (or one
        of its parts) is unsigned or signed with no key it knows. Without a key, signatures
        are removed unchecked (so a run signed before keeps reading).
        """
        return CheckpointSigner.unsigned(checkpoint, self._signer)


def parse_json(text: Any, where: str) -> Any:
    """`text` parsed as JSON (no NaN or Infinity); `CorruptCheckpointError` saying why not."""
    if not isinstance(text, str):
        raise CorruptCheckpointError(f"{where}: a {type(text).__name__}, not JSON text")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise CorruptCheckpointError(f"{where}: nested too deeply to be read") from None
    except ValueError as exc:  # (JSONDecodeError, and a too long int literal)
        raise CorruptCheckpointError(f"{where}: not valid JSON ({exc})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _tagged(data: dict[str, Any], where: str, body: str, kind: type) -> Any:
    """The one body of a tagged value (``items``, ``data``), of type `kind`."""
    if data.keys() != {_TAG, body} or type(data[body]) is not kind:
        raise CorruptCheckpointError(
            f"{where}: a {data[_TAG]!r} value must be {{{_TAG!r}, {body!r}: a {kind.__name__}}}"
        )
    return data[body]


def _shown(value: Any, *, quote: bool = True) -> str:
    """Checkpoint text quoted in an error message: its repr, cut short."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_record(value: Any) -> bool:
    """A dataclass instance or a pydantic model (anything with model_dump/model_validate)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True
    cls = type(value)
    return callable(getattr(value, "model_dump", None)) and callable(
        getattr(cls, "model_validate", None)
    )


def _is_record_class(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    if dataclasses.is_dataclass(obj):
        return True
    return callable(getattr(obj, "model_validate", None)) and callable(
        getattr(obj, "model_dump", None)
    )


def _check_record_class(cls: Any, where: str) -> None:
    if not _is_record_class(cls):
        raise TypeError(
            f"{where} must be a dataclass or a pydantic model class, got {cls!r}: only those "
            "are rebuilt from checkpoints (JSON values need no registration)."
        )


# --------------------------------------------------------------------------- reachability


def reachable_records(annotations: Iterable[Any]) -> dict[str, type]:
    """The dataclasses and pydantic models `annotations` reach, by key (``module:qualname``).

    Walks type expressions: a record class itself, then the annotations of its fields
    (dataclass fields, pydantic ``model_fields``); the arguments of generics (``list[X]``,
    ``dict[str, X]``, ``tuple[X, ...]``, ``X | None``, ``Union``, ``Annotated``), a
    ``NewType``'s supertype, a ``TypeVar``'s bound and constraints. ``Any``, ``Literal``
    values and string annotations that cannot be resolved reach nothing (register such
    classes). Two different classes with the same key are a `ValueError`: a checkpoint
    could not tell them apart.
    """
    found: dict[str, type] = {}
    # by id, holding each annotation: `get_type_hints` makes new objects (``list[X]``), and
    # an id is unique only while its object lives
    seen: dict[int, Any] = {}
    stack = list(annotations)
    while stack:
        annotation = stack.pop()
        if id(annotation) in seen:
            continue
        seen[id(annotation)] = annotation
        stack.extend(_inner_annotations(annotation))
        if not _is_record_class(annotation):
            continue
        key = f"{annotation.__module__}:{annotation.__qualname__}"
        other = found.setdefault(key, annotation)
        if other is not annotation:
            raise ValueError(
                f"two different classes are both named {key}: a checkpoint could not tell "
                "them apart. Rename one of them."
            )
        stack.extend(_field_annotations(annotation))
    return found


def _inner_annotations(annotation: Any) -> list[Any]:
    """What a type expression is made of (its arguments, its origin class...)."""
    if isinstance(annotation, TypeVar):
        bound = [annotation.__bound__] if annotation.__bound__ is not None else []
        return [*bound, *annotation.__constraints__]
    supertype = getattr(annotation, "__supertype__", None)  # a NewType
    if supertype is not None:
        return [supertype]
    if isinstance(annotation, dataclasses.InitVar):
        return [annotation.type]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    if origin is typing.Literal:
        return []
    args = [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]
    if origin is typing.Annotated:
        return args[:1]
    return [origin, *args] if isinstance(origin, type) else args


def _field_annotations(cls: type) -> list[Any]:
    """The annotations of a record class's fields (unresolvable string annotations left out)."""
    fields: Mapping[str, Any] | None = getattr(cls, "model_fields", None)
    if not dataclasses.is_dataclass(cls) and isinstance(fields, Mapping):
        return [getattr(info, "annotation", None) for info in fields.values()]
    try:
        hints = typing.get_type_hints(cls, localns={cls.__name__: cls})
    except Exception:  # a forward reference this module cannot resolve: take the others
        hints = {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}
    names = {f.name for f in dataclasses.fields(cls)}
    return [hint for name, hint in hints.items() if name in names]
