"""Durable runs across real processes and a real store: SQLite (``sqlite:///<tmp>``) and a
real PostgreSQL server (tests/pg.py), the same tests on both (`world` is parametrised).

Each test starts children running this file (`python test_durable_process.py SCENARIO
ACTION [RUN_ID]`): a first segment (which may SIGKILL itself inside a chosen step) and
resumes in fresh processes. Every step appends its name to a side-effect log before it
does anything else, so the log tells how many times each step really ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from justpipe.durable import done_indices
from pg import StoreView

HERE = Path(__file__).resolve()
CHAIN = [f"s{i}" for i in range(8)]
BRANCHES = [f"b{i}" for i in range(4)]
ITEMS = 1000
LAZY_ITEMS = 300


@dataclass
class Work:
    done: list[str] = field(default_factory=list)
    parts: dict[str, int] = field(default_factory=dict)
    answer: Any = None


# --------------------------------------------------------------------------- the pipelines


def _side(name: str) -> None:
    """Record that step `name` ran (before it does anything else), then die if asked to."""
    with open(os.environ["DURABLE_SIDE"], "a", encoding="utf-8") as log:
        log.write(name + "\n")
    if os.environ.get("DURABLE_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def build(scenario: str) -> Any:
    from justpipe import Pipe, Suspend
    from justpipe.durable import Durable, resume_value

    # the 1,000-item map checkpoints every 25 completions (every one: 1,000 SQLite commits)
    durable = Durable(
        checkpoint_every=25 if scenario in ("map", "lazymap") else 1,
        lease_ttl_s=float(os.environ.get("DURABLE_LEASE_TTL", "30")),
    )
    pipe: Any = Pipe(Work, name=f"durable-{scenario}", durable=durable)
    if scenario == "chain":
        for i, name in enumerate(CHAIN):
            nxt = CHAIN[i + 1] if i + 1 < len(CHAIN) else None

            async def step(s: Work, _name: str = name) -> None:
                _side(_name)
                s.done.append(_name)

            step.__name__ = name
            pipe.step(name, to=nxt)(step)
    elif scenario == "join":

        @pipe.step(to=BRANCHES)
        async def fork(s: Work) -> None:
            _side("fork")

        for name in BRANCHES:

            async def branch(s: Work, _name: str = name) -> None:
                _side(_name)
                s.parts[_name] = int(_name[1:]) * 10

            branch.__name__ = name
            pipe.step(name, to="join")(branch)

        @pipe.step
        async def join(s: Work) -> None:
            _side("join")
            s.done.append(f"join:{sum(s.parts.values())}")
    elif scenario == "map":

        @pipe.map(each="work", to="total")
        async def numbers(s: Work) -> list[int]:
            _side("numbers")
            return list(range(ITEMS))

        @pipe.step
        async def work(s: Work, item: int) -> None:
            _side(f"w{item}")
            s.parts[str(item)] = item * 2

        @pipe.step
        async def total(s: Work) -> None:
            _side("total")
            s.done.append(f"total:{sum(s.parts.values())}:{len(s.parts)}")
    elif scenario == "lazymap":

        @pipe.map(each="work", to="total", max_concurrency=4)
        async def numbers(s: Work) -> Any:
            _side("numbers")
            for i in range(LAZY_ITEMS):  # a generator: no len(), read as the pool asks
                yield i

        @pipe.step
        async def work(s: Work, item: int) -> None:
            _side(f"w{item}")
            s.parts[str(item)] = item * 2
            await asyncio.sleep(0)

        @pipe.step
        async def total(s: Work) -> None:
            _side("total")
            s.done.append(f"total:{sum(s.parts.values())}:{len(s.parts)}")
    elif scenario in ("review", "gate"):

        @pipe.step(to="review")
        async def draft(s: Work) -> None:
            _side("draft")
            s.done.append("draft")

        @pipe.step(to="publish")
        async def review(s: Work) -> Any:
            _side("review")
            s.done.append("review")
            if os.environ.get("DURABLE_NO_SUSPEND"):
                return None
            return Suspend("needs a human")

        @pipe.step
        async def publish(s: Work) -> None:
            _side("publish")
            if scenario == "gate":
                print("ENTERED", flush=True)
                gate = Path(os.environ["DURABLE_GATE"])
                while not gate.exists():
                    await asyncio.sleep(0.02)
            s.answer = resume_value() if not os.environ.get("DURABLE_NO_SUSPEND") else "yes"
            s.done.append("publish")

    elif scenario in ("sub", "subreview"):
        inner = sub_pipeline(scenario)

        @pipe.step(to="inner")
        async def pre(s: Work) -> None:
            _side("pre")
            s.done.append("pre")

        @pipe.sub("inner", pipeline=inner, to="post")
        async def inner_step(s: Work) -> Work:
            return s  # the child works on the parent's state

        @pipe.step
        async def post(s: Work) -> None:
            _side("post")
            s.done.append(f"post:{sum(s.parts.values())}:{s.answer}")

    return pipe


SUB_STEPS = ["c0", "c1", "c2a", "c2b", "c3"]


def sub_pipeline(scenario: str) -> Any:
    """The child of the `sub` scenarios: c0 -> c1 -> (c2a, c2b) -> c3, on the parent's state."""
    from justpipe import Pipe, Suspend
    from justpipe.durable import resume_value

    inner: Any = Pipe(Work, name="inner")

    @inner.step(to="c1")
    async def c0(s: Work) -> None:
        _side("c0")
        s.done.append("c0")

    @inner.step(to=["c2a", "c2b"])
    async def c1(s: Work) -> Any:
        _side("c1")
        s.done.append("c1")
        if scenario == "subreview" and not os.environ.get("DURABLE_NO_SUSPEND"):
            return Suspend("the child asks")
        return None

    for name in ("c2a", "c2b"):

        async def branch(s: Work, _name: str = name) -> None:
            _side(_name)
            s.parts[_name] = 7 if _name == "c2a" else 5

        branch.__name__ = name
        inner.step(name, to="c3")(branch)

    @inner.step
    async def c3(s: Work) -> None:
        _side("c3")
        if scenario == "subreview":
            s.answer = resume_value() if not os.environ.get("DURABLE_NO_SUSPEND") else "approved"
        s.done.append(f"c3:{sum(s.parts.values())}")

    return inner


