"""Every Python example in the README runs as written.

Blocks (```python and ```py alike) run in order in one namespace, like a reader pasting
them into one session: a block may continue the one before it (e.g. "Options and custom
renderers"), and says so with ``<!-- continues: <what> -->`` before its fence. Every other
block also runs on its own, pasted into a fresh interpreter in an empty directory with
no justpipe environment variables. A block that cannot run here (it needs a cluster, a
model, a second process) is preceded by ``<!-- not run: <reason> -->``; the reason is
required and such blocks must stay few.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")
# (the comment line before the block, if any) the fence's language, the code
BLOCK = re.compile(r"(?:<!--(?P<note>[^\n]*?)-->\n)?```(?P<lang>python|py)\n(?P<code>.*?)```", re.S)
NOT_RUN = re.compile(r"\s*not run:\s*(?P<reason>\S.*?)\s*$")
CONTINUES = re.compile(r"\s*continues:\s*\S")


def blocks() -> list[tuple[str, str | None]]:
    """(code, reason it is not run or None) for every Python block, in order."""
    found = []
    for match in BLOCK.finditer(TEXT):
        note = match.group("note")
        skipped = NOT_RUN.match(note) if note is not None else None
        found.append((match.group("code"), skipped.group("reason") if skipped else None))
    return found


def test_the_readme_has_python_blocks_and_few_are_not_run() -> None:
    found = blocks()
    assert len(found) >= 8
    not_run = [reason for _, reason in found if reason is not None]
    assert len(not_run) <= 3, not_run
    # every fence is seen by the pattern (none is mistyped)
    assert len(found) == len(re.findall(r"^```(?:python|py)$", TEXT, re.M))


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """The README configures logging (a filter on justpipe.kernel): undo it afterwards."""
    names = ["", *(n for n in logging.root.manager.loggerDict if n.startswith("justpipe"))]
    saved = {name: list(logging.getLogger(name).filters) for name in names}
    yield
    for name in {*names, *logging.root.manager.loggerDict}:
        if name in saved or name.startswith("justpipe"):
            logging.getLogger(name).filters[:] = saved.get(name, [])


def test_readme_examples_run_in_order(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "store"))
    namespace: dict[str, object] = {"__name__": "__main__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, (block, reason) in enumerate(blocks()):
            if reason is not None:
                continue
            try:
                exec(compile(block, f"README.md[python block {index}]", "exec"), namespace)
            except Exception as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"README python block {index} failed: {exc!r}\n{block}")
    capsys.readouterr()


def standalone_blocks() -> list[Any]:
    """The blocks that neither continue another nor are left out, with their line."""
    found = []
    for match in BLOCK.finditer(TEXT):
        note = match.group("note") or ""
        if NOT_RUN.match(note) or CONTINUES.match(note):
            continue
        line = TEXT[: match.start("code")].count("\n") + 1
        found.append(pytest.param(match.group("code"), id=f"line-{line}"))
    return found


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("code", standalone_blocks())
def test_a_block_runs_pasted_alone(code: str, tmp_path: Path) -> None:
    """Before: the ThreadExecutor and OpenTelemetry blocks failed alone (Pipe not imported)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUSTPIPE_")}
    env["HOME"] = str(tmp_path)  # a block that persists without saying where stays here
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
