"""OpenTelemetry set-up shared by the services: provider, exporter, W3C propagation, instrumentations."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from services.common.settings import TracingConfig

logger = logging.getLogger(__name__)

EXPORTERS = ("none", "console", "otlp-grpc", "otlp-http")
# NOTE: long-lived streams (score feed, outcome reports) would make one span per process lifetime,
# and health checks one trace per probe; none of them belongs to a client request.
_UNTRACED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
_UNTRACED_SUFFIXES = ("/WatchScores", "/ReportOutcomes")

_provider: TracerProvider | None = None
_capture_content = False
_instrumentors: list[Any] = []


class CorralSampler(Sampler):
    """ParentBased(TraceIdRatioBased(ratio)), except that an HTTP client span without a parent is dropped.

    A parentless HTTP call is background work (health's probes, static discovery, warm-up calls):
    recording one root trace per probe would drown the request traces. A sampled parent's decision
    is always kept, so a client's trace is continued whatever the ratio.
    """

    def __init__(self, ratio: float) -> None:
        self._inner = ParentBased(TraceIdRatioBased(ratio))
        self._ratio = ratio

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (
            kind is SpanKind.CLIENT
            and attributes
            and ("http.request.method" in attributes or "http.method" in attributes)
        ):
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                return SamplingResult(Decision.DROP)
        return self._inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"CorralSampler{{ratio={self._ratio}}}"


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + os.linesep


def make_exporter(cfg: TracingConfig) -> SpanExporter | None:
    """The span exporter the configuration asks for (None for "none").

    Raises:
        ValueError: The exporter name is unknown (the message names the field).
    """
    if cfg.exporter == "none":
        return None
    if cfg.exporter == "console":
        # NOTE: stderr, so that stdout stays one JSON log object per line.
        return ConsoleSpanExporter(out=sys.stderr, formatter=_one_line)
    if cfg.exporter == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        if not cfg.endpoint:
            return GrpcExporter()
        return GrpcExporter(endpoint=cfg.endpoint, insecure=not cfg.endpoint.startswith("https://"))
    if cfg.exporter == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        if not cfg.endpoint:
            return HttpExporter()
        endpoint = cfg.endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        return HttpExporter(endpoint=endpoint)
    raise ValueError(
        f"tracing.exporter: unknown exporter {cfg.exporter!r}; expected one of {', '.join(EXPORTERS)}"
    )


def traced_rpc(details: Any) -> bool:
    """The gRPC instrumentation's filter: False for health checks, reflection and the long-lived streams.

    NOTE: a plain string test; the instrumentation's own `filters` helpers run isinstance checks
    against runtime protocols that cost about 50 us per condition and call on this hardware.
    """
    method = getattr(details, "method", None) or getattr(details, "full_method", "")
    if isinstance(method, bytes):
        method = method.decode()
    if not isinstance(method, str):
        return True
    return not method.startswith(_UNTRACED_PREFIXES) and not method.endswith(_UNTRACED_SUFFIXES)


def setup_tracing(service: str, cfg: TracingConfig, *, exporter: SpanExporter | None = None) -> bool:
    """Configures tracing for a service process; returns whether spans are recorded.

    With an exporter: a TracerProvider (resource `service.name=corral-<service>`) with a
    BatchSpanProcessor, the W3C tracecontext and baggage propagators, and the instrumentations:
    grpc.aio server (every server built afterwards: it patches `grpc.aio.server`), grpc.aio client
    (every channel opened afterwards) and W3C propagation on aiohttp (every session created
    afterwards sends `traceparent` to the nodes). Call it before building servers, channels and
    sessions. A second call is a no-op. With exporter "none" nothing is installed, so tracing
    costs nothing.

    Args:
        service: The service name ("router", "cache", "health", "prewarm").
        cfg: The tracing section of the configuration.
        exporter: An exporter to use instead of the configured one (tests).

    Raises:
        SystemExit: The exporter name is unknown (status 2, one line on stderr, like other config errors).
    """
    global _provider, _capture_content
    if _provider is not None:
        return True
    if exporter is None:
        try:
            exporter = make_exporter(cfg)
        except ValueError as exc:
            print(f"corral-{service}: configuration error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    if exporter is None:
        return False
    resource = Resource.create(
        {
            "service.name": f"corral-{service}",
            "service.namespace": "corral",
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        }
    )
    provider = TracerProvider(resource=resource, sampler=CorralSampler(cfg.sample_ratio))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    _provider = provider
    _capture_content = cfg.capture_content
    _instrument()
    logger.info("tracing on: exporter %s, endpoint %s", cfg.exporter, cfg.endpoint or "(default)")
    return True


def _instrument() -> None:
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

    for instrumentor in (
        GrpcAioInstrumentorServer(filter_=traced_rpc),  # type: ignore[no-untyped-call]
        GrpcAioInstrumentorClient(filter_=traced_rpc),  # type: ignore[no-untyped-call]
    ):
        instrumentor.instrument()
        _instrumentors.append(instrumentor)
    _propagate_over_aiohttp()


async def _inject_traceparent(session: Any, trace_ctx: Any, params: Any) -> None:
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(params.headers)


def _propagate_over_aiohttp() -> None:
    """Makes every aiohttp.ClientSession created afterwards send the current W3C trace context.

    NOTE: propagation only, no client span: the router's `node attempt` span (kind CLIENT) already
    stands for each call to a node, and opentelemetry-instrumentation-aiohttp-client's extra span
    per call measured about a third of the tracing cost (docs/observability.md). Calls made outside
    any span (health's probes) send no header.
    """
    import aiohttp

    config = aiohttp.TraceConfig()
    config.on_request_start.append(_inject_traceparent)
    config.freeze()
    original = aiohttp.ClientSession.__init__

    def init(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        kwargs["trace_configs"] = [*(kwargs.get("trace_configs") or ()), config]
        original(self, *args, **kwargs)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]


def enabled() -> bool:
    """True once setup_tracing installed a recording provider in this process."""
    return _provider is not None


def capture_content() -> bool:
    """True when prompts may be recorded in spans (`tracing.capture_content`; off by default)."""
    return _capture_content


def annotate(attributes: Mapping[str, Any]) -> None:
    """Sets attributes on the current span (a no-op when tracing is off or nothing is recorded)."""
    if _provider is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def current_ids() -> tuple[str, str]:
    """The current trace id and span id in W3C hex form, or ("", "") outside a sampled span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def shutdown_tracing() -> None:
    """Flushes the batch processor (bounded by the SDK's export timeout) and stops the exporter."""
    global _provider
    if _provider is None:
        return
    try:
        _provider.shutdown()
    except Exception:  # pragma: no cover - exporter failures must not block shutdown
        logger.warning("tracing shutdown failed", exc_info=True)


def mark_rpc_status(code: str) -> None:
    """Records a server call's final gRPC status on the current span (errors set the span status).

    The gRPC instrumentation sees `context.abort` but not `abort_with_status`, which the shared
    interceptor uses for rich errors; this fills the gap.
    """
    if _provider is None or code == "OK":
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    status = grpc.StatusCode.__members__.get(code)
    if status is not None:
        span.set_attribute("rpc.grpc.status_code", status.value[0])
    span.set_status(trace.StatusCode.ERROR, code)


def annotate_cache_lookup(outcome: int, similarity: float, guard_reason: str, tenant: str) -> None:
    """Puts a cache lookup's result (tier and hit or miss, similarity, guard verdict) on the current span."""
    if _provider is None:
        return
    from corral.v1 import common_pb2

    name = common_pb2.CacheOutcome.Name(outcome).removeprefix("CACHE_OUTCOME_").lower()  # type: ignore[arg-type]
    annotate(
        {
            "corral.cache.outcome": name,
            "corral.cache.similarity": similarity,
            "corral.cache.guard_reason": guard_reason,
            "corral.tenant": tenant,
        }
    )
