"""StateDiffTracker: snapshots of the state after each step, and what changed (§13.2)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.types import Event, EventType

__all__ = ["StateDiffTracker"]

START_KEY = "__start__"
END_KEY = "__end__"
_RULE = "=" * 60
_ELLIPSIS = "..."
_SUMMARY_KEYS_SHOWN = 3
_SIZED_TYPES = (list, tuple, set)


@dataclass
class _Changes:
    added: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)
    changed: list[Any] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class StateDiffTracker(Observer):
    """Deep-copy the state at the start, after every STEP_END and at the end of a run.

    Snapshots are keyed ``"__start__"``, the step name and ``"__end__"``; a step that
    ends several times keeps its latest snapshot. States that cannot be deep-copied are
    skipped. Dicts and objects with a ``__dict__`` are compared field by field.
    """

    def __init__(self, max_value_length: int = 200) -> None:
        if isinstance(max_value_length, bool) or not isinstance(max_value_length, int):
            raise TypeError(f"max_value_length must be an int, got {max_value_length!r}")
        if max_value_length < 0:
            raise ValueError(f"max_value_length must be >= 0, got {max_value_length}")
        self.max_value_length = max_value_length
        self.snapshots: dict[str, Any] = {}
        self.initial_state: Any = None
        self.step_order: list[str] = []

    # ------------------------------------------------------------------ recording

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self.snapshots = {}
        self.initial_state = None
        self.step_order = []
        copied, snapshot = _deep_copy(state)
        if copied:
            self.initial_state = snapshot
            self.snapshots[START_KEY] = snapshot

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        if event.type is not EventType.STEP_END:
            return
        copied, snapshot = _deep_copy(state)
        if not copied:
            return
        self.snapshots[event.stage] = snapshot
        if event.stage not in self.step_order:
            self.step_order.append(event.stage)

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        copied, snapshot = _deep_copy(state)
        if copied:
            self.snapshots[END_KEY] = snapshot

    # ------------------------------------------------------------------ queries

    def get_snapshot(self, step: str) -> Any | None:
        return self.snapshots.get(step)

    def get_all_snapshots(self) -> dict[str, Any]:
        """A shallow copy of the snapshots, keyed as described on the class."""
        return dict(self.snapshots)

    def diff(self, step1: str, step2: str) -> str:
        """A readable report of what changed between two snapshots."""
        before = self.snapshots.get(step1)
        if before is None:
            return f"No snapshot found for {step1}"
        after = self.snapshots.get(step2)
        if after is None:
            return f"No snapshot found for {step2}"
        lines = ["", f"State Changes: {step1} \u2192 {step2}", _RULE, ""]
        pair = _field_pair(before, after)
        if pair is None:
            lines += [f"Before: {self._render(before)}", f"After:  {self._render(after)}"]
            return "\n".join(lines)
        fields_before, fields_after = pair
        changes = _compare(fields_before, fields_after)
        if not changes:
            lines += ["No changes detected", ""]
            return "\n".join(lines)
        if changes.added:
            lines.append("Added:")
            lines += [f"  + {key}: {self._render(fields_after[key])}" for key in changes.added]
            lines.append("")
        if changes.removed:
            lines.append("Removed:")
            lines += [f"  - {key}: {self._render(fields_before[key])}" for key in changes.removed]
            lines.append("")
        if changes.changed:
            lines.append("Changed:")
            for key in changes.changed:
                lines += [
                    f"  ~ {key}:",
                    f"      {self._render(fields_before[key])}",
                    f"    \u2192 {self._render(fields_after[key])}",
                ]
            lines.append("")
        return "\n".join(lines)

    def summary(self) -> str:
        """Per step, how many fields were added (+), removed (-) and changed (~).

        Each step is compared with the latest earlier snapshot of the same shape (both
        dicts, or both objects with a ``__dict__``); steps with no changes are left out.
        """
        if not self.snapshots:
            return "No state snapshots captured"
        lines = ["", "State Changes Summary", _RULE, ""]
        previous = self.snapshots.get(START_KEY)
        for step in self.step_order:
            current = self.snapshots.get(step)
            changes = _compare_snapshots(previous, current)
            if changes is None:
                continue
            previous = current
            if changes:
                lines += _summary_block(step, changes)
        return "\n".join(lines)

    def export_json(self) -> str:
        """The snapshots as indented JSON; values JSON cannot express become strings."""
        return json.dumps(
            {key: _jsonable(value) for key, value in self.snapshots.items()},
            indent=2,
            default=_safe_str,
        )

    # ------------------------------------------------------------------ rendering

    def _render(self, value: Any) -> str:
        """Scalars as text, containers by size, anything else by type name; truncated."""
        if value is None or isinstance(value, (str, int, float, bool)):
            text = _safe_str(value)
        elif isinstance(value, dict):
            text = f"dict({len(value)} keys)"
        elif isinstance(value, _SIZED_TYPES):
            text = f"{type(value).__name__}({len(value)} items)"
        else:
            text = type(value).__name__
        if len(text) <= self.max_value_length:
            return text
        keep = max(0, self.max_value_length - len(_ELLIPSIS))
        return text[:keep] + _ELLIPSIS


def _summary_block(step: str, changes: _Changes) -> list[str]:
    counts = [
        f"{sign}{len(keys)}"
        for sign, keys in (("+", changes.added), ("-", changes.removed), ("~", changes.changed))
        if keys
    ]
    return [
        f"{step}:",
        f"  Changes: {', '.join(counts)}",
        *(f"    + {key}" for key in changes.added[:_SUMMARY_KEYS_SHOWN]),
        *(f"    ~ {key}" for key in changes.changed[:_SUMMARY_KEYS_SHOWN]),
        "",
    ]


def _deep_copy(state: Any) -> tuple[bool, Any]:
    """(True, copy) or (False, None) when the state cannot be deep-copied."""
    try:
        return True, copy.deepcopy(state)
    except Exception:
        return False, None


def _field_pair(before: Any, after: Any) -> tuple[dict[Any, Any], dict[Any, Any]] | None:
    """The fields of both snapshots when they have the same shape, else None.

    Same shape means both are dicts, or neither is and both have a ``__dict__``.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        return before, after
    if isinstance(before, dict) or isinstance(after, dict):
        return None
    if hasattr(before, "__dict__") and hasattr(after, "__dict__"):
        return dict(vars(before)), dict(vars(after))
    return None


