"""The invariants every run must keep, whatever its graph, faults and consumer do.

`check_run(record)` collects every violation of one `RunRecord` and fails with
all of them plus the event trace. The invariants, precisely:

Stream (what the consumer got, and each observed run's `on_event` sequence)
  S1  `seq` is 1, 2, 3 ... with no gap, and every event carries the stream's `run_id`.
  S2  At most one *root* FINISH (type FINISH, stage ``"system"``, ``parent_run_id`` None),
      and it is the last event. A consumer that iterated to the end got exactly one.
      (Forwarded child FINISH events have stage ``"<sub>:system"`` and are not root.)
  S3  The consumer's events are a prefix of what the root observer saw. If the consumer left
      before the root FINISH, the observer's extra events (those still queued when the
      consumer left, if the runtime hands them to observers) end with that root FINISH
      (status CLIENT_CLOSED after ``aclose()``/``break``, CANCELLED after the consumer task
      was cancelled).

Terminal outcome (each observed run's FINISH payload)
  T1  A *delivered* FINISH (the root's reached the consumer; a child run's was forwarded
      into its parent's stream) has status TIMEOUT if the run emitted TIMEOUT, else
      CANCELLED if the run emitted a native CANCELLED, else FAILED if any STEP_ERROR reached
      the stream (forwarded child errors included), else SUCCESS. (A FINISH the runtime
      wrote because its consumer left says CLIENT_CLOSED or CANCELLED: S3.)
  T2  ``len(errors)`` equals the number of STEP_ERROR events of the stream, and
      ``metrics.events`` counts exactly the events published before FINISH.

Invocations, per *origin group* (events sharing an ``origin_run_id``: the run's native
events, and separately the events forwarded from each child run; invocation ids are
only unique within one run)
  I1  An invocation id has at most one STEP_START; every STEP_END / STEP_ERROR /
      CANCELLED carrying an invocation id follows that invocation's STEP_START.
      (Barrier-timeout STEP_ERRORs carry no invocation id: spec §21 B12.)
  I2  An invocation has at most one *terminal* event: STEP_END, STEP_ERROR or CANCELLED.
      CANCELLED is the terminal of a cancelled invocation (it gets neither END nor ERROR).
  I3  An attempt abandoned by ``Retry()`` has no terminal: the next attempt is a STEP_START
      with ``parent_invocation_id`` = the abandoned attempt and the same stage and scope.
  I4  On a *settled* run (its FINISH was delivered and it did not time out, so no task of
      it was cancelled) every STEP_START has exactly one terminal, except an
      abandoned attempt (I3) and an attempt whose ``Retry()`` was dropped because the run
      was already stopping (§9.2 refuses every later spawn). The latter are bounded: per
      stage, at most the number of ``Retry()`` the user code returned minus the retries
      that did start, and only in a run where a stop was requested.
      Map and sub owners are invocations too: their STEP_END is deferred until the
      workers / the child run finished (I5), but it is still their one terminal.
  I5  Map fan-out of owner invocation M: M's STEP_START < MAP_START; each worker's first
      attempt starts after the MAP_WORKER of its index; at most one MAP_COMPLETE, after
      every worker STEP_START and every worker terminal, with ``item_count`` = workers
      started; M's STEP_END (if any) after MAP_COMPLETE. A settled run completes every
      map it started.

Causality, for a run's native events (the spec of that pipe is known)
  C1  A STEP_START with a ``parent_invocation_id`` follows the parent's STEP_START; when it
      is a dynamic route (neither a retry nor a map worker) it also follows the parent's
      STEP_END (§8.3).
  C2  A STEP_START reached through static edges (no parent invocation) is either the root
      or a node with ``to=`` parents: for an ALL join every parent (alternative routes of
      one switch count once) has completed before, for an ANY join at least one has.
      After a barrier timeout of X, no static STEP_START of X follows. (A route returned by
      the handler of a barrier timeout has no source invocation and is exempt.)

Barriers, for a run's native events
  B1  Per join node, BARRIER_WAIT and its outcome alternate: a BARRIER_RELEASE or a
      barrier-timeout STEP_ERROR ("Barrier timeout ...", no invocation id) only follows an
      open BARRIER_WAIT of that node, and closes it.

Lifecycle (the whole example)
  L1  Every shutdown hook of every run ran exactly once: the root's once, each child
      pipe's as many times as its startup hook (= its runs).
  L2  Every run (root and children) had ``on_pipeline_start`` once and exactly one of
      ``on_pipeline_end`` / ``on_pipeline_error`` — also after a client close — matching
      the FINISH's ``error``.
  L3  No task created during the run is alive once the stream is done or closed.
  L4  The loop's exception handler was never called (no "Task exception was never
      retrieved", no un-awaited close), and no RuntimeWarning/ResourceWarning was issued.
  L5  The consumer's iteration raised nothing (it may only be cancelled when the
      consumer spec cancels it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from justpipe.types import (
    Event,
    EventType,
    PipelineEndData,
    PipelineTerminalStatus,
)

from .harness import ObservedRun, RunRecord
from .strategies import PipeSpec

__all__ = ["check_events", "check_run", "group_by_origin", "render_trace"]

_TERMINAL = (EventType.STEP_END, EventType.STEP_ERROR, EventType.CANCELLED)
_ABNORMAL = (PipelineTerminalStatus.CLIENT_CLOSED,)


# Violations caused by bugs filed in /tmp/kernel-bugs.md, tolerated here so that the fuzz
# keeps hunting for new ones. Each has a strict-xfail test pinning it (test_regressions.py);
# when that test XPASSes, delete its entry here.
KNOWN_BUGS: dict[str, Callable[[str, RunRecord], bool]] = {}


def _tolerated(problem: str, record: RunRecord) -> bool:
    return any(known(problem, record) for known in KNOWN_BUGS.values())


def check_run(record: RunRecord) -> None:
    problems = [p for p in _all_problems(record) if not _tolerated(p, record)]
    if problems:
        raise AssertionError(
            f"{len(problems)} invariant violation(s):\n  - " + "\n  - ".join(problems)
            + f"\n\nconsumer events:\n{render_trace(record.events)}"
            + _render_observed(record)
        )


def _all_problems(record: RunRecord) -> Iterable[str]:
    yield from _lifecycle(record)
    root_id = record.root_run_id
    if root_id is None:
        yield f"expected exactly one root run, observers saw {_runs_by_pipe(record)}"
        return
    yield from _consumer_view(record, record.recorder.observed[root_id])
    specs = {spec.name: spec for spec in record.spec.pipe.walk()}
    for run_id, observed in record.recorder.observed.items():
        spec = specs[observed.pipe_name]
        label = f"[{observed.pipe_name} {run_id[:6]}]"
        for problem in _observed_run(record, observed, spec):
            yield f"{label} {problem}"


def check_events(events: list[Event]) -> None:
    """S1, S2, I1-I5 for a run read to its end that requested no Retry() and no stop."""
    problems = list(_numbering(events, "consumer"))
    roots = [i for i, e in enumerate(events) if _is_root_finish(e)]
    if roots != [len(events) - 1]:
        problems.append(f"S2 root FINISH at positions {roots} of {len(events)}")
    for origin, group in group_by_origin(events).items():
        native = origin == events[0].run_id
        problems += _invocations(group, native, Counter(), False, lineage=native)
        if native:
            problems += _maps(group, settled=True)
    if problems:
        raise AssertionError("\n".join(problems[:20]) + f"\n({len(events)} events)")


# ---------------------------------------------------------------------- lifecycle


def _lifecycle(record: RunRecord) -> Iterable[str]:
    rec = record.recorder
    mode = record.spec.consumer.mode
    if record.raised is not None:
        yield f"L5 the consumer's iteration raised {record.raised!r}"
    if mode == "full" and not record.completed:
        yield "L5 a plain `async for` did not reach the end of the stream"
    for spec in record.spec.pipe.walk():
        runs = rec.startups[spec.name]
        if spec.name == "root" and runs != 1:
            yield f"L1 root startup hook ran {runs} times"
        for hook in ("#1", "#2"):
            if rec.shutdowns[spec.name + hook] != runs:
                yield (f"L1 shutdown hook {hook} of {spec.name} ran "
                       f"{rec.shutdowns[spec.name + hook]} times for {runs} run(s)")
        observed = sum(o.pipe_name == spec.name for o in rec.observed.values())
        if observed != runs:
            yield f"L2 {spec.name}: observers saw {observed} run(s), startup hook ran {runs}"
    if record.leftover_tasks:
        yield f"L3 tasks alive after the stream ended: {record.leftover_tasks!r}"
    for context in record.loop_errors:
        yield f"L4 loop exception handler called: {context.get('message')!r} " \
              f"{context.get('exception')!r}"
    for warning in record.warnings:
        if issubclass(warning.category, (RuntimeWarning, ResourceWarning)):
            yield f"L4 {warning.category.__name__}: {warning.message}"


def _consumer_view(record: RunRecord, root: ObservedRun) -> Iterable[str]:
    events = record.events
    yield from _numbering(events, "consumer")
    roots = [i for i, e in enumerate(events) if _is_root_finish(e)]
    if len(roots) > 1 or (roots and roots[0] != len(events) - 1):
        yield f"S2 consumer: root FINISH at positions {roots} of {len(events)}"
    if record.completed and not roots:
        yield "S2 consumer iterated to the end but got no root FINISH"
    seen = root.events
    if seen[: len(events)] != events:
        yield "S3 the consumer's events are not a prefix of the observer's"
        return
    tail = seen[len(events):]
    if roots:
        if tail:
            yield f"S3 observer saw events after the root FINISH: {_short(tail)}"
        return
    if not tail or not _is_root_finish(tail[-1]):
        yield f"S3 consumer left early; observer's extra events: {_short(tail)}"
        return
    status = tail[-1].payload.status
    expected = (PipelineTerminalStatus.CANCELLED if record.spec.consumer.mode == "cancel_task"
                else PipelineTerminalStatus.CLIENT_CLOSED)
    if status is not expected:
        yield f"S3 FINISH after the consumer left has status {status}, expected {expected}"


# ---------------------------------------------------------------------- one observed run


def _observed_run(record: RunRecord, observed: ObservedRun, spec: PipeSpec) -> Iterable[str]:
    events = observed.events
    if observed.starts != 1:
        yield f"L2 on_pipeline_start called {observed.starts} times"
    yield from _numbering(events, "observer")
    roots = [i for i, e in enumerate(events) if _is_root_finish(e)]
    if len(roots) != 1 or roots[0] != len(events) - 1:
        yield f"S2 observer: root FINISH at positions {roots} of {len(events)}"
        return
    finish = events[-1]
    data = finish.payload
    if not isinstance(data, PipelineEndData):
        yield f"T1 FINISH payload is {type(data).__name__}"
        return
    expected_terminal = ["error" if data.error is not None else "end"]
    if observed.terminals != expected_terminal:
        yield f"L2 terminal callbacks {observed.terminals}, expected {expected_terminal}"
    delivered = finish.run_id in _delivered_finishes(record)
    settled = delivered and not _has(events, EventType.TIMEOUT)
    yield from _outcome(events, data, delivered)
    groups = group_by_origin(events)
    native = groups.pop(finish.run_id or "", [])
    prefix = _stage_prefix(spec.name)
    stopping = record.recorder.stop_requests > 0 or _has(events, EventType.SUSPEND) \
        or _has(events, EventType.CANCELLED)
    retries = Counter({stage[len(prefix):]: n for stage, n in record.recorder.retry_returns.items()
                       if stage.startswith(prefix)})
    yield from _invocations(native, settled, retries, stopping)
    yield from _maps(native, settled)
    yield from _causality(native, spec)
    yield from _barriers(native)
    for origin, group in groups.items():
        yield from _invocations(group, False, Counter(), False, lineage=False)
        yield from _forwarded(group, record.recorder.observed.get(origin), settled)


def _forwarded(group: list[Event], child: ObservedRun | None, settled: bool) -> Iterable[str]:
    """F1: what a parent forwards from a child run is, in order, that run's own stream."""
    if child is None:
        yield f"F1 events forwarded from a run no observer saw: {_short(group[:3])}"
        return
    own = [e for e in child.events if e.origin_run_id == e.run_id]
    if len(group) > len(own):
        yield f"F1 {len(group)} events forwarded from a run that published {len(own)}"
    for copy, original in zip(group, own, strict=False):
        if (copy.type, copy.invocation_id, copy.timestamp, copy.attempt) != \
                (original.type, original.invocation_id, original.timestamp, original.attempt) \
                or not copy.stage.endswith(":" + original.stage) \
                or copy.payload is not original.payload:
            yield f"F1 forwarded {_short([copy])} differs from the child's {_short([original])}"
            return
    if settled and len(group) != len(own):
        yield f"F1 settled run forwarded {len(group)} of the child's {len(own)} events"