async def child(scenario: str, action: str, run_id: str | None) -> int:
    from justpipe.durable import DurableError

    pipe = build(scenario)
    try:
        if action == "run":
            stream = pipe.run(Work())
        else:
            assert run_id is not None
            stream = pipe.resume(run_id, value="approved")
        async for event in stream:
            if event.type.value == "start":
                print("RUN", event.run_id, flush=True)
            row = [event.type.value, event.stage, event.seq, event.attempt, event.invocation_id]
            print("EVENT", json.dumps(row), flush=True)
    except DurableError as exc:
        print("REFUSED", type(exc).__name__, exc, flush=True)
        return 3
    return 0


# --------------------------------------------------------------------------- the parent side


@pytest.fixture
def world(tmp_path: Path, core_backend: str, storage_url: str) -> dict[str, str]:
    return make_env(tmp_path, core_backend, storage_url)


def make_env(tmp_path: Path, core_backend: str, url: str | None = None) -> dict[str, str]:
    """The children's environment: their own store (`url`, else SQLite under tmp),
    side-effect log and gate under tmp."""
    import justpipe

    env = dict(os.environ)
    env["JUSTPIPE_STORAGE_URL"] = url or f"sqlite://{tmp_path / 'store'}"
    env["DURABLE_SIDE"] = str(tmp_path / "side.log")
    env["DURABLE_GATE"] = str(tmp_path / "gate")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(justpipe.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    )
    env.pop("DURABLE_KILL_AT", None)
    if core_backend == "python":
        env["JUSTPIPE_NO_EXTENSIONS"] = "1"
    return env