def _compare_snapshots(before: Any, after: Any) -> _Changes | None:
    """Field changes, or None when the two snapshots are not of a comparable shape."""
    if before is None or after is None:
        return None
    pair = _field_pair(before, after)
    return None if pair is None else _compare(*pair)


def _compare(before: dict[Any, Any], after: dict[Any, Any]) -> _Changes:
    return _Changes(
        added=_sorted_keys(key for key in after if key not in before),
        removed=_sorted_keys(key for key in before if key not in after),
        changed=_sorted_keys(
            key for key in before if key in after and _differs(before[key], after[key])
        ),
    )


def _differs(old: Any, new: Any) -> bool:
    """``old != new``, counting values that cannot be compared (e.g. arrays) as changed."""
    try:
        return bool(old != new)
    except Exception:
        return old is not new


def _sorted_keys(keys: Any) -> list[Any]:
    collected = list(keys)
    try:
        return sorted(collected)
    except TypeError:
        return sorted(collected, key=lambda key: (type(key).__name__, _safe_str(key)))


def _jsonable(value: Any) -> Any:
    """`value` if ``json.dumps`` accepts it (with str() fallback), else its str()."""
    try:
        json.dumps(value, default=_safe_str)
    except (TypeError, ValueError, RecursionError):
        return _safe_str(value)
    return value


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