def _delivered_finishes(record: RunRecord) -> set[str]:
    """Runs whose FINISH reached their consumer: the root's consumer, or a parent that
    forwarded it (a child's FINISH is only yielded when the child ends on its own)."""
    found = {e.run_id for e in record.events if _is_root_finish(e) and e.run_id}
    for observed in record.recorder.observed.values():
        found.update(e.origin_run_id for e in observed.events
                     if e.type is EventType.FINISH and e.parent_run_id is not None
                     and e.stage.endswith(":system") and e.origin_run_id)
    return found


def _outcome(events: list[Event], data: PipelineEndData, delivered: bool) -> Iterable[str]:
    body = events[:-1]
    errors = sum(e.type is EventType.STEP_ERROR for e in body)
    if len(data.errors) != errors:
        yield f"T2 FINISH lists {len(data.errors)} errors for {errors} STEP_ERROR events"
    if data.metrics is not None:
        published = Counter(e.type.value for e in body)
        reported = Counter(data.metrics.events)
        if +published != +reported:
            yield (f"T2 metrics.events misses {dict(published - reported)}, "
                   f"over-counts {dict(reported - published)}")
    if not delivered:
        return
    if _has(body, EventType.TIMEOUT, native=True):
        expected = PipelineTerminalStatus.TIMEOUT
    elif _has(body, EventType.CANCELLED, native=True):
        expected = PipelineTerminalStatus.CANCELLED
    elif errors:
        expected = PipelineTerminalStatus.FAILED
    else:
        expected = PipelineTerminalStatus.SUCCESS
    if data.status is not expected:
        yield f"T1 status {data.status} but the events say {expected}"


