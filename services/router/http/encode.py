"""Router protos to Ollama's JSON: timestamps, nanosecond durations, messages, metrics, model lists."""

from __future__ import annotations

import time
from typing import Any

from corral.v1 import common_pb2 as cpb
from corral.v1 import router_service_pb2 as rpb
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

_CACHE_OUTCOMES = {
    cpb.CACHE_OUTCOME_MISS: "miss",
    cpb.CACHE_OUTCOME_EXACT_HIT: "exact-hit",
    cpb.CACHE_OUTCOME_SEMANTIC_HIT: "semantic-hit",
    cpb.CACHE_OUTCOME_BYPASS: "bypass",
    cpb.CACHE_OUTCOME_DEGRADED: "degraded",
    cpb.CACHE_OUTCOME_COALESCED: "coalesced",
}


def rfc3339nano(ts: timestamp_pb2.Timestamp | None = None) -> str:
    """Go's RFC3339Nano in UTC (`2024-09-12T21:17:29.110811Z`); an unset timestamp means now."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        now_ns = time.time_ns()
        seconds, nanos = divmod(now_ns, 10**9)
    else:
        seconds, nanos = ts.seconds, ts.nanos
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        text += f".{nanos:09d}".rstrip("0")
    return text + "Z"


def unix_seconds(ts: timestamp_pb2.Timestamp) -> int:
    """Seconds since the epoch (0 when unset)."""
    return int(ts.seconds)


def nanoseconds(duration: duration_pb2.Duration) -> int:
    """A Duration in integer nanoseconds, Ollama's unit."""
    return int(duration.seconds) * 10**9 + int(duration.nanos)


def metrics(stats: cpb.GenerationStats) -> dict[str, int]:
    """The final chunk's metrics, zero values left out as Go's omitempty does."""
    fields = {
        "total_duration": nanoseconds(stats.total_duration),
        "load_duration": nanoseconds(stats.load_duration),
        "prompt_eval_count": int(stats.prompt_eval_count),
        "prompt_eval_duration": nanoseconds(stats.prompt_eval_duration),
        "eval_count": int(stats.eval_count),
        "eval_duration": nanoseconds(stats.eval_duration),
    }
    return {key: value for key, value in fields.items() if value}


def _go_number(value: Any) -> Any:
    # NOTE: Struct holds every number as a double; Go prints an integral float64 without ".0".
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _go_number(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_go_number(item) for item in value]
    return value


