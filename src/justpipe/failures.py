"""Failure classification types (the same objects as in `justpipe.types`)."""

from justpipe.types import (
    FailureClassificationConfig,
    FailureClassificationContext,
    FailureKind,
    FailureReason,
    FailureRecord,
    FailureSource,
    FailureSourceClassifier,
)

__all__ = [
    "FailureClassificationConfig",
    "FailureClassificationContext",
    "FailureKind",
    "FailureReason",
    "FailureRecord",
    "FailureSource",
    "FailureSourceClassifier",
]