class Outcome:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        lines = proc.stdout.splitlines()
        self.run_id = next((ln.split()[1] for ln in lines if ln.startswith("RUN ")), None)
        self.events = [json.loads(ln[6:]) for ln in lines if ln.startswith("EVENT ")]
        self.refused = next((ln for ln in lines if ln.startswith("REFUSED ")), None)


def launch(
    env: dict[str, str], scenario: str, action: str, run_id: str = "", **extra: str
) -> Outcome:
    proc = subprocess.run(
        [sys.executable, str(HERE), scenario, action, run_id],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Outcome(proc)


def side_counts(env: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in Path(env["DURABLE_SIDE"]).read_text().split():
        counts[name] = counts.get(name, 0) + 1
    return counts


def final_checkpoint(env: dict[str, str], run_id: str) -> dict[str, Any]:
    return StoreView(env["JUSTPIPE_STORAGE_URL"]).checkpoint(run_id)


_UNINTERRUPTED: dict[str, dict[str, Any]] = {}


def stored_seqs(env: dict[str, str], run_id: str) -> list[int]:
    return StoreView(env["JUSTPIPE_STORAGE_URL"]).seqs(run_id)


def uninterrupted_state(env: dict[str, str], scenario: str, tmp: Path) -> dict[str, Any]:
    """The final state of a run of `scenario` nothing interrupted (worked out once)."""
    if scenario not in _UNINTERRUPTED:
        _UNINTERRUPTED[scenario] = _run_clean(env, scenario, tmp)
    return _UNINTERRUPTED[scenario]


def clean_run(env: dict[str, str], tmp: Path, scenario: str) -> Outcome:
    """`scenario` run once, nothing suspending or killing it, in a store of its own."""
    clean = {
        **env,
        "JUSTPIPE_STORAGE_URL": f"sqlite://{tmp / 'c'}",
        "DURABLE_SIDE": str(tmp / "c.log"),
    }
    return launch(clean, scenario, "run", DURABLE_NO_SUSPEND="1")


def _run_clean(env: dict[str, str], scenario: str, tmp: Path) -> dict[str, Any]:
    clean = {
        **env,
        "JUSTPIPE_STORAGE_URL": f"sqlite://{tmp / 'clean-store'}",
        "DURABLE_SIDE": str(tmp / "clean-side.log"),
        "DURABLE_NO_SUSPEND": "1",
    }
    out = launch(clean, scenario, "run")
    assert out.returncode == 0, out.stderr
    assert out.run_id is not None
    return final_checkpoint(clean, out.run_id)["state"]


@pytest.mark.parametrize("kill_at", ["s0", "s5"])
def test_a_chain_killed_mid_run_resumes_in_another_process(
    world: dict[str, str], tmp_path: Path, kill_at: str
) -> None:
    first = launch(world, "chain", "run", DURABLE_KILL_AT=kill_at)
    assert first.returncode == -signal.SIGKILL
    assert first.run_id is not None
    # the run store holds exactly the events the last checkpoint saw (one transaction)
    crashed = final_checkpoint(world, first.run_id)
    assert stored_seqs(world, first.run_id) == list(range(1, crashed["seq"] + 1))
    second = launch(world, "chain", "resume", first.run_id)
    assert second.returncode == 0, second.stderr
    assert second.events[-1][:2] == ["finish", "system"]

    counts = side_counts(world)
    killed = CHAIN.index(kill_at)
    for i, name in enumerate(CHAIN):
        assert counts[name] == (2 if i == killed else 1), (name, counts)
    # the re-run of the killed step is a new attempt of it
    starts = [row for row in second.events if row[0] == "step_start"]
    assert starts[0][1] == kill_at and starts[0][3] == 2
    seqs = [row[2] for row in first.events + second.events]
    assert len(set(seqs)) == len(seqs), "no seq is used twice across the segments"
    assert [row[2] for row in second.events] == sorted(row[2] for row in second.events)

    data = final_checkpoint(world, first.run_id)
    assert data["row_status"] == "finished" and data["end"] == "success"
    assert data["state"] == uninterrupted_state(world, "chain", tmp_path)
    # one run in the store, both segments: seq strictly increasing, two STARTs
    seqs = stored_seqs(world, first.run_id)
    assert seqs == list(range(1, data["seq"] + 1))
    view = StoreView(world["JUSTPIPE_STORAGE_URL"])
    assert view.run_status(first.run_id) == "success"
    types = view.event_types(first.run_id)
    assert types.count("start") == 2 and types[-1] == "finish"


KILL_POINTS = st.one_of(
    st.sampled_from(["fork", *BRANCHES, "join", *CHAIN, "pre", *SUB_STEPS, "post"]),
    st.sampled_from(["numbers", "total"]),
    st.integers(0, ITEMS - 1).map(lambda i: f"w{i}"),  # an item of the 1,000-item map
)


@pytest.mark.filterwarnings("ignore::justpipe.types.PipelineValidationWarning")
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kill_at=KILL_POINTS)
def test_killed_at_any_step_a_run_resumes_to_the_uninterrupted_result(
    kill_at: str, core_backend: str
) -> None:
    """A property over kill points (a few random ones per run): SIGKILL in that step, resume
    in a new process: every step ran at least once, the run ends as the uninterrupted one
    did, and the store is intact."""
    scenario = "chain" if kill_at in CHAIN else "join"
    if kill_at in ("pre", *SUB_STEPS, "post"):
        scenario = "sub"
    elif kill_at in ("numbers", "total") or kill_at.startswith("w"):
        scenario = "map"
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp), core_backend)
        first = launch(env, scenario, "run", DURABLE_KILL_AT=kill_at)
        assert first.returncode == -signal.SIGKILL and first.run_id is not None
        second = launch(env, scenario, "resume", first.run_id)
        assert second.returncode == 0, second.stderr
        counts = side_counts(env)
        steps = {
            "chain": CHAIN,
            "join": ["fork", *BRANCHES, "join"],
            "sub": ["pre", *SUB_STEPS, "post"],
            "map": ["numbers", *(f"w{i}" for i in range(ITEMS)), "total"],
        }[scenario]
        assert all(counts.get(name, 0) >= 1 for name in steps), counts
        assert counts[kill_at] == 2
        data = final_checkpoint(env, first.run_id)
        assert data["end"] == "success"
        assert data["state"] == uninterrupted_state(env, scenario, Path(tmp))