def struct_to_json(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain JSON object."""
    result = _go_number(json_format.MessageToDict(struct))
    return result if isinstance(result, dict) else {}


def tool_calls(calls: Any) -> list[dict[str, Any]]:
    """Ollama's tool_calls list."""
    out: list[dict[str, Any]] = []
    for call in calls:
        entry: dict[str, Any] = {}
        if call.id:
            entry["id"] = call.id
        entry["function"] = {
            "index": call.index,
            "name": call.name,
            "arguments": struct_to_json(call.arguments),
        }
        out.append(entry)
    return out


def message(msg: cpb.ChatMessage) -> dict[str, Any]:
    """A chat message in Ollama's shape (role and content always present)."""
    out: dict[str, Any] = {"role": msg.role or "assistant", "content": msg.content}
    if msg.thinking:
        out["thinking"] = msg.thinking
    if msg.tool_calls:
        out["tool_calls"] = tool_calls(msg.tool_calls)
    return out


def generate_reply(model: str, resp: rpb.GenerateResponse) -> dict[str, Any]:
    """A non-streamed /api/generate reply."""
    out: dict[str, Any] = {
        "model": model,
        "created_at": rfc3339nano(resp.created_at),
        "response": resp.response,
    }
    if resp.thinking:
        out["thinking"] = resp.thinking
    out["done"] = True
    if resp.done_reason:
        out["done_reason"] = resp.done_reason
    if resp.context:
        out["context"] = list(resp.context)
    out.update(metrics(resp.stats))
    return out


def generate_chunk(model: str, chunk: rpb.GenerateStreamResponse, *, final: bool) -> dict[str, Any]:
    """One streamed /api/generate line; the final one carries done_reason and the metrics."""
    out: dict[str, Any] = {
        "model": model,
        "created_at": rfc3339nano(chunk.created_at),
        "response": "" if final else chunk.response,
    }
    if chunk.thinking and not final:
        out["thinking"] = chunk.thinking
    out["done"] = final
    if final:
        out["done_reason"] = chunk.done_reason or "stop"
        if chunk.context:
            out["context"] = list(chunk.context)
        out.update(metrics(chunk.stats))
    return out


def chat_reply(model: str, resp: rpb.ChatResponse) -> dict[str, Any]:
    """A non-streamed /api/chat reply."""
    out: dict[str, Any] = {
        "model": model,
        "created_at": rfc3339nano(resp.created_at),
        "message": message(resp.message),
        "done": True,
    }
    if resp.done_reason:
        out["done_reason"] = resp.done_reason
    out.update(metrics(resp.stats))
    return out


def chat_chunk(model: str, chunk: rpb.ChatStreamResponse, *, final: bool) -> dict[str, Any]:
    """One streamed /api/chat line; the final one has empty content, done_reason and the metrics."""
    msg = message(chunk.message)
    if final:
        msg = {"role": msg["role"], "content": ""}
    out: dict[str, Any] = {"model": model, "created_at": rfc3339nano(chunk.created_at), "message": msg}
    out["done"] = final
    if final:
        out["done_reason"] = chunk.done_reason or "stop"
        out.update(metrics(chunk.stats))
    return out


# NOTE: a reason may name a tenant or model from the cache's configuration; headers carry printable
# ASCII only, and a reason is a line, not a document.
_MAX_REASON_CHARS = 200


def header_safe(text: str) -> str:
    """`text` as a header value: printable ASCII (others become "?"), at most 200 characters."""
    safe = "".join(ch if " " <= ch <= "~" else "?" for ch in text.strip())
    return safe if len(safe) <= _MAX_REASON_CHARS else safe[: _MAX_REASON_CHARS - 3] + "..."


def routing_headers(routing: cpb.RoutingInfo) -> dict[str, str]:
    """Corral's routing facts as response headers (bodies stay exactly Ollama's)."""
    headers: dict[str, str] = {}
    if routing.node_id:
        headers["X-Corral-Node"] = routing.node_id
    if routing.cache_outcome:
        # NOTE: an exact hit from the router's near cache says so; every other value is the outcome's.
        near = routing.near_cache and routing.cache_outcome == cpb.CACHE_OUTCOME_EXACT_HIT
        headers["X-Corral-Cache"] = (
            "near-hit" if near else _CACHE_OUTCOMES.get(routing.cache_outcome, "unknown")
        )
    if routing.cache_reason:
        headers["X-Corral-Cache-Reason"] = header_safe(routing.cache_reason)
    if routing.attempts:
        headers["X-Corral-Attempts"] = str(routing.attempts)
    return headers


def _details(details: rpb.ModelDetails) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": details.format or "gguf",
        "family": details.family,
        "families": [details.family] if details.family else None,
        "parameter_size": details.parameter_size,
        "quantization_level": details.quantization_level,
    }


def tags_entry(model: rpb.FleetModel) -> dict[str, Any]:
    """One /api/tags entry for a fleet model."""
    entry: dict[str, Any] = {
        "name": model.name,
        "model": model.name,
        "modified_at": rfc3339nano(model.details.modified_at),
        "size": int(model.details.size_bytes),
        "digest": model.details.digest,
        "details": _details(model.details),
    }
    if model.details.capabilities:
        entry["capabilities"] = list(model.details.capabilities)
    return entry


def ps_entry(model: rpb.FleetModel) -> dict[str, Any] | None:
    """One /api/ps entry: the model as loaded anywhere in the fleet (None when loaded nowhere).

    A model loaded on several nodes is one entry: the largest resident size and the latest expiry.
    """
    loaded = [p for p in model.placements if p.loaded]
    if not loaded:
        return None
    latest = max(loaded, key=lambda p: (p.expires_at.seconds, p.expires_at.nanos))
    return {
        "name": model.name,
        "model": model.name,
        "size": max(int(p.size_loaded_bytes) for p in loaded),
        "digest": model.details.digest,
        "details": _details(model.details),
        "expires_at": rfc3339nano(latest.expires_at),
        "size_vram": max(int(p.size_vram_bytes) for p in loaded),
        "context_length": max(int(p.context_length) for p in loaded),
    }


def show_from_fleet(model: rpb.FleetModel) -> dict[str, Any]:
    """An /api/show reply built from the fleet list (when the core cannot ask a node)."""
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": _details(model.details),
        "model_info": {},
        "capabilities": list(model.details.capabilities),
        "modified_at": rfc3339nano(model.details.modified_at),
    }
