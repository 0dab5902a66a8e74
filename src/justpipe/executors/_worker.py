"""The process pool's worker: one persistent event loop, one call at a time.

Protocol over a duplex `multiprocessing` pipe. Parent to worker:
``(CALL, cid, payload, streaming)``, ``(CANCEL, cid)``, ``(CREDIT, cid, n)``, ``(STOP,)``.
Worker to parent: ``(cid, kind, data)`` where `kind` is ``"placed"``, ``"item"`` (not
final) or ``"done"`` (final; `data` an encoded OK/ERR) or ``"cancelled"`` (final, no data).

A thread reads the pipe and posts every message to the loop, so a cancel reaches an
`async def` step while it awaits; a plain function blocks the loop until it returns (the
parent kills the worker if it does not stop within the grace period).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from multiprocessing import spawn
from multiprocessing.connection import Connection
from typing import Any

from justpipe.executors import _remote

CALL, CANCEL, CREDIT, STOP = 0, 1, 2, 3
WINDOW = 64  # streamed items in flight before the worker waits for the parent


def bootstrap() -> None:
    """Entry of a worker started by `python -c`: argv holds the socket's fd and the index;
    the first message is multiprocessing's preparation data (sys.path, main module)."""
    conn = Connection(int(sys.argv[1]))
    index = int(sys.argv[2])
    spawn.prepare(conn.recv())
    main(conn, index)


def main(conn: Connection, index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    loop = _remote.worker_loop()
    asyncio.set_event_loop(loop)
    where = f"process worker {index} (pid {os.getpid()})"
    tasks: dict[int, asyncio.Task[None]] = {}
    credits: dict[int, asyncio.Semaphore] = {}

    def send(cid: int, kind: str, data: bytes | None) -> None:
        try:
            conn.send((cid, kind, data))
        except OSError:  # the parent is gone
            loop.stop()

    async def run_call(cid: int, payload: bytes) -> None:
        try:
            fn, kwargs, info, hook = _remote.load_call(payload)
        except Exception as exc:
            send(cid, "done", _remote.encode_err(_remote.load_error(exc), where))
            return
        try:
            value = await _remote.invoke(fn, kwargs, info, hook)
        except asyncio.CancelledError:
            send(cid, "cancelled", None)
            return
        except Exception as exc:
            send(cid, "done", _remote.encode_err(exc, where))
            return
        send(cid, "done", _remote.encode_ok(value, where, info.step))

    async def run_stream(cid: int, payload: bytes) -> None:
        window = credits[cid] = asyncio.Semaphore(WINDOW)
        try:
            fn, kwargs, info, hook = _remote.load_call(payload)
        except Exception as exc:
            send(cid, "done", _remote.encode_err(_remote.load_error(exc), where))
            return
        agen = _remote.iterate(fn, kwargs, info, hook)
        try:
            async for item in agen:
                await window.acquire()
                ok, data = _remote.encode_item(item, where, info.step)
                if not ok:  # the item could not be pickled: an ERR ends the stream
                    send(cid, "done", data)
                    return
                send(cid, "item", data)
        except asyncio.CancelledError:
            send(cid, "cancelled", None)
            return
        except Exception as exc:
            send(cid, "done", _remote.encode_err(exc, where))
            return
        finally:
            credits.pop(cid, None)
            await agen.aclose()
        send(cid, "done", _remote.encode_ok(None, where, info.step))

    def handle(message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == CALL:
            _, cid, payload, streaming = message
            runner = run_stream(cid, payload) if streaming else run_call(cid, payload)
            task = loop.create_task(runner)
            tasks[cid] = task
            task.add_done_callback(lambda _t: tasks.pop(cid, None))
        elif kind == CANCEL:
            running = tasks.get(message[1])
            if running is not None:
                running.cancel()
        elif kind == CREDIT:
            window = credits.get(message[1])
            if window is not None:
                for _ in range(message[2]):
                    window.release()
        else:
            loop.stop()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = (STOP,)
            try:
                loop.call_soon_threadsafe(handle, message)
            except RuntimeError:  # the loop is closed
                return
            if message[0] == STOP:
                return

    threading.Thread(target=read, name="justpipe-worker-reader", daemon=True).start()
    send(0, "ready", None)
    loop.run_forever()
    conn.close()
