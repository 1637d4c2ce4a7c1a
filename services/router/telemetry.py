"""The router's metrics, spans and request log, plugged into its observation seams.

`install(core)` adds `RouterTelemetry` to the core's observers (request and attempt metrics, span
attributes, one log line per client request) and registers the scrape-time collector.
`AttemptTrail` is what the forwarder calls around each node attempt: it opens the attempt's span
(the `traceparent` sent to the node names it) and counts failovers with their reason.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from corral.v1 import common_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace

from services.common import metrics, tracing
from services.router.collector import watch_router
from services.router.observe import AttemptRecord, Observer
from services.router.scores import Attempt, normalize_model

if TYPE_CHECKING:
    from services.router.core import RouterCore

request_log = logging.getLogger("corral.request")
_tracer = trace.get_tracer("corral.router")

# NOTE: the last attempt of the request in progress in this task (node id, attempt number), read
# and cleared by the request hook for the log line; set by AttemptTrail in the same task.
_last_attempt: ContextVar[tuple[str, int] | None] = ContextVar("corral_last_attempt", default=None)

_CACHE_OUTCOMES: dict[int, str] = {
    value: name.removeprefix("CACHE_OUTCOME_").lower() for name, value in common_pb2.CacheOutcome.items()
}
_PROMPT_ATTRIBUTE_MAX_CHARS = 4096


def outcome_name(outcome: Attempt) -> str:
    """The label value of an attempt outcome: "ok" or the failure kind in lower case."""
    return "ok" if outcome is Attempt.NONE else outcome.name.lower()


def cache_outcome_name(outcome: int) -> str:
    """The label value of a CacheOutcome ("exact_hit", "miss", ...)."""
    return _CACHE_OUTCOMES.get(int(outcome), "unspecified")


def prompt_text(spec: Any) -> str:
    """The prompt of a GenerateSpec, or the last message of a ChatSpec (recorded only when enabled)."""
    if isinstance(spec, common_pb2.ChatSpec):
        return str(spec.messages[-1].content) if spec.messages else ""
    return str(getattr(spec, "prompt", ""))


class AttemptTrail:
    """The node attempts of one request: one span per attempt and failover counting.

    Call `begin` right before the attempt's HTTP request and `end` once it is over; both are cheap
    no-ops for tracing when it is off.
    """

    __slots__ = ("_kind", "_model", "_previous", "_prompt", "_span", "_token")

    def __init__(self, model: str, kind: str, spec: Any = None) -> None:
        self._model = model
        self._kind = kind
        self._previous: Attempt | None = None
        self._prompt = spec
        self._span: trace.Span | None = None
        self._token: Any = None

    def begin(self, node_id: str, attempt: int, resumed: bool = False) -> None:
        """Starts attempt number `attempt` (1-based) on `node_id`; makes its span current."""
        reason = ""
        if attempt > 1 and self._previous is not None:
            reason = outcome_name(self._previous)
            metrics.router_metrics().failovers.labels(reason).inc()
        _last_attempt.set((node_id, attempt))
        if not tracing.enabled():
            return
        attributes: dict[str, Any] = {
            "corral.node.id": node_id,
            "corral.attempt.number": attempt,
            "corral.attempt.resumed": resumed,
            "gen_ai.request.model": self._model,
            "gen_ai.operation.name": "chat" if self._kind == "chat" else "text_completion",
            "gen_ai.system": "ollama",
        }
        if reason:
            attributes["corral.failover.reason"] = reason
        if self._prompt is not None and attempt == 1 and tracing.capture_content():
            attributes["gen_ai.prompt"] = prompt_text(self._prompt)[:_PROMPT_ATTRIBUTE_MAX_CHARS]
        # NOTE: kind CLIENT: the span stands for the HTTP call to the node, whose `traceparent` names it.
        self._span = _tracer.start_span("node attempt", kind=trace.SpanKind.CLIENT, attributes=attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def end(self, outcome: Attempt) -> None:
        """Ends the attempt begun last with its outcome."""
        self._previous = outcome
        span, self._span = self._span, None
        if span is None:
            return
        span.set_attribute("corral.attempt.outcome", outcome_name(outcome))
        if outcome is not Attempt.NONE:
            span.set_status(trace.StatusCode.ERROR, outcome_name(outcome))
        span.end()
        token, self._token = self._token, None
        otel_context.detach(token)


class RouterTelemetry(Observer):
    """Metrics, span attributes and the request log line from the router's observation hooks.

    Args:
        core: The router core (its score board bounds the model label).
        log_requests: Write one `corral.request` line per client request.
    """

    def __init__(self, core: RouterCore, log_requests: bool = True) -> None:
        m = self._m = metrics.router_metrics()
        self._attempts = metrics.children(m.node_attempts)
        self._attempt_duration = metrics.children(m.node_attempt_duration)
        self._ttft = metrics.children(m.ttft)
        self._tokens = metrics.children(m.tokens)
        self._requests = metrics.children(m.requests)
        self._request_duration = metrics.children(m.request_duration)
        self._lookups = metrics.children(m.cache_lookups)
        self._board = core.board
        self._log = log_requests
        # NOTE: request models come from clients; only the fleet's models become label values.
        self._models = metrics.BoundedLabel(64, self._known_models)
        self._nodes = metrics.BoundedLabel(256)

    def _known_models(self) -> set[str] | None:
        return self._board.known_models() or set()

    def attempt(self, record: AttemptRecord) -> None:
        node = self._nodes(record.node_id)
        model = self._models(record.model)
        outcome = outcome_name(record.outcome)
        self._attempts(node, model, outcome).inc()
        self._attempt_duration(node, model, outcome).observe(record.latency_ms / 1000)
        if record.outcome is Attempt.NONE and record.ttft_ms > 0:
            self._ttft(node, model).observe(record.ttft_ms / 1000)
        if record.prompt_tokens:
            self._tokens(node, model, "input").inc(record.prompt_tokens)
        if record.eval_tokens:
            self._tokens(node, model, "output").inc(record.eval_tokens)
        # NOTE: the forwarder calls this while the attempt's span is still current.
        tracing.annotate(
            {
                "corral.attempt.latency_ms": round(record.latency_ms, 3),
                "corral.attempt.ttft_ms": round(record.ttft_ms, 3),
                "gen_ai.usage.input_tokens": record.prompt_tokens,
                "gen_ai.usage.output_tokens": record.eval_tokens,
                "corral.node.inflight_after": record.inflight_after,
            }
        )

    def request(self, rpc: str, model: str, status: str, latency_ms: float, cache_outcome: int) -> None:
        label = self._models(normalize_model(model)) if model else "none"
        self._requests(rpc, label, status).inc()
        self._request_duration(rpc, label, status).observe(latency_ms / 1000)
        cache = cache_outcome_name(cache_outcome)
        last = _last_attempt.get()
        if last is not None:
            _last_attempt.set(None)
        node, attempts = last if last is not None else ("", 0)
        tracing.annotate(
            {"gen_ai.request.model": model, "corral.cache.outcome": cache, "corral.attempts": attempts}
        )
        if self._log:
            trace_id, span_id = tracing.current_ids()
            request_log.info(
                "request %s %s %s %.1f ms",
                rpc,
                model,
                status,
                latency_ms,
                extra={
                    "rpc": rpc,
                    "model": model,
                    "outcome": status,
                    "latency_ms": round(latency_ms, 3),
                    "cache_outcome": cache,
                    "node": node,
                    "attempts": attempts,
                    "trace_id": trace_id,
                    "span_id": span_id,
                },
            )

    def cache_lookup(self, outcome: int, latency_ms: float) -> None:
        self._lookups(cache_outcome_name(outcome)).inc()
        self._m.cache_lookup_duration.observe(latency_ms / 1000)


def annotate_request(rpc: str, tenant: str) -> None:
    """Puts the request's tenant and RPC on the current (request) span."""
    tracing.annotate({"corral.tenant": tenant, "corral.rpc": rpc})


def install(core: RouterCore, log_requests: bool = True) -> RouterTelemetry:
    """Adds the router's telemetry observer to `core` and exports its state at scrape time."""
    telemetry = RouterTelemetry(core, log_requests)
    core.observers.add(telemetry)
    watch_router(core)
    return telemetry
