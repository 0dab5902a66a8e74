"""Session fixtures for the real engines, shared by every test module that needs one.

One local Ray and one Dask `LocalCluster` (2 worker processes each) per test session,
started on first use and shut down at its end (Ray costs seconds and hundreds of MB
to start: never twice), plus one executor of each kind on them. Step functions that
the workers must import live in importable test modules: the Ray session gets this
directory on its workers' PYTHONPATH. Loaded by conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extras import require
from justpipe.executors import DaskExecutor, ProcessExecutor, RayExecutor

HERE = Path(__file__).resolve().parent
GRACE = 0.5  # cancel_grace of the shared executors


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """One local Ray for the whole test run (2 CPUs, no dashboard)."""
    ray = require("ray", "ray")
    paths = [str(HERE), *(p for p in sys.path if p and Path(p).is_dir())]
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """One LocalCluster (2 worker processes, 1 thread each) for the whole test run."""
    distributed = require("distributed", "dask")
    dask = require("dask", "dask")
    # a task whose worker dies fails at once: justpipe owns retries
    with dask.config.set(DaskExecutor.SCHEDULER_CONFIG):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def process_executor() -> Iterator[ProcessExecutor]:
    ex = ProcessExecutor(2, cancel_grace=GRACE)
    yield ex
    asyncio.run(ex.aclose())


@pytest.fixture(scope="session")
def dask_executor(dask_client: Any) -> Iterator[DaskExecutor]:
    ex = DaskExecutor(client=dask_client)
    yield ex
    asyncio.run(ex.aclose())


@pytest.fixture(scope="session")
def ray_executor(ray_session: Any) -> Iterator[RayExecutor]:
    ex = RayExecutor(cancel_grace=GRACE)
    yield ex
    asyncio.run(ex.aclose())


