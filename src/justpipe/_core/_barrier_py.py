"""Join bookkeeping for one run: which parents of each join node arrived in the current wave.

Pure-Python twin of `_barrier.pyx`; both must behave identically (tests/test_core_parity.py).

Every node `i` owns `slot_counts[i]` parent slots, laid out in one flat array. Instead of a
bit per slot that must be cleared when a wave ends, each slot remembers the number of the
wave in which it last arrived: a slot has arrived in the current wave exactly when its stamp
equals the node's wave number, so ending a wave is one increment. With the per-node arrival
counter this makes `mark()` O(1) whatever the number of parents (no 64-parent cap, no sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

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
