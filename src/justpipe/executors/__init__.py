"""Executors: run steps on threads, a process pool, a Dask cluster or Ray, with the same events.

`ThreadExecutor` and `ProcessExecutor` need only the standard library; `DaskExecutor` needs
``justpipe[dask]`` and `RayExecutor` ``justpipe[ray]``, imported when the executor
starts, not here. See `Executor` (in `justpipe.executors.base`) for the contract the
kernel relies on, and docs/executors.md for when each one pays.
"""

from justpipe.executors._dask import DaskExecutor
from justpipe.executors._ray import RayExecutor
from justpipe.executors._remote import RemoteError
from justpipe.executors.base import CallInfo, Executor, Placement, TraceHook, WorkerLostError
from justpipe.executors.process import ProcessExecutor
from justpipe.executors.thread import ThreadExecutor

__all__ = [
    "CallInfo",
    "DaskExecutor",
    "Executor",
    "Placement",
    "ProcessExecutor",
    "RayExecutor",
    "RemoteError",
    "ThreadExecutor",
    "TraceHook",
    "WorkerLostError",
]
