"""Every Python example in the README runs as written.

Blocks run in order in one namespace, like a reader pasting them into one session: a
block may continue the one before it (e.g. "Options and custom renderers").
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_examples_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(BLOCKS) >= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "store"))
    namespace: dict[str, object] = {"__name__": "__main__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, block in enumerate(BLOCKS):
            try:
                exec(compile(block, f"README.md[python block {index}]", "exec"), namespace)
            except Exception as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"README python block {index} failed: {exc!r}\n{block}")
    capsys.readouterr()
