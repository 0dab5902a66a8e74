"""What travels between justpipe and a worker, and what runs on the worker.

Every executor ships a call as bytes made here (`dumps_call`) and gets back bytes made
here (`encode_ok`, `encode_err`, `encode_item`), so pickling errors are ours to report
clearly, an exception crosses with its original type on every engine, and the engines
only ever move bytes (their own exception wrapping and retries never see a step's error).

On the worker, `run_call`/`run_stream` run the function on a persistent event loop (one
per worker thread) and encode the outcome; the process pool's worker drives the same
coroutines on its own loop.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import sys
import threading
import traceback
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any, NoReturn

from justpipe._timeouts import within_timeout
from justpipe.executors.base import CallInfo, Placement, TraceHook

try:  # cloudpickle pickles lambdas, closures and functions of __main__ by value
    import cloudpickle as _cloudpickle
except ImportError:  # pragma: no cover - exercised where cloudpickle is absent
    _cloudpickle = None

__all__ = ["RemoteError"]

HAS_CLOUDPICKLE = _cloudpickle is not None
PROTOCOL = pickle.HIGHEST_PROTOCOL

# outcome tags: the first element of every decoded message
OK, ERR, ITEM, PLACED = 0, 1, 2, 3


class RemoteError(Exception):
    """Stands in for a remote exception that could not be pickled back (its type is kept
    by name in `type_name`, its message in the text)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


def _dumps(obj: Any) -> bytes:
    if _cloudpickle is not None:
        return _cloudpickle.dumps(obj, protocol=PROTOCOL)  # type: ignore[no-any-return]
    return pickle.dumps(obj, protocol=PROTOCOL)


def type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


# --------------------------------------------------------------------------- local side

_fn_cache: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def _function_fix() -> str:
    if HAS_CLOUDPICKLE:
        return (
            "define it at module level of an importable module (or make what it closes "
            "over picklable)"
        )
    return (
        "define it at module level of an importable module, or install cloudpickle "
        "(pip install cloudpickle) to ship lambdas and closures"
    )


_VALUE_FIX = (
    "pass plain data instead (not locks, open files, sockets, clients or generators), or "
    "a smaller input such as an id or a path the worker can load"
)


def unpicklable(step: str, executor: str, what: str, value: Any, exc: BaseException) -> TypeError:
    fix = _function_fix() if what == "function" else _VALUE_FIX
    return TypeError(
        f"Step '{step}' cannot run on the {executor} executor: its {what} of type "
        f"{type_name(value)} cannot be pickled ({type(exc).__name__}: {exc}). Fix: {fix}."
    )


def dump_function(fn: Any, step: str, executor: str) -> bytes:
    try:
        return _fn_cache[fn]
    except (KeyError, TypeError):
        pass
    try:
        data = _dumps(fn)
    except Exception as exc:
        raise unpicklable(step, executor, "function", fn, exc) from exc
    if _by_reference(fn):
        # a closure or lambda is pickled by value, with what it closes over as it is
        # now: only functions pickled by name are cached
        with suppress(TypeError):  # not weak-referenceable: no cache
            _fn_cache[fn] = data
    return data


def _by_reference(fn: Any) -> bool:
    """Whether `fn` pickles as a reference to its module's attribute (never by value)."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if module is None or module.__name__ == "__main__":
        return False
    target: Any = module
    for part in getattr(fn, "__qualname__", "<").split("."):
        target = getattr(target, part, None)
    if target is not fn:
        return False
    if _cloudpickle is not None:
        by_value: set[str] = getattr(_cloudpickle, "list_registry_pickle_by_value", set)()
        return module.__name__ not in by_value
    return True


def dumps_call(
    fn: Any,
    kwargs: dict[str, Any],
    info: CallInfo,
    hook: TraceHook | None,
    executor: str,
) -> bytes:
    """One call as bytes: (function bytes, keyword arguments, shipped info, trace hook)."""
    fn_bytes = dump_function(fn, info.step, executor)
    try:
        return _dumps((fn_bytes, kwargs, info.shipped(), hook))
    except Exception as exc:
        for name, value in kwargs.items():
            try:
                _dumps(value)
            except Exception as inner:
                what = f"argument '{name}'"
                raise unpicklable(info.step, executor, what, value, inner) from inner
        if hook is not None:
            raise unpicklable(info.step, executor, "trace hook", hook, exc) from exc
        raise unpicklable(info.step, executor, "call", kwargs, exc) from exc


def decode(data: bytes, info: CallInfo, executor: str | None = None) -> tuple[int, Any]:
    """Decode a message: (OK, result) or (ITEM, item) or (PLACED, where); an ERR raises
    the remote exception with its original type and the remote traceback as a note.

    With `executor` given, a message that says where it ran (OK, ERR, PLACED) is reported
    to `info.on_placed` first.
    """
    message = pickle.loads(data)
    tag = message[0]
    if executor is not None and info.on_placed is not None and tag != ITEM:
        where = message[-1] if tag != PLACED else message[1]
        info.on_placed(Placement(executor, where))
    if tag == ERR:
        raise_remote(message, info)
    return tag, message[1]


def raise_remote(message: tuple[Any, ...], info: CallInfo) -> NoReturn:
    _, blob, remote_type, text, tb_text, where = message
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(remote_type, text)
    if tb_text:
        exc.add_note(f"Remote traceback (step '{info.step}', {where}):\n{tb_text.rstrip()}")
    raise exc


# --------------------------------------------------------------------------- worker side

_local = threading.local()
_loaded: dict[bytes, Any] = {}
_LOADED_MAX = 256


def worker_loop() -> asyncio.AbstractEventLoop:
    """This thread's persistent event loop (created on first use, never closed)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def load_call(payload: bytes) -> tuple[Callable[..., Any], dict[str, Any], CallInfo, Any]:
    fn_bytes, kwargs, info, hook = pickle.loads(payload)
    fn = _loaded.get(fn_bytes)
    if fn is None:
        fn = pickle.loads(fn_bytes)
        if len(_loaded) >= _LOADED_MAX:
            _loaded.clear()
        _loaded[fn_bytes] = fn
    return fn, kwargs, info, hook