def _invocations(group: list[Event], settled: bool, retries: Counter[str], stopping: bool,
                 lineage: bool = True) -> Iterable[str]:
    """I1-I4. `retries`: Retry() results the user code returned, per stage; `stopping`: a
    stop was requested. Forwarded copies lose the child's parent links (lineage=False:
    only I1, I2)."""
    starts: dict[str, int] = {}
    terminals: dict[str, list[int]] = {}
    for pos, event in enumerate(group):
        inv = event.invocation_id
        if inv is None:
            continue
        if event.type is EventType.STEP_START:
            if inv in starts:
                yield f"I1 {inv} has two STEP_STARTs ({event.stage})"
            starts[inv] = pos
        elif event.type in _TERMINAL:
            if inv not in starts:
                yield f"I1 {event.type.value} {event.stage} of {inv} without an earlier STEP_START"
            terminals.setdefault(inv, []).append(pos)
    next_attempt = _next_attempts(group, starts) if lineage else {}
    dropped: Counter[str] = Counter()
    for inv, pos in starts.items():
        ends = terminals.get(inv, [])
        stage = group[pos].stage
        if len(ends) > 1:
            yield f"I2 {stage} {inv} has {len(ends)} terminal events"
        if inv in next_attempt:
            if ends:
                yield f"I3 {stage} {inv} was retried but also has a terminal event"
        elif not ends and settled:
            dropped[stage] += 1
    yield from _dropped_retries(dropped, next_attempt, group, retries, stopping)


