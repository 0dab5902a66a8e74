"""Random pipelines for the reliability suite, as plain data plus hypothesis strategies.

A `RunSpec` describes one run completely: the graph (`PipeSpec`, nested for
sub-pipelines), what every step does on each call (`Action` scripts), the error
handlers, hooks, run options and how the consumer leaves the stream. The harness
(`harness.py`) turns it into a real `Pipe` and runs it; keeping the description
as data lets hypothesis shrink a failing run to a small, readable graph.

Graphs are valid by construction: node 0 is the only root, every later node is a
target of an earlier one (a `to=` edge, a switch route or a map's `each`), edges
and dynamic routes only point forward, so the static graph is acyclic and every
run ends. With `timed=False` nothing depends on the clock (no sleeps, no timeouts),
which makes a run's event sequence deterministic (the differential test needs it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "Action",
    "ConsumerSpec",
    "NodeSpec",
    "PipeSpec",
    "RunSpec",
    "fuzz_examples",
    "run_specs",
]

MAX_NODES = 12  # all nodes of one example, children included
GHOST = "ghost"  # a route target that is not a registered step

# What a step does on one call. `arg` depends on the kind (a duration in ms, a route
# target, a token count, a switch key, a map size).
STEP_ACTIONS = ("ok", "sleep", "raise", "retry", "skip", "stop", "suspend", "cancel",
                "checkpoint", "route", "raise_obj", "slow", "ignored")
STREAM_ACTIONS = ("ok", "raise", "suspend", "cancel", "route", "slow")
HANDLER_ACTIONS = ("swallow", "skip", "retry", "reraise", "raise_obj", "raise_new", "route",
                   "stop", "suspend")
MAP_CONTAINERS = ("list", "gen", "gen_raise", "agen", "not_iterable")
CONSUMER_MODES = ("full", "full", "full", "aclose", "break_aclosing", "break_gc", "cancel_task")
STOP_AT_TYPES = (None, None, "step_start", "step_end", "step_error", "token", "map_worker",
                 "map_complete", "suspend", "cancelled", "barrier_wait", "timeout", "finish",
                 "start")


@dataclass(frozen=True)
class Action:
    kind: str
    arg: Any = None

    def __repr__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}({self.arg!r})"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    kind: str  # step | stream | map | worker | switch | sub
    script: tuple[Action, ...]
    to: tuple[str, ...] = ()
    barrier_any: bool = False
    barrier_timeout: float | None = None
    handler: tuple[Action, ...] | None = None
    timeout: float | None = None
    retries: int = 0
    each: str | None = None  # map: its worker
    max_concurrency: int | None = None  # map
    routes: tuple[tuple[int, str], ...] = ()  # switch: key -> target name or "Stop"
    default: str | None = None  # switch
    child: PipeSpec | None = None  # sub


@dataclass(frozen=True)
class PipeSpec:
    name: str
    nodes: tuple[NodeSpec, ...]
    global_handler: tuple[Action, ...] | None = None
    startup_fails: bool = False
    shutdown_fails: bool = False
    max_retries: int = 3

    def size(self) -> int:
        return sum(1 + (n.child.size() if n.child is not None else 0) for n in self.nodes)

    def walk(self) -> list[PipeSpec]:
        """This pipe and every nested child pipe."""
        found = [self]
        for node in self.nodes:
            if node.child is not None:
                found.extend(node.child.walk())
        return found


@dataclass(frozen=True)
class ConsumerSpec:
    mode: str  # full | aclose | break_aclosing | break_gc | cancel_task
    stop_type: str | None = None  # leave at the k-th event of this type (None: any event)
    stop_k: int = 1


@dataclass(frozen=True)
class RunSpec:
    pipe: PipeSpec
    consumer: ConsumerSpec = field(default_factory=lambda: ConsumerSpec("full"))
    queue_size: int | None = None
    timeout: float | None = None


def fuzz_examples(default: int) -> int:
    """Examples per fuzz test: `default`, or JUSTPIPE_FUZZ_EXAMPLES for nightly-style runs."""
    value = os.environ.get("JUSTPIPE_FUZZ_EXAMPLES", "").strip()
    return int(value) if value else default


# ---------------------------------------------------------------------- strategies


@st.composite
def _action(draw: st.DrawFn, kinds: tuple[str, ...], later: list[str], timed: bool) -> Action:
    if not timed:
        kinds = tuple(k for k in kinds if k not in ("sleep", "slow"))
    if not later:
        kinds = tuple(k for k in kinds if k != "route")
    kind = draw(st.sampled_from(kinds))
    if kind == "sleep":
        return Action(kind, draw(st.integers(0, 2)))
    if kind == "slow":
        return Action(kind, draw(st.integers(4, 12)))
    if kind == "route":
        return Action(kind, draw(st.sampled_from([*later, GHOST])))
    return Action(kind)


def _script(kinds: tuple[str, ...], later: list[str], timed: bool,
            weights_ok: int = 3) -> st.SearchStrategy[tuple[Action, ...]]:
    """Per-call actions, cycled; "ok" is drawn more often so that most steps succeed."""
    ok = st.just(Action("ok"))
    one = st.one_of(*([ok] * weights_ok), _action(kinds, later, timed))
    return st.lists(one, min_size=1, max_size=3).map(tuple)


@st.composite
def _handler(draw: st.DrawFn, later: list[str]) -> tuple[Action, ...] | None:
    if draw(st.integers(0, 2)) == 0:
        return None
    kinds = HANDLER_ACTIONS if later else tuple(k for k in HANDLER_ACTIONS if k != "route")
    actions = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3))
    return tuple(
        Action(k, draw(st.sampled_from([*later, GHOST])) if k == "route" else None)
        for k in actions
    )


@st.composite
def _map_script(draw: st.DrawFn, timed: bool) -> tuple[Action, ...]:
    def items() -> st.SearchStrategy[Action]:
        return st.builds(Action, st.just("items"),
                         st.tuples(st.sampled_from(MAP_CONTAINERS), st.integers(0, 4)))

    extra = st.sampled_from(["raise", "cancel"] + (["sleep"] if timed else []))
    one = st.one_of(items(), items(), items(), extra.map(Action))
    script = draw(st.lists(one, min_size=1, max_size=2))
    return tuple(Action(a.kind, 1) if a.kind == "sleep" else a for a in script)


@st.composite
def _switch_script(draw: st.DrawFn, n_routes: int, timed: bool) -> tuple[Action, ...]:
    key = st.integers(0, n_routes).map(lambda k: Action("key", k))  # n_routes: no route
    extra = st.sampled_from(["raise", "cancel"] + (["sleep"] if timed else [])).map(
        lambda k: Action(k, 1 if k == "sleep" else None)
    )
    return tuple(draw(st.lists(st.one_of(key, key, extra), min_size=1, max_size=3)))


@st.composite
def pipe_specs(draw: st.DrawFn, name: str, budget: int, depth: int, timed: bool) -> PipeSpec:
    """A valid random graph of at most `budget` nodes (children included)."""
    prefix = "n" if depth == 0 else f"{name.rsplit('.', 1)[-1]}c"
    kinds = ["step", "step", "stream", "map", "switch"] + (["sub"] if depth < 2 else [])
    n_main = draw(st.integers(1, max(1, min(6, budget))))
    main_kinds = [draw(st.sampled_from(kinds)) for _ in range(n_main)]
    names: list[str] = []
    layout: list[tuple[str, str]] = []  # (name, kind) including workers
    used = 0
    for i, kind in enumerate(main_kinds):
        if used >= budget or (kind == "map" and used + 2 > budget):
            kind = "step"
            if used >= budget:
                break
        node_name = f"{prefix}{i}"
        layout.append((node_name, kind))
        names.append(node_name)
        used += 1
        if kind == "map":
            layout.append((f"{node_name}w", "worker"))
            used += 1
    main = [n for n, k in layout if k != "worker"]
    to: dict[str, list[str]] = {n: [] for n, _ in layout}
    routes: dict[str, list[str]] = {n: [] for n, _ in layout}
    # every later main node gets one parent among the earlier main nodes
    for i, node_name in enumerate(main[1:], start=1):
        parent = main[draw(st.integers(0, i - 1))]
        _link(layout, to, routes, parent, node_name)
        for _extra in range(draw(st.integers(0, 2 if i >= 2 else 0))):
            other = main[draw(st.integers(0, i - 1))]
            if other != parent:
                _link(layout, to, routes, other, node_name)
    position = {n: i for i, (n, _) in enumerate(layout)}
    nodes: list[NodeSpec] = []
    remaining = budget - used
    for index, (node_name, kind) in enumerate(layout):
        later = [n for n in main if position[n] > index]
        spec, child_size = draw(_node(node_name, kind, later, to, routes, layout, timed,
                                      remaining, depth, name))
        remaining -= child_size
        nodes.append(spec)
    return PipeSpec(
        name=name,
        nodes=tuple(nodes),
        # no routes from the global handler: it also handles failed routes, which could loop
        global_handler=draw(st.one_of(st.none(), _handler([]).filter(lambda h: h is not None))),
        startup_fails=draw(st.integers(0, 19)) == 0,
        shutdown_fails=draw(st.integers(0, 7)) == 0,
        max_retries=draw(st.integers(2, 4)),
    )


def _link(layout: list[tuple[str, str]], to: dict[str, list[str]],
          routes: dict[str, list[str]], parent: str, child: str) -> None:
    kind = dict(layout)[parent]
    if kind == "switch":
        if child not in routes[parent]:
            routes[parent].append(child)
    elif child not in to[parent]:
        to[parent].append(child)


@st.composite
def _node(draw: st.DrawFn, name: str, kind: str, later: list[str], to: dict[str, list[str]],
          routes: dict[str, list[str]], layout: list[tuple[str, str]], timed: bool,
          remaining: int, depth: int, pipe_name: str) -> tuple[NodeSpec, int]:
    n_parents = sum(name in targets for targets in to.values())
    barrier_any = n_parents > 1 and draw(st.booleans())
    barrier_timeout = None
    if timed and n_parents > 1 and not barrier_any and draw(st.booleans()):
        barrier_timeout = draw(st.sampled_from([0.002, 0.01, 0.05]))
    timeout = draw(st.sampled_from([None, None, None, 0.003, 0.05])) if timed else None
    retries = draw(st.sampled_from([0, 0, 0, 1, 2]))
    common: dict[str, Any] = {
        "name": name, "kind": kind, "to": tuple(to[name]), "barrier_any": barrier_any,
        "barrier_timeout": barrier_timeout, "timeout": timeout, "handler": draw(_handler(later)),
    }
    child_size = 0
    if kind in ("step", "worker"):
        spec = NodeSpec(script=draw(_script(STEP_ACTIONS, later, timed)), retries=retries,
                        **common)
    elif kind == "stream":
        script = draw(_script(STREAM_ACTIONS, later, timed))
        tokens = draw(st.integers(0, 3))
        spec = NodeSpec(script=tuple(replace(a, arg=(tokens, a.arg)) for a in script), **common)
    elif kind == "map":
        spec = NodeSpec(script=draw(_map_script(timed)), each=f"{name}w",
                        max_concurrency=draw(st.sampled_from([None, None, 1, 2])), **common)
    elif kind == "switch":
        targets = routes[name] or ["Stop"]
        if draw(st.integers(0, 3)) == 0:
            targets = [*targets, "Stop"]
        default = draw(st.sampled_from([None, None, *later])) if later else None
        spec = NodeSpec(script=draw(_switch_script(len(targets), timed)),
                        routes=tuple(enumerate(targets)), default=default, **common)
    else:  # sub
        budget = min(3, remaining)
        child = None
        if budget >= 1:
            child = draw(pipe_specs(f"{pipe_name}.{name}", budget, depth + 1, timed))
            child_size = child.size()
        script = tuple(draw(st.lists(st.sampled_from(
            [Action("ok"), Action("ok"), Action("raise")]), min_size=1, max_size=2)))
        spec = NodeSpec(script=script, child=child, **common)
        if child is None:
            spec = replace(spec, kind="step", script=(Action("ok"),))
    return spec, child_size


@st.composite
def consumer_specs(draw: st.DrawFn) -> ConsumerSpec:
    mode = draw(st.sampled_from(CONSUMER_MODES))
    if mode == "full":
        return ConsumerSpec(mode)
    stop_type = draw(st.sampled_from(STOP_AT_TYPES))
    k = draw(st.integers(1, 40)) if stop_type is None else draw(st.integers(1, 3))
    return ConsumerSpec(mode, stop_type, k)


@st.composite
def run_specs(draw: st.DrawFn, timed: bool = True, consumers: bool = True) -> RunSpec:
    pipe = draw(pipe_specs("root", MAX_NODES, 0, timed))
    consumer = draw(consumer_specs()) if consumers else ConsumerSpec("full")
    timeout = draw(st.sampled_from([None, None, None, 0.004, 0.02])) if timed else None
    queue_size = draw(st.sampled_from([None, 0, 1, 2, 10]))
    return RunSpec(pipe=pipe, consumer=consumer, queue_size=queue_size, timeout=timeout)