def load_error(exc: BaseException) -> BaseException:
    exc.add_note(
        "justpipe: the worker could not load the step's function or arguments: the modules "
        "they come from must be importable on the worker (install them there, or ship them "
        "by value with cloudpickle.register_pickle_by_value(module))"
    )
    return exc


def hook_context(hook: TraceHook | None, info: CallInfo) -> AbstractContextManager[Any]:
    """The trace hook entered around the function on the worker (none: a no-op)."""
    return nullcontext() if hook is None else hook(info)


async def invoke(fn: Callable[..., Any], kwargs: dict[str, Any], info: CallInfo, hook: Any) -> Any:
    with hook_context(hook, info):
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            # the worker keeps the step's timeout too: work the caller stopped
            # waiting for does not go on where the engine cannot cancel it
            result = await within_timeout(result, info.step, info.timeout)
    if inspect.isasyncgen(result) or inspect.isgenerator(result):
        raise TypeError(
            f"Step '{info.step}' returned a generator from call(); a streaming step runs "
            "through the executor's stream()"
        )
    return result


async def iterate(
    fn: Callable[..., Any], kwargs: dict[str, Any], info: CallInfo, hook: Any
) -> AsyncGenerator[Any, None]:
    with hook_context(hook, info):
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        if inspect.isasyncgen(result):
            try:
                async for item in result:
                    yield item
            finally:
                await result.aclose()
        elif inspect.isgenerator(result):
            try:
                for item in result:
                    yield item
            finally:
                result.close()
        else:
            raise TypeError(
                f"Step '{info.step}' runs as a stream but returned {type_name(result)}, "
                "not a generator"
            )


def encode_ok(value: Any, where: str, step: str) -> bytes:
    try:
        return _dumps((OK, value, where))
    except Exception as exc:
        return encode_err(_unpicklable_result(step, "returned a value", value, exc), where)


def encode_item(value: Any, where: str, step: str) -> tuple[bool, bytes]:
    """(True, an ITEM) or, when the item cannot be pickled, (False, an ERR)."""
    try:
        return True, _dumps((ITEM, value))
    except Exception as exc:
        return False, encode_err(_unpicklable_result(step, "yielded an item", value, exc), where)


def encode_placed(where: str) -> bytes:
    return _dumps((PLACED, where))


def _unpicklable_result(step: str, what: str, value: Any, exc: BaseException) -> TypeError:
    return TypeError(
        f"Step '{step}' {what} of type {type_name(value)} that cannot be pickled back from "
        f"the worker ({type(exc).__name__}: {exc}). Fix: {_VALUE_FIX}."
    )


_SKIPPED = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(asyncio.__file__))


def remote_traceback(exc: BaseException) -> str:
    """The exception's traceback without the executor's own frames on top."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_SKIPPED):
        tb = tb.tb_next
    formatted = traceback.TracebackException(type(exc), exc, tb)
    formatted.__notes__ = None  # the notes travel with the exception itself
    return "".join(formatted.format())


def encode_err(exc: BaseException, where: str) -> bytes:
    tb_text = remote_traceback(exc)
    blob: bytes | None
    try:
        blob = _dumps(exc)
        pickle.loads(blob)  # an exception whose __init__ cannot be replayed travels by name
    except Exception:
        blob = None
    message = (ERR, blob, type_name(exc), str(exc), tb_text, where)
    try:
        return _dumps(message)
    except Exception:
        return _dumps((ERR, None, type_name(exc), repr(str(exc)), tb_text, where))


def run_until(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Run `coro` on the persistent `loop`; if interrupted (an engine's cancellation
    raises KeyboardInterrupt), cancel the coroutine's task before re-raising."""
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            task.cancel()
            with suppress(BaseException):
                loop.run_until_complete(task)
        raise


def run_call(payload: bytes, where: str) -> bytes:
    """Worker entry for one call (Dask, Ray): never raises for the step's own errors."""
    try:
        fn, kwargs, info, hook = load_call(payload)
    except Exception as exc:
        return encode_err(load_error(exc), where)
    try:
        value = run_until(worker_loop(), invoke(fn, kwargs, info, hook))
    except Exception as exc:
        return encode_err(exc, where)
    return encode_ok(value, where, info.step)


def run_stream(payload: bytes, where: str) -> Iterator[bytes]:
    """Worker entry for a stream (Ray): PLACED, then ITEMs, then OK (or an ERR)."""
    yield encode_placed(where)
    try:
        fn, kwargs, info, hook = load_call(payload)
    except Exception as exc:
        yield encode_err(load_error(exc), where)
        return
    loop = worker_loop()
    agen = iterate(fn, kwargs, info, hook)
    try:
        while True:
            try:
                item = run_until(loop, agen.__anext__())
            except StopAsyncIteration:
                break
            except Exception as exc:
                yield encode_err(exc, where)
                return
            ok, data = encode_item(item, where, info.step)
            yield data
            if not ok:
                return
        yield encode_ok(None, where, info.step)
    finally:
        with suppress(Exception):
            run_until(loop, agen.aclose())
