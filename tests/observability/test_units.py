"""Unit tests of the observability pieces: exporters, sampler, labels, router hooks, logs, collectors."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from corral.v1 import common_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common import collectors, metrics, tracing
from services.common.config import ConfigError, load_config
from services.common.logs import JsonFormatter
from services.common.settings import TracingConfig
from services.router.observe import AttemptRecord
from services.router.scores import Attempt, ModelView, NodeView, ScoreBoard
from services.router.telemetry import AttemptTrail, RouterTelemetry, cache_outcome_name, outcome_name

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("router", "cache", "health", "prewarm")


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("exporter", "endpoint", "kind"),
    [
        ("none", "", type(None)),
        ("console", "", ConsoleSpanExporter),
        ("otlp-grpc", "http://127.0.0.1:4317", GrpcExporter),
        ("otlp-http", "http://127.0.0.1:4318", HttpExporter),
    ],
)
def test_the_exporter_follows_the_config(exporter: str, endpoint: str, kind: type) -> None:
    made = tracing.make_exporter(TracingConfig.model_validate({"exporter": exporter, "endpoint": endpoint}))
    assert isinstance(made, kind)
    if isinstance(made, HttpExporter):
        assert made._endpoint == "http://127.0.0.1:4318/v1/traces"
    if made is not None:
        made.shutdown()


def test_an_unknown_exporter_is_a_config_error_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"'tracing\.exporter'"):
        load_config(env={"CORRAL_TRACING__EXPORTER": "jaeger"})
    # NOTE: model_construct skips validation, as a hand-built config could; the runtime check still holds.
    unchecked = TracingConfig.model_construct(exporter="jaeger")
    with pytest.raises(ValueError, match=r"tracing\.exporter: unknown exporter 'jaeger'"):
        tracing.make_exporter(unchecked)
    with pytest.raises(SystemExit) as exited:
        tracing.setup_tracing("router", unchecked)
    assert exited.value.code == 2
    assert "corral-router: configuration error: tracing.exporter" in capsys.readouterr().err
    assert not tracing.enabled()


def test_exporter_none_installs_nothing() -> None:
    assert tracing.setup_tracing("router", TracingConfig(exporter="none")) is False
    assert not tracing.enabled()


def test_the_sampler_drops_parentless_http_calls_and_keeps_a_parents_decision() -> None:
    sampler = tracing.CorralSampler(1.0)
    http = {"http.request.method": "GET"}
    root = sampler.should_sample(None, 1, "GET", trace.SpanKind.CLIENT, http)
    assert root.decision is Decision.DROP
    grpc_root = sampler.should_sample(None, 1, "x", trace.SpanKind.CLIENT, {"rpc.system": "grpc"})
    assert grpc_root.decision is Decision.RECORD_AND_SAMPLE
    parent = trace.NonRecordingSpan(
        trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    )
    child = sampler.should_sample(trace.set_span_in_context(parent), 1, "POST", trace.SpanKind.CLIENT, http)
    assert child.decision is Decision.RECORD_AND_SAMPLE
    never = tracing.CorralSampler(0.0).should_sample(trace.set_span_in_context(parent), 1, "POST")
    assert never.decision is Decision.RECORD_AND_SAMPLE


def test_bounded_labels_keep_only_allowed_values_up_to_the_cap() -> None:
    allowed = {"a", "b", "c"}
    label = metrics.BoundedLabel(2, lambda: allowed)
    assert [label(v) for v in ("a", "zzz", "b", "c", "a", "")] == ["a", "other", "b", "other", "a", "none"]


def test_rpc_metrics_split_service_and_method() -> None:
    before = _sample(
        "corral_rpc_server_requests_total",
        rpc_service="corral.v1.CacheService",
        rpc_method="Lookup",
        rpc_grpc_status_code="OK",
    )
    metrics.observe_rpc("/corral.v1.CacheService/Lookup", "OK", 0.002)
    after = _sample(
        "corral_rpc_server_requests_total",
        rpc_service="corral.v1.CacheService",
        rpc_method="Lookup",
        rpc_grpc_status_code="OK",
    )
    assert after == before + 1


def test_a_second_attempt_counts_a_failover_with_the_first_ones_kind() -> None:
    before = _sample("corral_router_failovers_total", reason="ttft_timeout")
    trail = AttemptTrail("llama3.2:1b:latest", "generate")
    trail.begin("n1", 1)
    trail.end(Attempt.TTFT_TIMEOUT)
    trail.begin("n2", 2)
    trail.end(Attempt.NONE)
    assert _sample("corral_router_failovers_total", reason="ttft_timeout") == before + 1
    assert outcome_name(Attempt.NONE) == "ok" and outcome_name(Attempt.STREAM_CUT) == "stream_cut"
    assert cache_outcome_name(common_pb2.CACHE_OUTCOME_SEMANTIC_HIT) == "semantic_hit"


def test_request_metrics_label_only_the_fleets_models(caplog: pytest.LogCaptureFixture) -> None:
    board = ScoreBoard()
    board.use_static([NodeView("n1", "http://x", models={"known:7b": ModelView("known:7b")})])
    telemetry = RouterTelemetry(SimpleNamespace(board=board), log_requests=True)  # type: ignore[arg-type]
    known = {"rpc": "Chat", "model": "known:7b", "outcome": "OK"}
    other = {"rpc": "Chat", "model": "other", "outcome": "INVALID_ARGUMENT"}
    before = (
        _sample("corral_router_requests_total", **known),
        _sample("corral_router_requests_total", **other),
    )
    with caplog.at_level(logging.INFO, logger="corral.request"):
        telemetry.request("Chat", "known:7b", "OK", 12.0, common_pb2.CACHE_OUTCOME_MISS)
        telemetry.request(
            "Chat", "made-up-by-a-client", "INVALID_ARGUMENT", 1.0, common_pb2.CACHE_OUTCOME_BYPASS
        )
    after = (
        _sample("corral_router_requests_total", **known),
        _sample("corral_router_requests_total", **other),
    )
    assert after == (before[0] + 1, before[1] + 1)
    assert [r.__dict__["cache_outcome"] for r in caplog.records] == ["miss", "bypass"]
    telemetry.attempt(
        AttemptRecord("n1", "known:7b", "chat", Attempt.NONE, 40.0, ttft_ms=10.0, eval_tokens=5)
    )
    assert _sample("corral_router_ttft_seconds_count", node="n1", model="known:7b") >= 1
    assert _sample("corral_router_tokens_total", node="n1", model="known:7b", type="output") >= 5


def test_json_log_lines_carry_the_current_trace_id() -> None:
    tracer = TracerProvider().get_tracer("test")
    formatter = JsonFormatter("router")
    record = logging.LogRecord("corral.x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    assert "trace_id" not in json.loads(formatter.format(record))
    with tracer.start_as_current_span("s") as span:
        entry: dict[str, Any] = json.loads(formatter.format(record))
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")
    assert entry["message"] == "hello there"


def test_health_checks_reflection_and_long_lived_streams_are_not_traced() -> None:
    def call(method: object) -> SimpleNamespace:
        return SimpleNamespace(method=method)

    assert tracing.traced_rpc(call("/corral.v1.RouterService/Generate"))
    assert tracing.traced_rpc(call(b"/corral.v1.CacheService/Lookup"))
    assert not tracing.traced_rpc(call("/grpc.health.v1.Health/Check"))
    assert not tracing.traced_rpc(call("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"))
    assert not tracing.traced_rpc(call("/corral.v1.HealthService/WatchScores"))
    assert not tracing.traced_rpc(call(b"/corral.v1.HealthService/ReportOutcomes"))


class _Constant(Collector):
    def __init__(self, value: float) -> None:
        self.value = value

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("corral_test_collector_value", "A test collector's value.", self.value)


def test_a_second_collector_of_a_kind_replaces_the_first() -> None:
    first, second = _Constant(1.0), _Constant(2.0)
    collectors.install("test-kind", first)
    try:
        assert _sample("corral_test_collector_value") == 1.0
        collectors.install("test-kind", second)
        assert _sample("corral_test_collector_value") == 2.0
    finally:
        metrics.REGISTRY.unregister(second)
        collectors._registered.pop("test-kind", None)
    assert metrics.REGISTRY.get_sample_value("corral_test_collector_value") is None


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_shared_layer_does_not_import_the_services() -> None:
    # NOTE: config.py is the one exception: the whole configuration is built from each service's
    # section model (services.<name>.config), which only declares settings.
    above = tuple(f"services.{name}" for name in SERVICES)
    offenders = {
        path.name: sorted(m for m in _imported_modules(path) if m.startswith(above))
        for path in sorted((ROOT / "services" / "common").glob("*.py"))
        if path.name != "config.py"
    }
    assert {name: found for name, found in offenders.items() if found} == {}
    config_imports = {
        m for m in _imported_modules(ROOT / "services" / "common" / "config.py") if m.startswith(above)
    }
    assert config_imports == {f"services.{name}.config" for name in SERVICES}