def _next_attempts(group: list[Event], starts: dict[str, int]) -> dict[str, int]:
    """Invocation id -> position of the STEP_START of the attempt that retried it."""
    found: dict[str, int] = {}
    for pos, event in enumerate(group):
        parent = event.parent_invocation_id
        if event.type is not EventType.STEP_START or parent is None or parent not in starts:
            continue
        previous = group[starts[parent]]
        if previous.stage == event.stage and previous.scope == event.scope:
            found[parent] = pos
    return found


def _dropped_retries(dropped: Counter[str], next_attempt: dict[str, int], group: list[Event],
                     retries: Counter[str], stopping: bool) -> Iterable[str]:
    if not dropped:
        return
    started = Counter(group[pos].stage for pos in next_attempt.values())
    for stage, count in dropped.items():
        budget = retries[stage] - started[stage]
        if count > budget or not stopping:
            yield (f"I4 {count} STEP_START(s) of {stage} have no terminal event "
                   f"(Retry() budget {budget}, stop requested: {stopping})")


def _maps(group: list[Event], settled: bool) -> Iterable[str]:
    index = {e.invocation_id: pos for pos, e in enumerate(group)
             if e.type is EventType.STEP_START}
    for pos, event in enumerate(group):
        if event.type is EventType.MAP_START:
            yield from _one_map(group, pos, event, index, settled)