@pytest.mark.parametrize("kill_at", ["b2", "join"])
def test_a_parallel_join_killed_mid_run_resumes_in_another_process(
    world: dict[str, str], tmp_path: Path, kill_at: str
) -> None:
    first = launch(world, "join", "run", DURABLE_KILL_AT=kill_at)
    assert first.returncode == -signal.SIGKILL
    assert first.run_id is not None
    second = launch(world, "join", "resume", first.run_id)
    assert second.returncode == 0, second.stderr
    counts = side_counts(world)
    # The checkpoint after fork's completion holds b0..b3, none started; they start eagerly,
    # one after the other: b0 and b1 return, but the process dies in b2 before the loop
    # processed (and checkpointed) their completions, so they run again (at least once);
    # b3 never started before the kill. Killed in the join, every branch's completion was
    # checkpointed (the join was scheduled by the last one): the branches ran exactly once.
    twice = {kill_at, "b0", "b1"} if kill_at == "b2" else {kill_at}
    assert counts == {name: 2 if name in twice else 1 for name in ["fork", *BRANCHES, "join"]}
    data = final_checkpoint(world, first.run_id)
    assert data["end"] == "success"
    assert data["state"] == uninterrupted_state(world, "join", tmp_path)


@pytest.mark.filterwarnings("ignore::justpipe.types.PipelineValidationWarning")
@pytest.mark.parametrize(
    ("scenario", "kill", "items"),
    [("map", 500, ITEMS), ("lazymap", 150, LAZY_ITEMS)],
    ids=["sized", "lazy"],
)
def test_a_map_killed_mid_run_resumes_its_remaining_items(
    world: dict[str, str], tmp_path: Path, scenario: str, kill: int, items: int
) -> None:
    """A sized map (a list), and a lazy one (a generator with max_concurrency, which a
    durable run reads whole first): the checkpoint keeps the items, the resumed map runs
    only the rest and does not call its source again."""
    first = launch(world, scenario, "run", DURABLE_KILL_AT=f"w{kill}")
    assert first.returncode == -signal.SIGKILL
    assert first.run_id is not None
    crashed = final_checkpoint(world, first.run_id)
    assert crashed["row_status"] == "running"
    (entry,) = [e for e in crashed["frontier"] if e["step"] == "numbers"]
    done = done_indices(entry["map"])
    assert done and kill not in done

    second = launch(world, scenario, "resume", first.run_id)
    assert second.returncode == 0, second.stderr
    counts = side_counts(world)
    assert counts["numbers"] == 1, "the map's source is not called again"
    assert counts["total"] == 1
    names = [f"w{i}" for i in range(items)]
    assert all(counts[name] >= 1 for name in names), "every item ran at least once"
    assert all(counts[f"w{i}"] == 1 for i in done), "checkpointed items ran exactly once"
    assert counts[f"w{kill}"] == 2
    workers = [row for row in second.events if row[0] == "map_worker"]
    assert len(workers) == items - len(done)
    data = final_checkpoint(world, first.run_id)
    assert data["end"] == "success"
    assert data["state"] == uninterrupted_state(world, scenario, tmp_path)


