"""memory: peak RSS growth of a 1,000,000-item map from a generator, max_concurrency=64.

Each implementation runs in a fresh interpreter (`memory_probe.py`), so the
growth is that of the run alone; the benchmark's time is the probe's wall time
(interpreter start included), the run's own CPU time is in the extra info.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from harness import BenchImplementation
from workloads import MEMORY_CONCURRENCY

PROBE = Path(__file__).resolve().parent / "memory_probe.py"
PROBE_TIMEOUT_S = 900


def _probe(impl: str, items: int, loop: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            str(PROBE),
            "--impl",
            impl,
            "--items",
            str(items),
            "--concurrency",
            str(MEMORY_CONCURRENCY),
            "--loop",
            loop,
        ],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
        env=dict(os.environ),
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"memory probe failed ({done.returncode}):\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.benchmark(timer=time.perf_counter)
def test_memory_lazy_map(
    implementation: BenchImplementation,
    benchmark: Any,
    loop_name: str,
    request: pytest.FixtureRequest,
) -> None:
    """1,000,000 items from a generator through a map with max_concurrency=64."""
    items = int(request.config.getoption("--memory-items"))
    found = benchmark.pedantic(lambda: _probe(implementation.name, items, loop_name), rounds=1)
    benchmark.group = f"memory[items={items}]"
    benchmark.extra_info.update(found, scenario="memory", variant=f"items={items}", units=items)
    assert found["events"] == 3 * items + 6