def _one_map(group: list[Event], pos: int, start: Event, index: dict[Any, int],
             settled: bool) -> Iterable[str]:
    owner = start.invocation_id
    name = f"map {start.stage} {owner}"
    if index.get(owner, len(group)) > pos:
        yield f"I5 {name}: MAP_START before the map's STEP_START"
    target = start.payload["target"]
    worker_marks: dict[int, int] = {}
    completes: list[int] = []
    owner_end: list[int] = []
    worker_starts: list[int] = []
    worker_terms: list[int] = []
    workers: set[Any] = set()
    for p, e in enumerate(group):
        if e.type is EventType.MAP_WORKER and e.invocation_id == owner:
            worker_marks[e.payload["index"]] = p
        elif e.type is EventType.MAP_COMPLETE and e.invocation_id == owner:
            completes.append(p)
        elif e.invocation_id == owner and e.type is EventType.STEP_END:
            owner_end.append(p)
        elif e.owner_invocation_id == owner and e.invocation_id != owner and e.stage == target:
            if e.type is EventType.STEP_START:
                worker_starts.append(p)
                if e.parent_invocation_id == owner:
                    workers.add(e.scope)
                    slot = _scope_index(e.scope)
                    mark = worker_marks.get(slot) if slot is not None else None
                    if mark is None or mark > p:
                        yield f"I5 {name}: worker {e.scope} starts before its MAP_WORKER"
            elif e.type in _TERMINAL:
                worker_terms.append(p)
    if len(completes) > 1:
        yield f"I5 {name}: {len(completes)} MAP_COMPLETE events"
    if not completes:
        if settled:
            yield f"I5 {name}: no MAP_COMPLETE in a settled run"
        return
    done = completes[0]
    late = [p for p in worker_starts + worker_terms if p > done]
    if late:
        yield f"I5 {name}: worker events after MAP_COMPLETE: {_short([group[p] for p in late])}"
    count = group[done].payload["item_count"]
    expected = start.payload["item_count"]  # sized: the materialised count; lazy: None
    if count != (len(workers) if expected is None else expected) or len(workers) > count:
        yield (f"I5 {name}: MAP_COMPLETE item_count {count}, MAP_START {expected}, "
               f"{len(workers)} workers started")
    if any(p < done for p in owner_end):
        yield f"I5 {name}: the map's STEP_END precedes MAP_COMPLETE"


