"""Map fan-out (`@pipe.map`): feeding items to worker invocations, and MAP_* events.

Task side (the map's own invocation, after its function returned the items):

* a sized result (list, tuple, range, ...) behaves as in justpipe 0.12: MAP_START
  with the count, every MAP_WORKER up front, then one worker invocation per item,
  all decided before any starts; with `max_concurrency=k` (k < count) a fixed pool
  of k worker coroutines pulls the items instead (no task per item);
* an unsized iterable (a generator, an async generator) with `max_concurrency` is
  consumed lazily by the pool: MAP_START has no count, each MAP_WORKER is emitted
  just before its worker starts, and the source is closed when the pool stops; so
  memory stays proportional to k whatever the number of items;
* the feeder (the last pool worker to leave, or the map's invocation) reports
  MAP_FED; a failing source goes through the map's error-handling chain.

Loop side: each worker's completion updates the map's bookkeeping; once fed and every
started worker finished, the map publishes MAP_COMPLETE and its STEP_END, and the
orchestrator runs the map's successors (unless a worker returned Skip).

Liveness: a pool worker gives the event loop a turn every `TURN_EVERY` items, so
workers that never suspend do not starve the run's timeout, cancellation or the
consumer; and with an unbounded channel (`queue_size=0`) the pool waits whenever
the channel's backlog passes `_BACKLOG_PER_WORKER` records per worker until the
consumer has drained it, so a bounded map keeps memory O(max_concurrency) even then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sized
from typing import TYPE_CHECKING, Any

from justpipe._kernel.context import _Invocation, _MapRun, _RunContext
from justpipe._kernel.errors import _ErrorChain
from justpipe._kernel.invoker import TURN_EVERY
from justpipe._kernel.journal import RunJournal
from justpipe._kernel.outcomes import Outcome
from justpipe._kernel.plan import MapPlan, NodePlan
from justpipe._kernel.records import (
    completion,
    event_record,
    map_worker_record,
    step_record,
)
from justpipe.types import EventType, NodeKind, StepStatus

if TYPE_CHECKING:
    from justpipe._core._channel_py import ControlChannel as _ControlChannel
    from justpipe._kernel.kernel import _Kernel

__all__ = ["RunInvocation", "_MapFanOut"]

# runs one invocation to its completion record (`_StepRunner.run`); `True`: a map worker
RunInvocation = Callable[[_Invocation, bool], Coroutine[Any, Any, None]]

# with queue_size=0: records a pool may have waiting in the channel, per worker, before
# its workers wait for the consumer to drain it
_BACKLOG_PER_WORKER = 16
_BACKLOG_MIN = 64

# Hot-path aliases: a module global costs ~30 ns to read, an enum member's class attribute
# ~200 ns on 3.11 (timeit, docs/performance.md); only names read per event or per step.
_MAP = NodeKind.MAP
_MAP_FED = Outcome.MAP_FED


class _MapFanOut:
    __slots__ = (
        "_ctx",
        "_channel",
        "_kernel",
        "_ids",
        "_attempts",
        "_errors",
        "_unbounded",
        "_backlog_waiters",
        "pooled",
        "_journal",
    )

    def __init__(
        self,
        ctx: _RunContext,
        channel: _ControlChannel,
        kernel: _Kernel,
        ids: Any,
        attempts: Any,
        errors: _ErrorChain,
        unbounded_channel: bool,
        journal: RunJournal | None,
    ) -> None:
        self._ctx = ctx
        self._channel = channel
        self._kernel = kernel
        self._ids = ids
        self._attempts = attempts
        self._errors = errors
        self._unbounded = unbounded_channel
        self._backlog_waiters: list[asyncio.Future[None]] = []
        self.pooled = 0  # worker invocations run inside pool tasks (counted as tasks in metrics)
        self._journal = journal  # a journaled run's: told of each map's items (`journal.py`)

    # ------------------------------------------------------------------ task side

    async def start(self, node: MapPlan, inv: _Invocation, result: Any, run: RunInvocation) -> None:
        """Feed the items of `result` to worker invocations; MAP_FED follows when all are out."""
        is_async = hasattr(result, "__aiter__")
        if not is_async and not _is_iterable(result):
            raise ValueError(
                f"Step '{node.name}' decorated with @pipe.map must return an iterable, got "
                f"{type(result)}. Return a list, a generator or an async generator of items."
            )
        worker = self._ctx.plan.nodes[node.worker] if node.worker >= 0 else None
        limit = node.max_concurrency
        if limit is None or isinstance(result, Sized):
            await self._sized(node, inv, worker, await _materialize(node, result, is_async), run)
        elif self._journal is None:
            await self._lazy(node, inv, worker, result, is_async, limit, run)
        else:
            # a journaled run reads a lazy source whole first (its journal keeps the items, so
            # that a continued map runs only the rest without calling its source again); the
            # pool then replays them as from the source: the events are a lazy map's
            items, error = await _read_whole(node, result, is_async)
            await self._lazy(node, inv, worker, _replay(items, error), False, limit, run, items)

    async def _sized(
        self,
        node: MapPlan,
        inv: _Invocation,
        worker: NodePlan | None,
        items: list[Any],
        run: RunInvocation,
    ) -> None:
        ch = self._channel
        n = len(items)
        target = node.each
        await ch.put(step_record(EventType.MAP_START, inv, {"target": target, "item_count": n}))
        offer = ch.offer
        unsuspended = 0
        for i in range(n):
            record = map_worker_record(inv, target, node.name, i, n)
            if offer(record):
                unsuspended += 1
                if unsuspended >= TURN_EVERY:
                    unsuspended = 0
                    await asyncio.sleep(0)
            else:
                unsuspended = 0
                await ch.put(record)
        map_run = _MapRun(inv, worker, n)
        if self._journal is not None:
            self._journal.map_started(map_run, items)
        await self._feed(node, map_run, list(enumerate(items)), run)

    async def _feed(
        self, node: MapPlan, map_run: _MapRun, items: list[tuple[int, Any]], run: RunInvocation
    ) -> None:
        """Hand the `(index, item)` pairs to workers (all at once, or through a pool)."""
        limit = node.max_concurrency
        if limit is None or limit >= len(items):
            workers = []
            if not self._ctx.stopping:
                workers = [self._worker(map_run, i, item, run) for i, item in items]
            map_run.started += len(workers)
            spawn = self._kernel.spawn
            for coro in workers:  # all decided before any starts (eagerly)
                spawn(coro)
            self._channel.put_nowait(completion(map_run.inv, _MAP_FED, map_run))
        else:
            source = iter(items)
            await self._run_pool(map_run, limit, lambda: _next_sync(source), None, run)

    async def resume(
        self, node: MapPlan, inv: _Invocation, items: list[Any], done: set[int], run: RunInvocation
    ) -> None:
        """A journaled run's continued map: the items not `done` only (its source is not called).

        MAP_START with the whole count, MAP_WORKER for each remaining item, then as `_sized`;
        MAP_COMPLETE and the map's STEP_END follow as for any map.
        """
        ch = self._channel
        n = len(items)
        target = node.each
        await ch.put(step_record(EventType.MAP_START, inv, {"target": target, "item_count": n}))
        pending = [(i, item) for i, item in enumerate(items) if i not in done]
        for i, _ in pending:
            await ch.put(map_worker_record(inv, target, node.name, i, n))
        worker = self._ctx.plan.nodes[node.worker] if node.worker >= 0 else None
        map_run = _MapRun(inv, worker, n)
        map_run.started = map_run.finished = n - len(pending)
        if self._journal is not None:
            self._journal.map_started(map_run, items)
        await self._feed(node, map_run, pending, run)

    async def _lazy(
        self,
        node: MapPlan,
        inv: _Invocation,
        worker: NodePlan | None,
        result: Any,
        is_async: bool,
        limit: int,
        run: RunInvocation,
        items: list[Any] | None = None,
    ) -> None:
        """A pool consuming `result` as it goes (`items`: a journaled run's, read whole)."""
        await self._channel.put(
            step_record(EventType.MAP_START, inv, {"target": node.each, "item_count": None})
        )
        map_run = _MapRun(inv, worker, None)
        if items is not None and self._journal is not None:
            self._journal.map_started(map_run, items)
        if is_async:
            source = result.__aiter__()
            lock = asyncio.Lock()
            await self._run_pool(map_run, limit, None, (source, lock), run, closing=result)
        else:
            sync_source = iter(enumerate(result))
            await self._run_pool(
                map_run, limit, lambda: _next_sync(sync_source), None, run, closing=result
            )

    async def _run_pool(
        self,
        map_run: _MapRun,
        limit: int,
        next_sync: Callable[[], tuple[int, Any] | None] | None,
        async_source: tuple[AsyncIterator[Any], asyncio.Lock] | None,
        run: RunInvocation,
        closing: Any = None,
    ) -> None:
        """A fixed pool of `limit` workers pulling items: O(limit) tasks and memory.

        `closing` is a lazy source (generator) closed by the last worker to leave, also
        when the run is cancelled or times out.
        """
        pool = _Pool(limit, next_sync, async_source, closing, run)
        for _ in range(limit - 1):
            self._kernel.spawn(self._pool_worker(map_run, pool))
        await self._pool_worker(map_run, pool)

    async def _pool_worker(self, map_run: _MapRun, pool: _Pool) -> None:
        lazy = map_run.total is None
        ctx = self._ctx
        channel = self._channel
        backlog = _BACKLOG_PER_WORKER * pool.size + _BACKLOG_MIN if self._unbounded else 0
        run = pool.run
        done_here = 0
        try:
            while not ctx.stopping and not pool.failed:
                if backlog and len(channel) > backlog:
                    await self._drained()
                    if ctx.stopping:
                        break
                try:
                    next_sync = pool.next_sync
                    got = next_sync() if next_sync is not None else await pool.next_async()
                except Exception as exc:
                    pool.failed = True
                    pool.error = exc
                    break
                if got is None:
                    break
                index, item = got
                map_run.started += 1
                self.pooled += 1
                if lazy:
                    await self._lazy_worker_event(map_run, index)
                await self._worker(map_run, index, item, run)
                done_here += 1
                if done_here >= TURN_EVERY:
                    done_here = 0
                    await asyncio.sleep(0)
        finally:
            pool.live -= 1
            last = pool.live == 0
            if last and pool.closing is not None:
                await _close_source(pool.closing)
        if last:
            await self._close_feed(map_run, pool.error)

    async def _drained(self) -> None:
        """Wait until the consumer has drained the channel (`queue_size=0` only)."""
        waiter = asyncio.get_running_loop().create_future()
        self._backlog_waiters.append(waiter)
        await waiter

    def channel_drained(self) -> None:
        """The loop found the channel empty: pools waiting on their backlog go on."""
        waiters = self._backlog_waiters
        if waiters:
            self._backlog_waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _close_feed(self, map_run: _MapRun, error: BaseException | None) -> None:
        inv = map_run.inv
        if error is not None and isinstance(error, Exception):
            outcome, _ = await self._errors.handle(inv, error, time.perf_counter(), None)
            if outcome is Outcome.SKIP:
                map_run.skipped = True
            elif outcome is Outcome.FAIL:
                map_run.errored = True
            elif (
                outcome is Outcome.STOP
                or outcome is Outcome.SUSPEND
                or outcome is Outcome.CANCELLED
            ):
                self._ctx.stop()
        self._channel.put_nowait(completion(inv, _MAP_FED, map_run))

    async def _lazy_worker_event(self, map_run: _MapRun, index: int) -> None:
        inv = map_run.inv
        node = inv.node
        assert isinstance(node, MapPlan)
        await self._channel.put(map_worker_record(inv, node.each, node.name, index, None))

    def _worker(
        self, map_run: _MapRun, index: int, item: Any, run: RunInvocation
    ) -> Coroutine[Any, Any, None]:
        """The invocation of the map's worker for item `index` (a coroutine to run)."""
        owner = map_run.inv
        name = map_run.worker_name
        inv = _Invocation(
            map_run.worker,
            name,
            self._ids.next(),
            owner.inv_id,
            owner.inv_id,
            self._attempts.next(name),
            (*owner.scope, f"{name}[{index}]"),
            True,
            item,
            map_run,
        )
        return run(inv, True)

    # ------------------------------------------------------------------ loop side

    def finish_if_done(self, mr: _MapRun) -> bool:
        """Once fed and every worker finished: MAP_COMPLETE and the map's STEP_END.

        True when the map has just finished and its successors should run.
        """
        if not mr.fed or mr.finished != mr.started or mr.closed:
            return False
        mr.closed = True
        inv = mr.inv
        put = self._channel.put_nowait
        put(
            event_record(
                EventType.MAP_COMPLETE,
                inv.name,
                {
                    "target": mr.worker_name,
                    "item_count": mr.started if mr.total is None else mr.total,
                    "owner_invocation_id": inv.inv_id,
                    "owner_scope": inv.scope,
                },
                _MAP,
                inv.inv_id,
                None,
                inv.inv_id,
                inv.attempt,
                inv.scope,
                None,
            )
        )
        if not mr.errored:
            meta = None
            if mr.total == 0:  # an empty map's STEP_END is its own invocation's end
                meta = {
                    "framework": {
                        "duration_s": round(time.perf_counter() - mr.t0, 6),
                        "attempt": inv.attempt,
                        "status": StepStatus.SUCCESS,
                    }
                }
            put(step_record(EventType.STEP_END, inv, self._ctx.state, meta))
        if self._journal is not None and not self._journal.map_closed(mr):
            return False  # kept by the journal (a suspended run's unfinished map): not yet
        return not mr.skipped


class _Pool:
    """One bounded map's pool: its item source and how many workers are still in it."""

    __slots__ = (
        "size",
        "live",
        "failed",
        "error",
        "index",
        "closing",
        "run",
        "next_sync",
        "_async",
    )

    def __init__(
        self,
        size: int,
        next_sync: Callable[[], tuple[int, Any] | None] | None,
        async_source: tuple[AsyncIterator[Any], asyncio.Lock] | None,
        closing: Any,
        run: RunInvocation,
    ) -> None:
        self.size = size
        self.live = size
        self.failed = False
        self.error: BaseException | None = None
        self.index = 0
        self.closing = closing
        self.run = run
        self.next_sync = next_sync  # a sync source's next (index, item), or None at its end
        self._async = async_source

    async def next_async(self) -> tuple[int, Any] | None:
        """An async source's next (index, item), or None when it is exhausted."""
        assert self._async is not None
        source, lock = self._async
        async with lock:
            try:
                item = await source.__anext__()
            except StopAsyncIteration:
                return None
            index = self.index
            self.index += 1
            return index, item


async def _close_source(source: Any) -> None:
    """Close a lazy map source (async or sync generator) we stopped consuming."""
    try:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            close = getattr(source, "close", None)
            if close is not None:
                close()
    except Exception:  # a source failing while closing must not hide the run's outcome
        logging.getLogger(__name__).warning("map source %r failed while closing", source)


def _next_sync(source: Iterator[tuple[int, Any]]) -> tuple[int, Any] | None:
    try:
        return next(source)
    except StopIteration:
        return None


def _is_iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


async def _read_whole(
    node: MapPlan, result: Any, is_async: bool
) -> tuple[list[Any], Exception | None]:
    """A lazy source's items, and the exception that ended it early (None: it ran out).

    A journaled run's: its items are recorded, so an async source is capped as a sized
    map's is (`max_map_items`).
    """
    items: list[Any] = []
    cap = node.max_map_items
    try:
        if is_async:
            async for item in result:
                items.append(item)
                if len(items) > cap:
                    break
        else:
            items.extend(result)
    except Exception as exc:
        # its traceback starts in the source, as when a plain run's pool meets it
        exc.__traceback__ = exc.__traceback__.tb_next if exc.__traceback__ else None
        return items, exc
    if is_async and len(items) > cap:
        await _close_source(result)
        raise ValueError(
            f"Step '{node.name}' (map) exceeded maximum of {cap} items from its async "
            "generator. A durable run holds a map's items (to resume it): raise "
            "Pipe(max_map_items=...) or split the map."
        )
    return items, None


def _replay(items: list[Any], error: Exception | None) -> Iterator[Any]:
    """`items` again, then the exception their source ended with, as the source would."""
    yield from items
    if error is not None:
        raise error


async def _materialize(node: MapPlan, result: Any, is_async: bool) -> list[Any]:
    if not is_async:
        return list(result)
    cap = node.max_map_items
    items: list[Any] = []
    async for item in result:
        items.append(item)
        if len(items) > cap:
            raise ValueError(
                f"Step '{node.name}' (map) exceeded maximum of {cap} items from its async "
                "generator. Raise Pipe(max_map_items=...) or set max_concurrency=... to stream "
                "items lazily."
            )
    return items
