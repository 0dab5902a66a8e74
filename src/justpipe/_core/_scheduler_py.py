"""The readiness check: which successors of a completed node became ready.

Pure-Python twin of `_scheduler.pyx`; both must behave identically (tests/test_core_parity.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from justpipe._core._barrier_py import FIRED, FIRST, JoinTable

__all__ = ["Readiness"]


_VALIDATED: dict[int, tuple[Any, Any, list[tuple[tuple[int, int], ...]]]] = {}


def _validated_edges(
    successors: Sequence[Sequence[tuple[int, int]]], slot_counts: Sequence[int]
) -> list[tuple[tuple[int, int], ...]]:
    """Validate the static edges and freeze them: one tuple of `(v, slot)` pairs per node.

    Raises ValueError when the lengths disagree or an edge names a node or slot that
    does not exist, so `Readiness.complete()` never meets a bad index. The result for an
    immutable (tuple) input is remembered: an execution plan's edges are checked once,
    not on every run.
    """
    if type(successors) is tuple and type(slot_counts) is tuple:
        hit = _VALIDATED.get(id(successors))
        if hit is not None and hit[0] is successors and hit[1] is slot_counts:
            return hit[2]
        frozen = _validate_edges(successors, slot_counts)
        if len(_VALIDATED) >= 64:
            _VALIDATED.clear()
        _VALIDATED[id(successors)] = (successors, slot_counts, frozen)
        return frozen
    return _validate_edges(successors, slot_counts)


def _validate_edges(
    successors: Sequence[Sequence[tuple[int, int]]], slot_counts: Sequence[int]
) -> list[tuple[tuple[int, int], ...]]:
    if len(successors) != len(slot_counts):
        raise ValueError(
            f"successors has {len(successors)} nodes but slot_counts has {len(slot_counts)}"
        )
    nodes = len(slot_counts)
    frozen: list[tuple[tuple[int, int], ...]] = []
    for u, edges in enumerate(successors):
        row: list[tuple[int, int]] = []
        for v, slot in edges:
            v, slot = int(v), int(slot)
            if not 0 <= v < nodes:
                raise ValueError(f"edge {u} -> {v}: no node {v}")
            if not 0 <= slot < slot_counts[v]:
                raise ValueError(
                    f"edge {u} -> {v}: slot {slot} out of range ({slot_counts[v]} slots)"
                )
            row.append((v, slot))
        frozen.append(tuple(row))
    return frozen


class Readiness:
    """Static successor edges plus the run's `JoinTable`.

    `Readiness(successors, slot_counts, any_flags)`: `successors[u]` lists the edges
    `u -> v` as `(v, slot_of_u_in_v)` in order; `slot_counts`/`any_flags` describe the
    join of every node as for `JoinTable`.
    """

    __slots__ = ("_successors", "table")

    table: JoinTable
    """The underlying join table (the barrier manager calls its `disable()`)."""

    def __init__(
        self,
        successors: Sequence[Sequence[tuple[int, int]]],
        slot_counts: Sequence[int],
        any_flags: Sequence[bool],
    ) -> None:
        self._successors = _validated_edges(successors, slot_counts)
        self.table = JoinTable(slot_counts, any_flags)

    def complete(self, node: int) -> list[int]:
        """Mark `node`'s arrival at each successor, in successor order.

        Returns one int per successor whose mark was FIRED (encoded as `v`) or FIRST
        (encoded as `~v`, i.e. `-v - 1`); IGNORED and PROGRESS successors are left out.
        """
        if not 0 <= node < len(self._successors):
            raise IndexError(f"node {node} out of range (0..{len(self._successors) - 1})")
        mark = self.table.mark
        ready: list[int] = []
        for v, slot in self._successors[node]:
            result = mark(v, slot)
            if result == FIRED:
                ready.append(v)
            elif result == FIRST:
                ready.append(~v)
        return ready