def _causality(native: list[Event], spec: PipeSpec) -> Iterable[str]:
    nodes = {node.name: node for node in spec.nodes}
    parents: dict[str, list[str]] = {name: [] for name in nodes}
    for node in spec.nodes:
        for target in node.to:
            parents[target].append(node.name)
    starts: dict[Any, int] = {}
    ended: dict[Any, int] = {}
    completed: set[str] = set()
    timed_out: set[str] = set()
    map_owners = {e.invocation_id for e in native if e.type is EventType.MAP_START}
    waited: set[str] = set()  # joins whose barrier watcher started
    for pos, event in enumerate(native):
        etype = event.type
        if etype is EventType.STEP_START:
            # a route returned by a barrier-timeout handler has no source invocation (B12)
            if event.parent_invocation_id is not None or not _barrier_handler_may_route(
                    spec, waited, event.stage):
                yield from _start_causes(event, starts, ended, native, map_owners, nodes,
                                         parents, completed, timed_out, spec)
            starts[event.invocation_id] = pos
        elif etype is EventType.STEP_END:
            ended.setdefault(event.invocation_id, pos)
            completed.add(event.stage)
        elif etype is EventType.BARRIER_WAIT:
            waited.add(event.stage)
        elif etype in (EventType.STEP_ERROR, EventType.MAP_COMPLETE):
            completed.add(event.stage)
            if _is_barrier_timeout(event):
                timed_out.add(event.stage)


def _start_causes(event: Event, starts: dict[Any, int], ended: dict[Any, int],
                  native: list[Event], map_owners: set[Any], nodes: dict[str, Any],
                  parents: dict[str, list[str]], completed: set[str], timed_out: set[str],
                  spec: PipeSpec) -> Iterable[str]:
    parent = event.parent_invocation_id
    what = f"STEP_START {event.stage} {event.invocation_id}"
    if parent is not None:
        if parent not in starts:
            yield f"C1 {what}: parent {parent} has not started"
            return
        source = native[starts[parent]]
        retry = source.stage == event.stage and source.scope == event.scope
        worker = parent in map_owners and event.owner_invocation_id == parent
        if not retry and not worker and parent not in ended:
            yield f"C1 {what}: routed from {source.stage} {parent} before its STEP_END"
        return
    if event.stage == spec.nodes[0].name:
        return
    node_parents = parents.get(event.stage, [])
    if not node_parents:
        yield f"C2 {what}: no parent invocation, yet the node has no to= parents"
        return
    if event.stage in timed_out:
        yield f"C2 {what}: started after its barrier timed out"
    node = nodes[event.stage]
    missing = [slot for slot in _slots(node_parents, spec) if not (set(slot) & completed)]
    if node.barrier_any and len(missing) == len(_slots(node_parents, spec)):
        yield f"C2 {what}: ANY join started before any parent completed"
    elif not node.barrier_any and missing:
        yield f"C2 {what}: ALL join started before {missing} completed"


def _barriers(native: list[Event]) -> Iterable[str]:
    waiting: set[str] = set()
    for event in native:
        if event.type is EventType.BARRIER_WAIT:
            if event.stage in waiting:
                yield f"B1 second BARRIER_WAIT of {event.stage} while one is open"
            waiting.add(event.stage)
        elif event.type is EventType.BARRIER_RELEASE or _is_barrier_timeout(event):
            if event.stage not in waiting:
                yield f"B1 {event.type.value} of {event.stage} without an open BARRIER_WAIT"
            waiting.discard(event.stage)


def _is_barrier_timeout(event: Event) -> bool:
    return event.type is EventType.STEP_ERROR and event.invocation_id is None \
        and str(event.payload).startswith("Barrier timeout")


def _barrier_handler_may_route(spec: PipeSpec, waited: set[str], stage: str) -> bool:
    for node in spec.nodes:
        if node.name in waited and node.handler is not None and any(
                a.kind == "route" and a.arg == stage for a in node.handler):
            return True
    return False


