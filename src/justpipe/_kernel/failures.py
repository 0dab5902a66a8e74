"""_FailureJournal: records every failure of a run and resolves its terminal outcome (§10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from justpipe import _core
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

__all__ = ["BUILTIN_EXTERNAL_PREFIXES", "_FailureJournal"]

BUILTIN_EXTERNAL_PREFIXES = (
    "httpx",
    "requests",
    "aiohttp",
    "openai",
    "anthropic",
    "google",
    "botocore",
    "boto3",
    "redis",
    "sqlalchemy",
    "psycopg",
    "asyncpg",
)

_PRIORITY = {
    FailureKind.VALIDATION: 0,
    FailureKind.STARTUP: 1,
    FailureKind.STEP: 2,
    FailureKind.SHUTDOWN: 3,
    FailureKind.INFRA: 4,
}

_DEFAULT_SOURCE = {
    FailureKind.VALIDATION: FailureSource.FRAMEWORK,
    FailureKind.STARTUP: FailureSource.USER_CODE,
    FailureKind.STEP: FailureSource.USER_CODE,
    FailureKind.SHUTDOWN: FailureSource.USER_CODE,
    FailureKind.INFRA: FailureSource.FRAMEWORK,
}


@dataclass(slots=True)
class _Failure:
    record: FailureRecord
    order: int


class _FailureJournal:
    __slots__ = ("_config", "_failures", "_diagnostics", "terminal")

    def __init__(self, config: FailureClassificationConfig) -> None:
        self._config = config
        self._failures: list[_Failure] = []
        self._diagnostics: list[FailureRecord] = []
        self.terminal: FailureReason | None = None  # TIMEOUT / CANCELLED / CLIENT_CLOSED

    @property
    def has_failures(self) -> bool:
        return bool(self._failures)

    def record(
        self,
        kind: FailureKind,
        reason: FailureReason,
        message: str,
        *,
        step: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        source = self._classify(kind, reason, step, error)
        record = FailureRecord(kind=kind, source=source, reason=reason, error=message, step=step)
        self._failures.append(_Failure(record, len(self._failures)))

    def _classify(
        self,
        kind: FailureKind,
        reason: FailureReason,
        step: str | None,
        error: BaseException | None,
    ) -> FailureSource:
        default = _DEFAULT_SOURCE[kind]
        if error is not None:
            module = type(error).__module__ or ""
            prefixes = BUILTIN_EXTERNAL_PREFIXES + tuple(self._config.external_dependency_prefixes)
            if any(module.startswith(p) for p in prefixes):
                default = FailureSource.EXTERNAL_DEP
        classifier = self._config.source_classifier
        if classifier is None:
            return default
        ctx = FailureClassificationContext(
            error=error if isinstance(error, Exception) else None,
            kind=kind,
            reason=reason,
            step=step,
            default_source=default,
        )
        try:
            result = classifier(ctx)
        except Exception as exc:
            self._diagnose(step, f"Failure classifier raised {type(exc).__name__}: {exc}")
            return default
        if result is None:
            return default
        if not isinstance(result, FailureSource):
            self._diagnose(
                step,
                f"Failure classifier returned {type(result).__name__} ({result!r}); "
                "expected a FailureSource or None",
            )
            return default
        return result

    def _diagnose(self, step: str | None, message: str) -> None:
        self._diagnostics.append(
            FailureRecord(
                kind=FailureKind.INFRA,
                source=FailureSource.FRAMEWORK,
                reason=FailureReason.CLASSIFIER_ERROR,
                error=message,
                step=step,
            )
        )

    def end_data(self, duration_s: float, metrics: RuntimeMetrics | None) -> PipelineEndData:
        errors = [f.record for f in self._failures] + self._diagnostics
        build = _end_data_builder()
        if self.terminal is not None:
            status = _TERMINAL_STATUS[self.terminal]
            return build(  # type: ignore[no-any-return]
                status, duration_s, None, self.terminal, _NO_KIND, _NO_SOURCE, None, errors, metrics
            )
        if not self._failures:
            return build(  # type: ignore[no-any-return]
                _SUCCESS, duration_s, None, None, _NO_KIND, _NO_SOURCE, None, errors, metrics
            )
        primary = min(self._failures, key=lambda f: (_PRIORITY[f.record.kind], f.order)).record
        return build(  # type: ignore[no-any-return]
            PipelineTerminalStatus.FAILED,
            duration_s,
            primary.error,
            primary.reason,
            primary.kind,
            primary.source,
            primary.step if primary.kind is FailureKind.STEP else None,
            errors,
            metrics,
        )


_TERMINAL_STATUS = {
    FailureReason.TIMEOUT: PipelineTerminalStatus.TIMEOUT,
    FailureReason.CANCELLED: PipelineTerminalStatus.CANCELLED,
    FailureReason.CLIENT_CLOSED: PipelineTerminalStatus.CLIENT_CLOSED,
}
# read once per run's end (many small runs): globals instead of enum attribute lookups
_SUCCESS = PipelineTerminalStatus.SUCCESS
_NO_KIND = FailureKind.NONE
_NO_SOURCE = FailureSource.NONE
_END_DATA_BUILDERS: dict[Any, Any] = {}


def _end_data_builder() -> Any:
    """`PipelineEndData` built by the active core's `RecordBuilder` (fields in order)."""
    factory = _core.RecordBuilder
    build = _END_DATA_BUILDERS.get(factory)
    if build is None:
        build = _END_DATA_BUILDERS[factory] = factory(PipelineEndData)
    return build
