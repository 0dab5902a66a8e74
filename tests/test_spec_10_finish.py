"""The terminal outcome: FINISH payload, status resolution, failure classification (spec §10)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers import collect, end_data
from justpipe import Pipe, Skip, Stop, Suspend
from justpipe.types import (
    FailureClassificationConfig,
    FailureClassificationContext,
    FailureKind,
    FailureReason,
    FailureRecord,
    FailureSource,
    PipelineEndData,
    PipelineTerminalStatus,
    RuntimeMetrics,
)

SUCCESS = PipelineTerminalStatus.SUCCESS
FAILED = PipelineTerminalStatus.FAILED


def make_error(module: str, message: str = "remote down") -> Exception:
    cls = type("RemoteError", (Exception,), {"__module__": module})
    error: Exception = cls(message)
    return error


def raising(exc: Exception, **options: Any) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(**options)

    @pipe.step
    async def call(s: Any) -> None:
        raise exc

    return pipe


# --------------------------------------------------------------------------- payload shape


async def test_success_payload() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(lambda s: None)
    data = end_data(await collect(pipe))
    assert isinstance(data, PipelineEndData)
    assert (data.status, data.error, data.reason, data.failed_step) == (SUCCESS, None, None, None)
    assert (data.failure_kind, data.failure_source) == (FailureKind.NONE, FailureSource.NONE)
    assert data.errors == []
    assert data.duration_s >= 0
    assert isinstance(data.metrics, RuntimeMetrics)


async def test_step_failure_payload() -> None:
    data = end_data(await collect(raising(ValueError("bad value"))))
    assert (data.status, data.error, data.reason, data.failed_step) == (
        FAILED,
        "bad value",
        FailureReason.STEP_ERROR,
        "call",
    )
    assert (data.failure_kind, data.failure_source) == (FailureKind.STEP, FailureSource.USER_CODE)
    assert data.errors == [
        FailureRecord(
            FailureKind.STEP, FailureSource.USER_CODE, FailureReason.STEP_ERROR, "bad value", "call"
        )
    ]


async def test_duration_covers_startup_hooks() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.on_startup
    async def warm_up() -> None:
        await asyncio.sleep(0.03)

    pipe.step("a")(lambda s: None)
    assert end_data(await collect(pipe)).duration_s >= 0.03


async def test_finish_meta_is_none_without_run_meta() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(lambda s: None)
    events = await collect(pipe)
    assert events[-1].meta is None


# --------------------------------------------------------------------------- status resolution


@pytest.mark.parametrize(
    "result", [Stop, Suspend("later"), Skip()], ids=["stop", "suspend", "skip"]
)
async def test_stop_suspend_and_skip_end_in_success(result: Any) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to="b")(lambda s: result)
    pipe.step("b")(lambda s: None)
    assert end_data(await collect(pipe)).status is SUCCESS


async def test_handled_errors_end_in_success() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", on_error=lambda: None)(lambda s: 1 / 0)
    data = end_data(await collect(pipe))
    assert data.status is SUCCESS
    assert data.errors == []


async def test_shutdown_failure_on_a_clean_run_is_failed() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_shutdown(lambda: 1 / 0)
    pipe.step("a")(lambda s: None)
    data = end_data(await collect(pipe))
    assert (data.status, data.failure_kind, data.error) == (
        FAILED,
        FailureKind.SHUTDOWN,
        "Shutdown hook failed: division by zero",
    )
    assert data.failed_step is None


async def test_step_failure_outranks_a_later_shutdown_failure() -> None:
    pipe = raising(ValueError("step broke"))
    pipe.on_shutdown(lambda: 1 / 0)
    data = end_data(await collect(pipe))
    assert (data.failure_kind, data.error) == (FailureKind.STEP, "step broke")
    assert [r.kind for r in data.errors] == [FailureKind.STEP, FailureKind.SHUTDOWN]


async def test_startup_failure_outranks_shutdown_failure() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_startup(lambda: 1 / 0)
    pipe.on_shutdown(lambda: [][0])
    pipe.step("a")(lambda s: None)
    data = end_data(await collect(pipe))
    assert data.failure_kind is FailureKind.STARTUP
    assert [r.kind for r in data.errors] == [FailureKind.STARTUP, FailureKind.SHUTDOWN]


async def test_no_steps_validation_failure_outranks_shutdown_failure() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_shutdown(lambda: 1 / 0)
    data = end_data(await collect(pipe))
    assert (data.failure_kind, data.reason) == (FailureKind.VALIDATION, FailureReason.NO_STEPS)


async def test_cancellation_wins_over_recorded_failures_but_keeps_them() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["bad", "stopper"])(lambda s: None)
    pipe.step("bad")(lambda s: 1 / 0)

    @pipe.step
    async def stopper(s: Any, cancel: Any) -> None:
        await asyncio.sleep(0.005)
        cancel.cancel("halt")
        await cancel.checkpoint()

    data = end_data(await collect(pipe))
    assert (data.status, data.reason, data.failure_kind, data.error, data.failed_step) == (
        PipelineTerminalStatus.CANCELLED,
        FailureReason.CANCELLED,
        FailureKind.NONE,
        None,
        None,
    )
    assert [r.step for r in data.errors] == ["bad"]


async def test_forwarded_child_failure_is_recorded_with_the_prefixed_step() -> None:
    child = raising(ValueError("inner"))
    pipe: Pipe[Any, Any] = Pipe()
    pipe.sub("outer", pipeline=child)(lambda s: s)
    data = end_data(await collect(pipe))
    assert (data.status, data.failed_step, data.failure_kind) == (
        FAILED,
        "outer:call",
        FailureKind.STEP,
    )


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    "module",
    [
        "httpx",
        "requests.exceptions",
        "aiohttp.client",
        "openai",
        "anthropic._errors",
        "google.api_core",
        "botocore.exceptions",
        "boto3",
        "redis.exceptions",
        "sqlalchemy.exc",
        "psycopg",
        "asyncpg.exceptions",
    ],
)
async def test_builtin_external_dependency_prefixes(module: str) -> None:
    data = end_data(await collect(raising(make_error(module))))
    assert data.failure_source is FailureSource.EXTERNAL_DEP


async def test_configured_prefixes_are_plain_startswith() -> None:
    config = FailureClassificationConfig(external_dependency_prefixes=("acme",))
    data = end_data(
        await collect(raising(make_error("acme_client.http"), failure_classification=config))
    )
    assert data.failure_source is FailureSource.EXTERNAL_DEP
    plain = end_data(
        await collect(raising(make_error("mycompany.acme"), failure_classification=config))
    )
    assert plain.failure_source is FailureSource.USER_CODE


async def test_classifier_receives_the_context_and_can_override() -> None:
    seen: list[FailureClassificationContext] = []
    boom = make_error("httpx")

    def classify(ctx: FailureClassificationContext) -> FailureSource:
        seen.append(ctx)
        return FailureSource.FRAMEWORK

    config = FailureClassificationConfig(source_classifier=classify)
    data = end_data(await collect(raising(boom, failure_classification=config)))
    assert data.failure_source is FailureSource.FRAMEWORK
    (ctx,) = seen
    assert (ctx.error, ctx.kind, ctx.reason, ctx.step, ctx.default_source) == (
        boom,
        FailureKind.STEP,
        FailureReason.STEP_ERROR,
        "call",
        FailureSource.EXTERNAL_DEP,
    )


async def test_classifier_returning_none_keeps_the_builtin_result() -> None:
    config = FailureClassificationConfig(source_classifier=lambda ctx: None)
    data = end_data(await collect(raising(ValueError("x"), failure_classification=config)))
    assert data.failure_source is FailureSource.USER_CODE


@pytest.mark.parametrize(
    "classifier", [lambda ctx: 1 / 0, lambda ctx: "external_dep"], ids=["raises", "wrong-type"]
)
async def test_broken_classifier_keeps_builtin_and_adds_a_diagnostic(classifier: Any) -> None:
    config = FailureClassificationConfig(source_classifier=classifier)
    data = end_data(await collect(raising(ValueError("x"), failure_classification=config)))
    assert (data.status, data.failure_source) == (FAILED, FailureSource.USER_CODE)
    assert len(data.errors) == 2
    diagnostic = data.errors[1]
    assert (diagnostic.kind, diagnostic.source, diagnostic.reason, diagnostic.step) == (
        FailureKind.INFRA,
        FailureSource.FRAMEWORK,
        FailureReason.CLASSIFIER_ERROR,
        "call",
    )
    assert diagnostic.error


async def test_hook_failures_are_never_external_dependencies() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.on_startup
    def connect() -> None:
        raise make_error("httpx", "refused")

    pipe.step("a")(lambda s: None)
    data = end_data(await collect(pipe))
    assert data.failure_kind is FailureKind.STARTUP
    assert data.failure_source is FailureSource.USER_CODE


async def test_classifier_sees_hook_failures_with_their_kind() -> None:
    kinds: list[tuple[FailureKind, FailureReason, str | None]] = []

    def classify(ctx: FailureClassificationContext) -> None:
        kinds.append((ctx.kind, ctx.reason, ctx.step))

    pipe: Pipe[Any, Any] = Pipe(
        failure_classification=FailureClassificationConfig(source_classifier=classify)
    )
    pipe.on_shutdown(lambda: 1 / 0)
    pipe.step("a")(lambda s: None)
    await collect(pipe)
    assert kinds == [(FailureKind.SHUTDOWN, FailureReason.SHUTDOWN_HOOK_ERROR, None)]