def _slots(node_parents: list[str], spec: PipeSpec) -> list[list[str]]:
    """Parents grouped so that alternative routes of one switch (and its default) form one
    slot (spec §9.1; upstream counts the default route as a sibling too)."""
    slots: list[list[str]] = []
    for p in node_parents:
        for switch in spec.nodes:
            routes = {target for _, target in switch.routes} | {switch.default}
            if switch.kind == "switch" and p in routes:
                siblings = [q for q in node_parents if q in routes]
                if len(siblings) > 1:
                    slot = next((s for s in slots if p in s), None)
                    if slot is None:
                        slots.append(siblings)
                    break
        else:
            slots.append([p])
    return slots


# ---------------------------------------------------------------------- helpers


def _unlabel(problem: str) -> str:
    return problem.split("] ", 1)[1] if problem.startswith("[") else problem


def group_by_origin(events: list[Event]) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.origin_run_id or event.run_id or "?", []).append(event)
    return groups


def _numbering(events: list[Event], who: str) -> Iterable[str]:
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(events) + 1)):
        yield f"S1 {who}: seq is not 1..{len(events)}: {_gaps(seqs)}"
    run_ids = {e.run_id for e in events}
    if len(run_ids) > 1:
        yield f"S1 {who}: several run ids in one stream: {run_ids}"


def _gaps(seqs: list[Any]) -> str:
    bad = [(i + 1, s) for i, s in enumerate(seqs) if s != i + 1]
    return f"first mismatches (position, seq) {bad[:5]}"


def _is_root_finish(event: Event) -> bool:
    return event.type is EventType.FINISH and event.stage == "system" \
        and event.parent_run_id is None


def _has(events: list[Event], etype: EventType, native: bool = False) -> bool:
    return any(e.type is etype and (not native or e.parent_run_id is None) for e in events)


def _scope_index(scope: tuple[str, ...]) -> int | None:
    last = scope[-1] if scope else ""
    if not last.endswith("]") or "[" not in last:
        return None
    return int(last[last.rindex("[") + 1: -1])


def _stage_prefix(pipe_name: str) -> str:
    """Prefix the recorder uses for a pipe's stages: root -> "", root.n3.n3c1 -> "n3:n3c1:"."""
    parts = pipe_name.split(".")[1:]
    return "".join(p + ":" for p in parts)


def _runs_by_pipe(record: RunRecord) -> dict[str, int]:
    return dict(Counter(o.pipe_name for o in record.recorder.observed.values()))


def _short(events: list[Event]) -> str:
    return "[" + ", ".join(f"{e.seq} {e.type.value} {e.stage}" for e in events) + "]"


def render_trace(events: list[Event]) -> str:
    lines = []
    for e in events:
        ids = "/".join(_tail(x) for x in (e.invocation_id, e.parent_invocation_id,
                                           e.owner_invocation_id))
        payload = e.payload
        if isinstance(payload, PipelineEndData):
            shown = f"{payload.status.value} err={payload.error!r}"
        elif isinstance(payload, dict) and "fuzz" in payload:
            shown = "<state>"
        else:
            shown = repr(payload)[:60]
        origin = "" if e.parent_run_id is None else f" <{(e.origin_run_id or '')[:6]}>"
        lines.append(f"    {e.seq:>3} {e.type.value:<15} {e.stage:<14} {ids} "
                     f"{e.scope or ''} {shown}{origin}")
    return "\n".join(lines)


def _tail(inv: str | None) -> str:
    return "-" if inv is None else inv[-8:].split(":", 1)[0][:2] + ":" + inv.rsplit(":", 1)[-1]


def _render_observed(record: RunRecord) -> str:
    parts = []
    for run_id, observed in record.recorder.observed.items():
        if observed.pipe_name == "root" and observed.events[: len(record.events)] \
                == record.events and len(observed.events) == len(record.events):
            continue
        parts.append(f"\n\nobserved {observed.pipe_name} {run_id[:6]} "
                     f"(terminals {observed.terminals}):\n{render_trace(observed.events)}")
    return "".join(parts)
