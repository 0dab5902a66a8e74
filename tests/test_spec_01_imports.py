"""Public import surface, enumerations and signatures (spec §1, §2)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import typing

import pytest

import justpipe
from justpipe import Pipe
from justpipe import types as jt

# --------------------------------------------------------------------------- §1.1 modules


def test_top_level_all_is_exactly_the_thirteen_public_names() -> None:
    assert sorted(justpipe.__all__) == sorted(
        [
            "Pipe",
            "simple_logging_middleware",
            "Event",
            "EventType",
            "Meta",
            "Suspend",
            "Stop",
            "DefinitionError",
            "Retry",
            "Skip",
            "Raise",
            "TestPipe",
            "TestResult",
        ]
    )
    for name in justpipe.__all__:
        assert getattr(justpipe, name) is not None


def test_pipe_is_importable_from_justpipe_pipe() -> None:
    from justpipe.pipe import Pipe as PipeFromModule

    assert PipeFromModule is Pipe


TYPES_NAMES = [
    "EventType",
    "NodeKind",
    "BarrierType",
    "InjectionSource",
    "PipelineTerminalStatus",
    "FailureKind",
    "FailureSource",
    "FailureReason",
    "StepStatus",
    "Event",
    "FailureClassificationContext",
    "FailureClassificationConfig",
    "QueueMetrics",
    "TaskMetrics",
    "StepTiming",
    "BarrierMetrics",
    "MapMetrics",
    "RuntimeMetrics",
    "FailureRecord",
    "PipelineEndData",
    "Stop",
    "Suspend",
    "Retry",
    "Skip",
    "Raise",
    "StepContext",
    "StepInfo",
    "HookSpec",
    "Meta",
    "ScopedMeta",
    "PipelineMeta",
    "DefinitionError",
    "PipelineValidationWarning",
    "PipelineCancelled",
    "CancellationToken",
    "InjectionMetadata",
    "InjectionMetadataMap",
    "FailureSourceClassifier",
    "_Next",
]


@pytest.mark.parametrize("name", TYPES_NAMES)
def test_justpipe_types_exports(name: str) -> None:
    assert hasattr(jt, name)


def test_failures_module_reexports_the_same_objects_as_types() -> None:
    import justpipe.failures as failures

    expected = {
        "FailureClassificationConfig",
        "FailureClassificationContext",
        "FailureKind",
        "FailureReason",
        "FailureRecord",
        "FailureSource",
        "FailureSourceClassifier",
    }
    assert set(failures.__all__) == expected
    for name in expected:
        assert getattr(failures, name) is getattr(jt, name)


def test_testing_and_top_level_share_the_harness_classes() -> None:
    from justpipe.testing import TestPipe, TestResult

    assert TestPipe is justpipe.TestPipe
    assert TestResult is justpipe.TestResult
    assert TestPipe.__test__ is False


def test_middleware_module_surface() -> None:
    import justpipe.middleware as mw

    assert callable(mw.tenacity_retry_middleware)
    assert mw.simple_logging_middleware is justpipe.simple_logging_middleware
    assert isinstance(mw.HAS_TENACITY, bool)
    assert hasattr(mw, "Middleware")


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "justpipe.storage",
            ["InMemoryBackend", "RunRecord", "SQLiteBackend", "StorageBackend", "StoredEvent"],
        ),
        (
            "justpipe.observability",
            [
                "Observer",
                "ObserverProtocol",
                "ObserverMeta",
                "validate_observer",
                "EventLogger",
                "LogRecord",
                "LogSink",
                "StreamLogSink",
                "BarrierDebugger",
                "BarrierDebugRecord",
                "BarrierDebugSink",
                "TimelineVisualizer",
                "StateDiffTracker",
                "compare_runs",
                "RunComparison",
                "format_comparison",
            ],
        ),
        (
            "justpipe.visualization",
            [
                "GraphRenderer",
                "MermaidRenderer",
                "VisualAST",
                "VisualNode",
                "VisualEdge",
                "ParallelGroup",
                "VisualNodeKind",
                "MermaidTheme",
                "generate_mermaid_graph",
            ],
        ),
    ],
)
def test_package_all_lists_exactly_the_documented_names(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(names)
    for name in names:
        assert hasattr(mod, name)


def test_storage_interface_limits() -> None:
    from justpipe.storage.interface import MAX_QUERY_LIMIT

    assert MAX_QUERY_LIMIT == 10_000


def test_cli_main_without_click_raises_import_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "justpipe.cli.main"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "click", None)
    with pytest.raises(ImportError, match=r"justpipe\[cli\]"):
        importlib.import_module("justpipe.cli.main")


# --------------------------------------------------------------------------- §1.2 Pipe signature


def test_pipe_constructor_signature_and_defaults() -> None:
    params = inspect.signature(Pipe.__init__).parameters
    expected = {
        "state_type": None,
        "context_type": None,
        "name": "Pipe",
        "strict": True,
        "allow_multi_root": False,
        "middleware": None,
        "queue_size": 1000,
        "max_map_items": None,
        "debug": None,
        "cancellation_token": None,
        "failure_classification": None,
        "metadata": None,
        "persist": None,
        "flush_interval": None,
        "max_retries": 100,
    }
    # upstream's parameters, in its order, then ours (keyword-only, default None)
    ours = {"executors", "durable"}
    assert list(params)[1 : len(expected) + 1] == list(expected)
    assert set(list(params)[len(expected) + 1 :]) == ours
    for name, default in expected.items():
        assert params[name].default == default, name
    keyword_only = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keyword_only == list(expected)[2:] + [n for n in params if n in ours]
    assert all(params[n].default is None for n in ours)


def test_run_signature_keeps_positional_order() -> None:
    signature = inspect.signature(Pipe.run).parameters
    params = list(signature)
    assert params[:6] == ["self", "state", "context", "start", "queue_size", "timeout"]
    # ours after upstream's, keyword-only so no positional call changes meaning
    assert params[6:] == ["executors"]
    assert signature["executors"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("step", ["name", "to", "barrier_timeout", "barrier_type", "on_error", "kwargs"]),
        (
            "map",
            [
                "name",
                "each",
                "to",
                "barrier_timeout",
                "barrier_type",
                "on_error",
                "max_concurrency",
                "kwargs",
            ],
        ),
        (
            "switch",
            ["name", "to", "default", "barrier_timeout", "barrier_type", "on_error", "kwargs"],
        ),
        (
            "sub",
            ["name", "pipeline", "to", "barrier_timeout", "barrier_type", "on_error", "kwargs"],
        ),
        ("validate", ["start", "strict", "allow_multi_root"]),
    ],
)
def test_decorator_signatures(method: str, params: list[str]) -> None:
    assert list(inspect.signature(getattr(Pipe, method)).parameters)[1:] == params


def test_plain_attributes_and_type_defaults() -> None:
    pipe: Pipe[None, None] = Pipe()
    assert pipe.name == "Pipe"
    assert pipe.strict is True
    assert pipe.allow_multi_root is False
    assert pipe.queue_size == 1000
    assert pipe.state_type is type(None)
    assert pipe.context_type is type(None)
    assert isinstance(pipe.cancellation_token, jt.CancellationToken)


def test_subscripted_construction_works() -> None:
    @dataclasses.dataclass
    class S:
        x: int = 0

    pipe = Pipe[S, None](S, type(None))
    assert pipe.state_type is S
    assert pipe.context_type is type(None)


def test_default_middleware_is_the_tenacity_retry_middleware() -> None:
    from justpipe.middleware import tenacity_retry_middleware

    assert Pipe().middleware == [tenacity_retry_middleware]


def test_middleware_argument_replaces_the_default_list() -> None:
    def mw(func: typing.Any, ctx: jt.StepContext) -> typing.Any:
        return func

    pipe: Pipe[None, None] = Pipe(middleware=[mw])
    assert pipe.middleware == [mw]
    assert Pipe(middleware=[]).middleware == []


def test_middleware_property_is_the_live_list() -> None:
    pipe: Pipe[None, None] = Pipe(middleware=[])

    def mw(func: typing.Any, ctx: jt.StepContext) -> typing.Any:
        return func

    pipe.add_middleware(mw)
    assert pipe.middleware[-1] is mw


def test_given_cancellation_token_is_kept() -> None:
    token = jt.CancellationToken()
    assert Pipe(cancellation_token=token).cancellation_token is token


# --------------------------------------------------------------------------- §1.3 other signatures


def test_event_field_order_and_defaults() -> None:
    fields = [f.name for f in dataclasses.fields(jt.Event)]
    assert fields == [
        "type",
        "stage",
        "payload",
        "timestamp",
        "run_id",
        "origin_run_id",
        "parent_run_id",
        "seq",
        "node_kind",
        "invocation_id",
        "parent_invocation_id",
        "owner_invocation_id",
        "attempt",
        "scope",
        "meta",
    ]
    event = jt.Event(jt.EventType.START, "system")
    assert event.payload is None
    assert event.node_kind is jt.NodeKind.SYSTEM
    assert event.attempt == 1
    assert event.scope == ()
    assert event.meta is None
    assert isinstance(event.timestamp, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.stage = "x"  # type: ignore[misc]


def test_pipeline_end_data_defaults() -> None:
    data = jt.PipelineEndData(jt.PipelineTerminalStatus.SUCCESS, 0.5)
    assert data.error is None
    assert data.reason is None
    assert data.failed_step is None
    assert data.failure_kind is jt.FailureKind.NONE
    assert data.failure_source is jt.FailureSource.NONE
    assert data.errors == []
    assert data.metrics is None
    assert jt.PipelineEndData(jt.PipelineTerminalStatus.SUCCESS, 0).errors is not data.errors


def test_step_timing_average() -> None:
    assert jt.StepTiming(0, 0.0, 0.0, 0.0).avg_s == 0.0
    assert jt.StepTiming(4, 2.0, 0.1, 0.9).avg_s == pytest.approx(0.5)


def test_control_values() -> None:
    assert dataclasses.fields(jt.Stop) == ()
    assert jt.Suspend("why").reason == "why"
    assert jt.Raise().exception is None
    err = ValueError("x")
    assert jt.Raise(err).exception is err
    jt.Retry()
    jt.Skip()
    with pytest.raises(TypeError):
        jt.Suspend()  # type: ignore[call-arg]


def test_definition_error_carries_the_step_name() -> None:
    assert jt.DefinitionError("m").step_name == "system"
    assert jt.DefinitionError("m", step_name="a").step_name == "a"
    assert issubclass(jt.PipelineValidationWarning, UserWarning)
    assert issubclass(jt.PipelineCancelled, Exception)


def test_cancellation_token_first_reason_wins() -> None:
    token = jt.CancellationToken()
    assert token.reason is None
    assert not token.is_cancelled()
    token.cancel()
    token.cancel("later")
    assert token.is_cancelled()
    assert token.reason == "Cancelled"


async def test_checkpoint_raises_pipeline_cancelled_with_the_reason() -> None:
    token = jt.CancellationToken()
    await token.checkpoint()
    token.cancel("stop now")
    with pytest.raises(jt.PipelineCancelled, match="stop now"):
        await token.checkpoint()


def test_step_context_and_step_info_fields() -> None:
    ctx = jt.StepContext("a", {}, "P")
    assert ctx.retries == 0
    assert [f.name for f in dataclasses.fields(jt.StepInfo)] == [
        "name",
        "timeout",
        "retries",
        "barrier_timeout",
        "has_error_handler",
        "targets",
        "kind",
        "sub_pipeline_hash",
    ]


def test_next_marker_has_a_target() -> None:
    assert jt._Next("b").target == "b"


# --------------------------------------------------------------------------- §2 enumerations


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        (
            jt.EventType,
            {
                "START": "start",
                "FINISH": "finish",
                "SUSPEND": "suspend",
                "TIMEOUT": "timeout",
                "CANCELLED": "cancelled",
                "STEP_START": "step_start",
                "STEP_END": "step_end",
                "STEP_ERROR": "step_error",
                "TOKEN": "token",
                "BARRIER_WAIT": "barrier_wait",
                "BARRIER_RELEASE": "barrier_release",
                "MAP_START": "map_start",
                "MAP_WORKER": "map_worker",
                "MAP_COMPLETE": "map_complete",
                "STATE_CHANGE": "state_change",
            },
        ),
        (
            jt.NodeKind,
            {
                "SYSTEM": "system",
                "STEP": "step",
                "MAP": "map",
                "SWITCH": "switch",
                "SUB": "sub",
                "BARRIER": "barrier",
            },
        ),
        (jt.BarrierType, {"ALL": "all", "ANY": "any"}),
        (
            jt.InjectionSource,
            {
                "STATE": "state",
                "CONTEXT": "context",
                "ERROR": "error",
                "STEP_NAME": "step_name",
                "CANCEL": "cancel",
                "UNKNOWN": "unknown",
            },
        ),
        (
            jt.PipelineTerminalStatus,
            {
                "SUCCESS": "success",
                "FAILED": "failed",
                "TIMEOUT": "timeout",
                "CANCELLED": "cancelled",
                "CLIENT_CLOSED": "client_closed",
            },
        ),
        (
            jt.FailureKind,
            {n: n.lower() for n in ["NONE", "VALIDATION", "STARTUP", "STEP", "SHUTDOWN", "INFRA"]},
        ),
        (
            jt.FailureSource,
            {
                "NONE": "none",
                "USER_CODE": "user_code",
                "FRAMEWORK": "framework",
                "EXTERNAL_DEP": "external_dep",
            },
        ),
        (
            jt.FailureReason,
            {
                n: n.lower()
                for n in [
                    "STARTUP_HOOK_ERROR",
                    "STEP_ERROR",
                    "SHUTDOWN_HOOK_ERROR",
                    "VALIDATION_ERROR",
                    "CLASSIFIER_ERROR",
                    "INTERNAL_ERROR",
                    "TIMEOUT",
                    "CANCELLED",
                    "CLIENT_CLOSED",
                    "NO_STEPS",
                ]
            },
        ),
        (jt.StepStatus, {"SUCCESS": "success", "ERROR": "error"}),
    ],
)
def test_enum_members_and_values(enum: type, values: dict[str, str]) -> None:
    assert {m.name: m.value for m in enum} == values  # type: ignore[attr-defined]


@pytest.mark.parametrize("enum", [jt.InjectionSource, jt.FailureReason, jt.StepStatus])
def test_string_enums_compare_equal_to_their_values(enum: type) -> None:
    for member in enum:  # type: ignore[attr-defined]
        assert member == member.value
