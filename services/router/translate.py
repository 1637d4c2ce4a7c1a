"""Translation between Corral's protobuf messages and Ollama's JSON bodies and chunks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from corral.v1 import common_pb2, router_service_pb2
from google.protobuf import duration_pb2, json_format, timestamp_pb2

_THINK: dict[int, bool | str] = {
    common_pb2.THINK_MODE_OFF: False,
    common_pb2.THINK_MODE_ON: True,
    common_pb2.THINK_MODE_LOW: "low",
    common_pb2.THINK_MODE_MEDIUM: "medium",
    common_pb2.THINK_MODE_HIGH: "high",
    common_pb2.THINK_MODE_MAX: "max",
}

_SCALAR_OPTIONS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "num_predict",
    "seed",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "typical_p",
    "repeat_last_n",
    "num_keep",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "num_thread",
)


def options_json(options: common_pb2.ModelOptions) -> dict[str, Any]:
    """Ollama's `options` object: only the fields that are set, then `extra` passed through."""
    out: dict[str, Any] = {}
    for name in _SCALAR_OPTIONS:
        if options.HasField(name):  # type: ignore[arg-type]
            value = getattr(options, name)
            # NOTE: float32 fields come back as e.g. 0.699999988; round to what the caller meant.
            out[name] = round(value, 6) if isinstance(value, float) else value
    if options.stop:
        out["stop"] = list(options.stop)
    if options.HasField("extra"):
        for key, value in json_format.MessageToDict(options.extra).items():
            out.setdefault(key, value)
    return out


def keep_alive_json(value: duration_pb2.Duration) -> float | int:
    """keep_alive as seconds (Ollama reads a bare number as seconds; negative means forever)."""
    seconds = value.seconds + value.nanos / 1e9
    return -1 if seconds < 0 else (int(seconds) if value.nanos == 0 else seconds)


def format_json(fmt: str) -> str | dict[str, Any] | None:
    """`format`: "json", a JSON Schema object, or None when unset (validated beforehand)."""
    if not fmt:
        return None
    if fmt == "json":
        return "json"
    schema = json.loads(fmt)
    return schema if isinstance(schema, dict) else None


def _common(body: dict[str, Any], spec: Any) -> None:
    if spec.HasField("options"):
        options = options_json(spec.options)
        if options:
            body["options"] = options
    if spec.HasField("keep_alive"):
        body["keep_alive"] = keep_alive_json(spec.keep_alive)
    fmt = format_json(spec.format)
    if fmt is not None:
        body["format"] = fmt
    think = _THINK.get(spec.think)
    if think is not None:
        body["think"] = think


def generate_body(spec: common_pb2.GenerateSpec, *, stream: bool = True) -> dict[str, Any]:
    """The /api/generate body for a GenerateSpec."""
    body: dict[str, Any] = {"model": spec.model, "prompt": spec.prompt, "stream": stream}
    if spec.suffix:
        body["suffix"] = spec.suffix
    if spec.system:
        body["system"] = spec.system
    if spec.template:
        body["template"] = spec.template
    if spec.raw:
        body["raw"] = True
    if spec.images:
        body["images"] = [base64.b64encode(img).decode("ascii") for img in spec.images]
    if spec.context:
        body["context"] = list(spec.context)
    _common(body, spec)
    return body


def message_json(msg: common_pb2.ChatMessage) -> dict[str, Any]:
    """One Ollama chat message."""
    out: dict[str, Any] = {"role": msg.role.lower(), "content": msg.content}
    if msg.thinking:
        out["thinking"] = msg.thinking
    if msg.images:
        out["images"] = [base64.b64encode(img).decode("ascii") for img in msg.images]
    if msg.tool_calls:
        out["tool_calls"] = [
            {
                **({"id": call.id} if call.id else {}),
                "function": {
                    "index": call.index,
                    "name": call.name,
                    "arguments": json_format.MessageToDict(call.arguments),
                },
            }
            for call in msg.tool_calls
        ]
    if msg.tool_name:
        out["tool_name"] = msg.tool_name
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    return out


