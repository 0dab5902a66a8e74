"""What a built wheel carries besides the code: its license (issue 20, the on-ramp).

Builds the pure-Python wheel from this tree (``JUSTPIPE_NO_EXTENSIONS=1``: no compiler,
a few seconds) with pip, as a user or cibuildwheel would, and reads its metadata.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_agnostic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "JUSTPIPE_NO_EXTENSIONS": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("justpipe-*.whl")
    return found


def test_the_wheel_metadata_names_the_license_file_it_carries(wheel: Path) -> None:
    """Before: the file was in the wheel but METADATA had no ``License-File`` for it."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode("utf-8"))
        dist_info = metadata_name.rsplit("/", 1)[0]
        assert metadata["License-Expression"] == "MIT"
        assert metadata.get_all("License-File") == ["LICENSE"]
        carried = archive.read(f"{dist_info}/licenses/LICENSE").decode("utf-8")
    assert carried == (REPO / "LICENSE").read_text(encoding="utf-8")
