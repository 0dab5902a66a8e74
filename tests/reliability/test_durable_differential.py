"""Durable mode changes nothing in the stream (issue 19).

Random pipelines (maps, joins, switches, sub-pipelines, Stop/Skip/Retry/Raise/Suspend,
errors, handlers, queue_size 0/1/2/10/default, consumers that leave early) run plain and
durable, and everything observable must be equal: the consumer's events (type, stage,
payload, lineage, attempt, scope, step meta, FINISH status and metrics; ids and times
normalised as in test_differential.py), what the observers saw, and the user code's calls.
The durable run also keeps every invariant of `invariants.py`.

The runs must be deterministic for this to mean anything, so nothing depends on the clock
except by construction: with timeouts, a timed-out step *hangs* (sleeps far beyond its
`timeout=`, or the run's) while everything else is instant, so the order of events is the
same in every run. The durable runs checkpoint after every completion (the mode that
touches the run most) into an in-memory store, or a SQLite store in a temporary directory.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from justpipe.durable import Durable, InMemoryCheckpointStore, SQLiteCheckpointStore

from .harness import run_sync
from .invariants import check_run
from .strategies import Action, NodeSpec, PipeSpec, RunSpec, fuzz_examples, run_specs
from .test_differential import fingerprint

DURABLE_DIFFERENTIAL = settings(
    max_examples=fuzz_examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
    print_blob=True,
)

HANG = Action("sleep", 30_000)  # far beyond any timeout below: it never ends by itself
STEP_TIMEOUT = 0.2
RUN_TIMEOUT = 0.4
TRIES = 3


@st.composite
def deterministic_specs(draw: st.DrawFn) -> RunSpec:
    """Clock-free runs, plus (sometimes) steps that hang until their timeout or the run's."""
    spec = draw(run_specs(timed=False))
    if spec.consumer.mode == "break_gc":  # when the finalizer runs is the loop's business
        spec = replace(spec, consumer=replace(spec.consumer, mode="aclose"))
    hangable = [i for i, n in enumerate(spec.pipe.nodes) if n.kind in ("step", "worker")]
    mode = draw(st.sampled_from(["none", "none", "step_timeout", "run_timeout"]))
    if mode == "none" or not hangable:
        return spec
    index = draw(st.sampled_from(hangable))  # one step hangs (two could tie on the clock)
    nodes = list(spec.pipe.nodes)
    if mode == "step_timeout":  # hangs on its first call (a retry may then succeed)
        script = draw(st.sampled_from([(HANG,), (HANG, Action("ok"))]))
        nodes[index] = replace(nodes[index], script=script, timeout=STEP_TIMEOUT)
    else:
        nodes[index] = replace(nodes[index], script=(HANG,))
    pipe = replace(spec.pipe, nodes=tuple(nodes))
    return replace(spec, pipe=pipe, timeout=RUN_TIMEOUT if mode == "run_timeout" else None)


def compare(spec: RunSpec, durable: Any, make_durable: Any = None) -> None:
    """Plain and durable runs of `spec` are alike (see the module).

    A spec with a hanging step depends on the clock by construction only: should the
    machine stall for longer than a timeout, the order of events changes in either run.
    So such a spec is run again (up to `TRIES` pairs, `make_durable()` giving a fresh
    store) when the pair differs: it passes if one pair is alike, fails if the plain runs
    all agree and so do the durable runs (a real difference), and is left out otherwise
    (the machine, not durable mode, changed the stream).
    """
    plains: list[dict[str, Any]] = []
    durables: list[dict[str, Any]] = []
    timed = spec.timeout is not None or any(n.timeout for n in spec.pipe.nodes)
    for attempt in range(TRIES if timed else 1):
        plain = comparable(fingerprint(run_sync(spec)))
        record = run_sync(spec, durable=durable if attempt == 0 else make_durable())
        check_run(record)
        journaled = comparable(fingerprint(record))
        if journaled == plain:
            return
        plains.append(plain)
        durables.append(journaled)
    if all(p == plains[0] for p in plains) and all(d == durables[0] for d in durables):
        assert durables[0] == plains[0]
    reject()


def comparable(found: dict[str, Any]) -> dict[str, Any]:
    """A run's fingerprint without the STEP_ERRORs' tracebacks (`meta["framework"]`).

    They say where an exception was raised, which is legitimately not the same: a durable
    run reads a lazy map's source whole first and raises the error it ended with when its
    pool reaches it (one frame more than a plain run's).
    """
    consumer = [_untraced(event) for event in found["consumer"]]
    observed = [
        (*run[:-1], [_untraced(event) for event in run[-1]]) for run in found["observed"]
    ]
    return {**found, "consumer": consumer, "observed": observed}


def _untraced(event: tuple[Any, ...]) -> tuple[Any, ...]:
    meta = event[-1]
    if not isinstance(meta, list):
        return event
    kept = [
        (key, [kv for kv in value if kv[0] != "traceback"] if key == "framework" else value)
        for key, value in meta
    ]
    return (*event[:-1], kept)


@DURABLE_DIFFERENTIAL
@given(deterministic_specs())
def test_a_durable_run_streams_what_a_plain_run_streams(spec: RunSpec) -> None:
    compare(spec, in_memory(), in_memory)


def in_memory() -> Durable:
    return Durable(store=InMemoryCheckpointStore(), checkpoint_every=1)


@settings(DURABLE_DIFFERENTIAL, max_examples=fuzz_examples(20))
@given(deterministic_specs())
def test_a_durable_run_on_sqlite_streams_what_a_plain_run_streams(
    tmp_path_factory: Any, spec: RunSpec
) -> None:
    def on_sqlite() -> Durable:
        path: Path = tmp_path_factory.mktemp("durable") / "runs.db"
        return Durable(store=SQLiteCheckpointStore(path), checkpoint_every=1)

    compare(spec, on_sqlite(), on_sqlite)


# ---------------------------------------------------------------------- the comparison can fail

MAP_THEN_STEP = RunSpec(PipeSpec("root", (
    NodeSpec("n0", "map", (Action("items", ("list", 3)),), each="n0w", to=("n1",),
             max_concurrency=1),
    NodeSpec("n0w", "worker", (Action("stop"),)),
    NodeSpec("n1", "step", (Action("ok"),)),
)), queue_size=1)


def test_the_named_regression_is_among_the_graphs_compared() -> None:
    """Stop in a bounded map's worker with queue_size=1: durable mode lost the map's
    MAP_COMPLETE and STEP_END (issue 19); the comparison catches exactly that."""
    compare(MAP_THEN_STEP, in_memory())
    plain = fingerprint(run_sync(MAP_THEN_STEP))
    broken = dict(plain, consumer=[e for e in plain["consumer"] if e[0] != "map_complete"])
    assert broken != plain