def chat_body(spec: common_pb2.ChatSpec, *, stream: bool = True) -> dict[str, Any]:
    """The /api/chat body for a ChatSpec."""
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": [message_json(m) for m in spec.messages],
        "stream": stream,
    }
    if spec.tools:
        body["tools"] = [
            {
                "type": tool.type or "function",
                "function": {
                    "name": tool.function.name,
                    "description": tool.function.description,
                    "parameters": json_format.MessageToDict(tool.function.parameters),
                },
            }
            for tool in spec.tools
        ]
    _common(body, spec)
    return body


def embed_body(req: router_service_pb2.EmbedRequest, inputs: list[str]) -> dict[str, Any]:
    """The /api/embed body for a batch of inputs."""
    body: dict[str, Any] = {"model": req.model, "input": inputs}
    if req.HasField("truncate"):
        body["truncate"] = req.truncate
    if req.dimensions:
        body["dimensions"] = req.dimensions
    if req.HasField("options"):
        options = options_json(req.options)
        if options:
            body["options"] = options
    if req.HasField("keep_alive"):
        body["keep_alive"] = keep_alive_json(req.keep_alive)
    return body


def duration_from_ns(ns: int) -> duration_pb2.Duration:
    """A Duration from Ollama's int64 nanoseconds."""
    return duration_pb2.Duration(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def stats_from(chunk: dict[str, Any]) -> common_pb2.GenerationStats:
    """GenerationStats from Ollama's final chunk (absent metrics stay zero)."""
    stats = common_pb2.GenerationStats(
        prompt_eval_count=int(chunk.get("prompt_eval_count") or 0),
        eval_count=int(chunk.get("eval_count") or 0),
    )
    # NOTE: fields set in place: building four Durations and copying them in costs twice as much.
    for name, target in (
        ("total_duration", stats.total_duration),
        ("load_duration", stats.load_duration),
        ("prompt_eval_duration", stats.prompt_eval_duration),
        ("eval_duration", stats.eval_duration),
    ):
        target.seconds, target.nanos = divmod(int(chunk.get(name) or 0), 1_000_000_000)
    return stats


def _rfc3339(text: str) -> tuple[int, int] | None:
    """(seconds, nanos) of "YYYY-MM-DDTHH:MM:SS[.digits](Z|+HH:MM|-HH:MM)", else None."""
    if len(text) < 20 or text[10] not in "Tt":
        return None
    try:
        base = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    except ValueError:
        return None
    rest = text[19:]
    nanos = 0
    if rest[:1] == ".":
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        if end == 1:
            return None
        nanos = int(rest[1:end][:9].ljust(9, "0"))
        rest = rest[end:]
    if rest in ("Z", "z"):
        offset_s = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":" and rest[1:3].isdigit() and rest[4:].isdigit():
        offset_s = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        return None
    return int(base.timestamp()) - offset_s, nanos


def timestamp_from(text: Any) -> timestamp_pb2.Timestamp:
    """A Timestamp from Ollama's RFC 3339 `created_at`, or now when absent or unreadable."""
    stamp = timestamp_pb2.Timestamp()
    if isinstance(text, str) and text:
        # NOTE: protobuf's FromJsonString goes through strptime (~20 µs a call); Ollama's stamps
        # (Go's RFC3339Nano) take the quick path, anything else the library's.
        parsed = _rfc3339(text)
        if parsed is not None:
            stamp.seconds, stamp.nanos = parsed
            return stamp
        try:
            stamp.FromJsonString(text)
            return stamp
        except ValueError:
            pass
    stamp.GetCurrentTime()
    return stamp


def tool_calls_from(raw: Any) -> list[common_pb2.ToolCall]:
    """ToolCall messages from Ollama's `message.tool_calls`."""
    calls: list[common_pb2.ToolCall] = []
    if not isinstance(raw, list):
        return calls
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            continue
        function = item.get("function") or {}
        call = common_pb2.ToolCall(
            id=str(item.get("id") or ""),
            index=int(function.get("index", position) or 0),
            name=str(function.get("name") or ""),
        )
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                arguments = {"_raw": arguments}
        if isinstance(arguments, dict):
            call.arguments.update(arguments)
        calls.append(call)
    return calls


def stats_tokens_per_s(stats: common_pb2.GenerationStats) -> float:
    """Generation speed from the stats (0 when unknown)."""
    eval_s = stats.eval_duration.seconds + stats.eval_duration.nanos / 1e9
    return stats.eval_count / eval_s if eval_s > 0 else 0.0