@pytest.mark.parametrize("kill_at", ["c1", "c2b", "c3"])
def test_a_sub_pipeline_killed_mid_run_resumes_inside_its_parent(
    world: dict[str, str], tmp_path: Path, kill_at: str
) -> None:
    first = launch(world, "sub", "run", DURABLE_KILL_AT=kill_at)
    assert first.returncode == -signal.SIGKILL and first.run_id is not None
    crashed = final_checkpoint(world, first.run_id)
    (entry,) = [e for e in crashed["frontier"] if e["step"] == "inner"]
    assert entry["child"]["path"] == [], "the child shares the parent's state"
    assert entry["child"]["completed"] >= 1

    second = launch(world, "sub", "resume", first.run_id)
    assert second.returncode == 0, second.stderr
    counts = side_counts(world)
    # what the child had completed (and checkpointed) does not run again; the killed step
    # does, and so does a sibling that returned in the same instant (c2a, eager, before c2b)
    twice = {kill_at, "c2a"} if kill_at == "c2b" else {kill_at}
    assert counts == {n: 2 if n in twice else 1 for n in ["pre", *SUB_STEPS, "post"]}
    # the resumed segment re-enters the sub step (a new attempt) and the child goes on
    starts = [row for row in second.events if row[0] == "step_start"]
    assert starts[0][1] == "inner" and starts[0][3] == 2
    assert {row[1] for row in starts[1 : 1 + len(twice)]} == {f"inner:{n}" for n in twice}
    seqs = [row[2] for row in first.events + second.events]
    assert len(set(seqs)) == len(seqs)
    data = final_checkpoint(world, first.run_id)
    assert data["end"] == "success" and data["frontier"] == []
    assert data["state"] == uninterrupted_state(world, "sub", tmp_path)


def test_a_suspend_inside_a_sub_pipeline_resumes_in_another_process(
    world: dict[str, str], tmp_path: Path
) -> None:
    first = launch(world, "subreview", "run")
    assert first.returncode == 0, first.stderr
    assert first.run_id is not None
    assert ["suspend", "inner:c1"] in [r[:2] for r in first.events]
    suspended = final_checkpoint(world, first.run_id)
    assert suspended["row_status"] == "suspended"
    second = launch(world, "subreview", "resume", first.run_id)
    assert second.returncode == 0, second.stderr

    clean = clean_run(world, tmp_path, "subreview")

    def steps(rows: list[list[Any]]) -> list[tuple[str, str]]:
        # the sub step's own start/end: once per segment it spans (re-entered on resume)
        return [(r[0], r[1]) for r in rows if r[0].startswith("step_") and r[1] != "inner"]

    assert steps(first.events) + steps(second.events) == steps(clean.events)
    assert side_counts(world) == dict.fromkeys(["pre", *SUB_STEPS, "post"], 1)
    data = final_checkpoint(world, first.run_id)
    assert data["end"] == "success"
    assert data["state"]["fields"]["answer"] == "approved"
    assert data["state"]["fields"]["done"][-1] == "post:12:approved"
    seqs = [r[2] for r in first.events + second.events]
    assert seqs == list(range(1, len(seqs) + 1))


