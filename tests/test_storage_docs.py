"""docs/storage.md: its Python example runs as written, against a real PostgreSQL server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "storage.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)

pytestmark = pytest.mark.backend_agnostic


def test_the_explicit_stores_example_runs(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(BLOCKS) == 1
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", postgres_url)

    exec(compile(BLOCKS[0], "docs/storage.md[python block 0]", "exec"), {"__name__": "__main__"})

    assert capsys.readouterr().out.splitlines() == ["finished", "[True]"]
