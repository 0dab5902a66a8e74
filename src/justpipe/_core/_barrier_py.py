"""Join bookkeeping for one run: which parents of each join node arrived in the current wave.

Pure-Python twin of `_barrier.pyx`; both must behave identically (tests/test_core_parity.py).

Every node `i` owns `slot_counts[i]` parent slots, laid out in one flat array. Instead of a
bit per slot that must be cleared when a wave ends, each slot remembers the number of the
wave in which it last arrived: a slot has arrived in the current wave exactly when its stamp
equals the node's wave number, so ending a wave is one increment. With the per-node arrival
counter this makes `mark()` O(1) whatever the number of parents (no 64-parent cap, no sets).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

__all__ = ["FIRED", "FIRST", "IGNORED", "PROGRESS", "JoinTable"]

IGNORED: Final = 0
"""The arrival changed nothing: a duplicate within the wave, or the node is disabled."""
FIRST: Final = 1
"""First arrival of a wave at an ALL node that needs more than one parent."""
PROGRESS: Final = 2
"""An arrival that neither starts nor completes anything observable."""
FIRED: Final = 3
"""The node is ready: an ALL node's last parent arrived, or an ANY node's first did."""


class JoinTable:
    """Parent-arrival tracking for every join node of one run.

    `JoinTable(slot_counts, any_flags)`: node `i` has `slot_counts[i]` parent slots (0 makes it
    a root, which can never be marked) and is an ANY barrier when `any_flags[i]` is true, an ALL
    barrier otherwise. Nodes and slots are plain indexes; an index out of range raises
    IndexError (negative indexes are out of range too).
    """

    __slots__ = ("_arrived", "_counts", "_disabled", "_is_any", "_offsets", "_stamps", "_waves")

    def __init__(self, slot_counts: Sequence[int], any_flags: Sequence[bool]) -> None:
        counts = [int(c) for c in slot_counts]
        flags = [bool(f) for f in any_flags]
        if len(counts) != len(flags):
            raise ValueError(f"slot_counts has {len(counts)} nodes but any_flags has {len(flags)}")
        offsets: list[int] = []
        total = 0
        for node, count in enumerate(counts):
            if count < 0:
                raise ValueError(f"node {node} has a negative slot count ({count})")
            offsets.append(total)
            total += count
        self._counts = counts
        self._is_any = flags
        self._offsets = offsets
        self._stamps = [0] * total
        self._waves = [1] * len(counts)
        self._arrived = [0] * len(counts)
        self._disabled = [False] * len(counts)

    def _check_node(self, node: int) -> None:
        if not 0 <= node < len(self._counts):
            raise IndexError(f"node {node} out of range (0..{len(self._counts) - 1})")

    def _slot_index(self, node: int, slot: int) -> int:
        self._check_node(node)
        if not 0 <= slot < self._counts[node]:
            raise IndexError(
                f"slot {slot} out of range for node {node} ({self._counts[node]} slots)"
            )
        return self._offsets[node] + slot

    def mark(self, node: int, slot: int) -> int:
        """Record that parent `slot` of `node` arrived; return IGNORED, FIRST, PROGRESS or FIRED.

        ALL node with n slots: a slot already arrived in this wave -> IGNORED; n == 1 -> FIRED;
        the first arrival of a wave -> FIRST; the arrival completing the set -> FIRED (and the
        next wave starts); any other -> PROGRESS.
        ANY node: a duplicate in the wave -> IGNORED; the first arrival of a wave -> FIRED;
        others -> PROGRESS; once every slot has arrived the next wave starts.
        A disabled node -> IGNORED, always.
        """
        index = self._slot_index(node, slot)
        if self._disabled[node]:
            return IGNORED
        wave = self._waves[node]
        if self._stamps[index] == wave:
            return IGNORED
        self._stamps[index] = wave
        arrived = self._arrived[node] + 1
        complete = arrived == self._counts[node]
        if complete:
            self._arrived[node] = 0
            self._waves[node] = wave + 1
        else:
            self._arrived[node] = arrived
        if self._is_any[node]:
            return FIRED if arrived == 1 else PROGRESS
        if complete:
            return FIRED
        return FIRST if arrived == 1 else PROGRESS

    def disable(self, node: int) -> None:
        """Make every later `mark()` of `node` IGNORED (its barrier timed out)."""
        self._check_node(node)
        self._disabled[node] = True

    def snapshot(self) -> tuple[dict[int, tuple[int, ...]], tuple[int, ...]]:
        """What a later `restore()` needs to go on from here: `(arrivals, disabled)`.

        `arrivals` maps every node with arrivals in its current wave to those slots (in
        order); `disabled` lists the disabled nodes (in order). Wave numbers are not part
        of it: a restored table starts a new wave holding exactly these arrivals.
        """
        arrivals: dict[int, tuple[int, ...]] = {}
        stamps = self._stamps
        for node, count in enumerate(self._counts):
            if self._arrived[node]:
                wave = self._waves[node]
                first = self._offsets[node]
                arrivals[node] = tuple(s for s in range(count) if stamps[first + s] == wave)
        disabled = tuple(node for node, off in enumerate(self._disabled) if off)
        return arrivals, disabled

    def restore(self, arrivals: dict[int, Iterable[int]], disabled: Iterable[int] = ()) -> None:
        """Go on from a `snapshot()`: each node's wave holds exactly `arrivals[node]`.

        Every node starts a new wave (earlier arrivals are forgotten), then gets the given
        slots (duplicates count once); the `disabled` nodes are disabled, every other node
        enabled. Checked before anything changes: IndexError for a node or slot out of
        range, ValueError for a node given every one of its slots (that wave would have
        fired and ended: a snapshot never holds it), TypeError for anything not a dict of
        int -> ints, or not ints.
        """
        if not isinstance(arrivals, dict):
            raise TypeError(
                "JoinTable.restore(arrivals) needs a dict {node: slots}, got "
                f"{type(arrivals).__name__}"
            )
        marks: list[tuple[int, set[int]]] = []
        for key, slots in arrivals.items():
            node = operator.index(key)
            self._check_node(node)
            count = self._counts[node]
            got: set[int] = set()
            for value in _ints(slots):
                slot = operator.index(value)
                if not 0 <= slot < count:
                    raise IndexError(
                        f"slot {slot} out of range for node {node} ({count} slots)"
                    )
                got.add(slot)
            if got and len(got) == count:
                raise ValueError(
                    f"node {node}: all {count} slots arrived, which ends the wave; a snapshot "
                    "never holds a complete wave"
                )
            marks.append((node, got))
        off: list[int] = []
        for value in _ints(disabled):
            node = operator.index(value)
            self._check_node(node)
            off.append(node)
        for node in range(len(self._counts)):
            self._waves[node] += 1
            self._arrived[node] = 0
            self._disabled[node] = False
        for node, got in marks:
            wave = self._waves[node]
            first = self._offsets[node]
            for slot in got:
                self._stamps[first + slot] = wave
            self._arrived[node] = len(got)
        for node in off:
            self._disabled[node] = True


def _ints(values: Any) -> Iterable[Any]:
    """`values` as an iterable (TypeError naming what it got, e.g. a bare int)."""
    try:
        found: Iterator[Any] = iter(values)
    except TypeError:
        raise TypeError(
            f"JoinTable.restore needs iterables of ints, got {type(values).__name__}"
        ) from None
    return found