def test_suspend_in_one_process_resume_in_another(world: dict[str, str], tmp_path: Path) -> None:
    first = launch(world, "review", "run")
    assert first.returncode == 0, first.stderr
    assert first.events[-1][0] == "finish" and first.events[-3][:2] == ["suspend", "review"]
    assert first.run_id is not None
    second = launch(world, "review", "resume", first.run_id)
    assert second.returncode == 0, second.stderr

    clean = clean_run(world, tmp_path, "review")
    joined = [r for r in first.events if r[0] not in ("suspend", "finish")]
    joined += [r for r in second.events if r[0] != "start"]
    assert [r[:2] + r[3:4] for r in joined] == [r[:2] + r[3:4] for r in clean.events]
    assert [r[2] for r in first.events + second.events] == list(
        range(1, len(first.events) + len(second.events) + 1)
    )
    data = final_checkpoint(world, first.run_id)
    assert data["state"]["fields"]["answer"] == "approved"
    assert side_counts(world) == {"draft": 1, "review": 1, "publish": 1}

    third = launch(world, "review", "resume", first.run_id)
    assert third.returncode == 3 and third.refused is not None
    assert "RunFinishedError" in third.refused


def test_two_processes_resuming_one_run_exactly_one_wins(world: dict[str, str]) -> None:
    first = launch(world, "gate", "run")
    assert first.returncode == 0 and first.run_id is not None
    winner = subprocess.Popen(
        [sys.executable, str(HERE), "gate", "resume", first.run_id],
        env=world,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert winner.stdout is not None
        for line in winner.stdout:  # wait until the winner runs the resumed step
            if line.startswith("ENTERED"):
                break
        loser = launch(world, "gate", "resume", first.run_id)
        assert loser.returncode == 3 and loser.refused is not None
        assert "RunLeasedError" in loser.refused
    finally:
        Path(world["DURABLE_GATE"]).touch()
        _, err = winner.communicate(timeout=60)
    assert winner.returncode == 0, err
    assert final_checkpoint(world, first.run_id)["end"] == "success"


def test_a_run_killed_on_another_host_resumes_once_its_lease_expires(
    world: dict[str, str],
) -> None:
    """A crash elsewhere: the lease of the dead process protects the run until it expires
    (this host cannot see whether another host's process lives), then a resume wins."""
    ttl = {"DURABLE_LEASE_TTL": "8"}
    first = launch(world, "chain", "run", DURABLE_KILL_AT="s3", **ttl)
    assert first.returncode == -signal.SIGKILL and first.run_id is not None
    view = StoreView(world["JUSTPIPE_STORAGE_URL"])
    # the killed process ran on another host (same pid and nonce, another host name)
    view.execute(
        "UPDATE durable_leases SET owner = 'elsewhere:' || owner WHERE run_id = ?",
        (first.run_id,),
    )
    (expires_at,) = view.lease_expiry(first.run_id)

    early = launch(world, "chain", "resume", first.run_id, **ttl)
    assert time.time() < expires_at, "the refused resume ran before the lease expired"
    assert early.returncode == 3 and early.refused is not None
    assert "RunLeasedError" in early.refused and "elsewhere:" in early.refused
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)
    late = launch(world, "chain", "resume", first.run_id, **ttl)
    assert late.returncode == 0, late.stderr
    counts = side_counts(world)
    assert counts == {name: 2 if name == "s3" else 1 for name in CHAIN}
    assert final_checkpoint(world, first.run_id)["end"] == "success"


if __name__ == "__main__":
    sys.exit(asyncio.run(child(sys.argv[1], sys.argv[2], sys.argv[3] or None)))
