"""Ollama request bodies to router protos: /api/generate, /api/chat and /api/embed(dings)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from corral.v1 import common_pb2 as cpb
from corral.v1 import router_service_pb2 as rpb

from services.router.http.decode import Fields, to_struct
from services.router.http.errors import ApiError
from services.router.http.options import parse_options

_CACHE_MODES = {
    "bypass": cpb.CACHE_MODE_BYPASS,
    "refresh": cpb.CACHE_MODE_REFRESH,
    "exact": cpb.CACHE_MODE_EXACT,
    "semantic": cpb.CACHE_MODE_SEMANTIC,
    "default": cpb.CACHE_MODE_UNSPECIFIED,
}
_PRIORITIES = {"interactive": cpb.PRIORITY_INTERACTIVE, "background": cpb.PRIORITY_BACKGROUND}

CACHE_MODE_HEADER = "X-Corral-Cache-Mode"
SESSION_HEADER = "X-Corral-Session"
PRIORITY_HEADER = "X-Corral-Priority"


class Controls:
    """Corral's per-request controls, taken from optional headers (Ollama bodies stay untouched)."""

    def __init__(self, request: web.Request) -> None:
        mode = request.headers.get(CACHE_MODE_HEADER, "default").strip().lower()
        if mode not in _CACHE_MODES:
            raise ApiError(400, f"{CACHE_MODE_HEADER}: must be one of {', '.join(sorted(_CACHE_MODES))}")
        priority = request.headers.get(PRIORITY_HEADER, "interactive").strip().lower()
        if priority not in _PRIORITIES:
            raise ApiError(400, f"{PRIORITY_HEADER}: must be interactive or background")
        self.cache = cpb.CachePolicy(mode=_CACHE_MODES[mode])
        self.priority = _PRIORITIES[priority]
        self.session_id = request.headers.get(SESSION_HEADER, "")[:256]


def _tool_call(raw: dict[str, Any], where: str) -> cpb.ToolCall:
    function = raw.get("function")
    if not isinstance(function, dict):
        raise ApiError(400, f"{where}.function: must be an object")
    fields = Fields(function, "ToolCallFunction")
    arguments = function.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise fields.fail("arguments", arguments, "api.ToolCallFunctionArguments")
    call = cpb.ToolCall(name=fields.string("name"), index=fields.integer("index") or 0)
    call_id = raw.get("id")
    if isinstance(call_id, str):
        call.id = call_id
    call.arguments.CopyFrom(to_struct(arguments, f"{where}.function.arguments"))
    return call


def parse_messages(raw: list[dict[str, Any]]) -> list[cpb.ChatMessage]:
    """Ollama chat messages (roles lowercased, as Ollama does)."""
    out: list[cpb.ChatMessage] = []
    for index, item in enumerate(raw):
        fields = Fields(item, "Message")
        msg = cpb.ChatMessage(
            role=fields.string("role").lower(),
            content=fields.string("content"),
            thinking=fields.string("thinking"),
            tool_name=fields.string("tool_name"),
            tool_call_id=fields.string("tool_call_id"),
        )
        msg.images.extend(fields.images())
        for call_index, call in enumerate(fields.objects("tool_calls", "[]api.ToolCall")):
            msg.tool_calls.append(_tool_call(call, f"messages[{index}].tool_calls[{call_index}]"))
        out.append(msg)
    return out


def parse_tools(raw: list[dict[str, Any]]) -> list[cpb.Tool]:
    """Ollama tools: `{"type": "function", "function": {name, description, parameters}}`."""
    out: list[cpb.Tool] = []
    for index, item in enumerate(raw):
        fields = Fields(item, "Tool")
        function = item.get("function") or {}
        if not isinstance(function, dict):
            raise fields.fail("function", function, "api.ToolFunction")
        ffields = Fields(function, "ToolFunction")
        parameters = function.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ffields.fail("parameters", parameters, "api.ToolFunctionParameters")
        tool = cpb.Tool(type=fields.string("type") or "function")
        tool.function.name = ffields.string("name")
        tool.function.description = ffields.string("description")
        tool.function.parameters.CopyFrom(to_struct(parameters, f"tools[{index}].function.parameters"))
        out.append(tool)
    return out


def parse_generate(body: dict[str, Any]) -> tuple[cpb.GenerateSpec, bool]:
    """An /api/generate body as a GenerateSpec, and whether to stream (a missing `stream` is true)."""
    fields = Fields(body, "GenerateRequest")
    spec = cpb.GenerateSpec(
        model=fields.string("model"),
        prompt=fields.string("prompt"),
        suffix=fields.string("suffix"),
        system=fields.string("system"),
        template=fields.string("template"),
        raw=bool(fields.boolean("raw")),
        format=fields.format(),
        think=fields.think(),
    )
    spec.images.extend(fields.images())
    spec.options.CopyFrom(parse_options(body.get("options"), "GenerateRequest.options"))
    fields.keep_alive(spec)
    # NOTE: `context` (deprecated token memory) travels to the node, which prepends it to the prompt.
    context = body.get("context")
    if context is not None and not (
        isinstance(context, list)
        and all(isinstance(t, int) and not isinstance(t, bool) and -(2**63) <= t < 2**63 for t in context)
    ):
        raise fields.fail("context", context, "[]int")
    if context:
        spec.context.extend(context)
    for name in ("truncate", "shift", "logprobs"):
        fields.boolean(name)
    if spec.raw and (spec.template or spec.system or context):
        raise ApiError(400, "raw mode does not support template, system, or context")
    stream = fields.boolean("stream")
    return spec, stream is not False


def parse_chat(body: dict[str, Any]) -> tuple[cpb.ChatSpec, bool]:
    """An /api/chat body as a ChatSpec, and whether to stream."""
    fields = Fields(body, "ChatRequest")
    spec = cpb.ChatSpec(model=fields.string("model"), format=fields.format(), think=fields.think())
    spec.messages.extend(parse_messages(fields.objects("messages", "[]api.Message")))
    spec.tools.extend(parse_tools(fields.objects("tools", "api.Tools")))
    spec.options.CopyFrom(parse_options(body.get("options"), "ChatRequest.options"))
    fields.keep_alive(spec)
    for name in ("truncate", "shift", "logprobs"):
        fields.boolean(name)
    stream = fields.boolean("stream")
    return spec, stream is not False


def parse_embed(body: dict[str, Any]) -> rpb.EmbedRequest:
    """An /api/embed body as an EmbedRequest (`input` is a string or a list of strings)."""
    fields = Fields(body, "EmbedRequest")
    req = rpb.EmbedRequest(model=fields.string("model"))
    raw = body.get("input")
    if isinstance(raw, str):
        inputs = [raw] if raw else []
    elif raw is None:
        inputs = []
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        inputs = list(raw)
    else:
        raise ApiError(400, "invalid input type")
    req.inputs.extend(inputs)
    truncate = fields.boolean("truncate")
    if truncate is not None:
        req.truncate = truncate
    dimensions = fields.integer("dimensions")
    if dimensions is not None:
        if dimensions < 0:
            raise ApiError(400, "dimensions must be a non-negative integer")
        req.dimensions = dimensions
    req.options.CopyFrom(parse_options(body.get("options"), "EmbedRequest.options"))
    fields.keep_alive(req)
    return req


def parse_embeddings(body: dict[str, Any]) -> rpb.EmbedRequest:
    """A legacy /api/embeddings body (`prompt`) as an EmbedRequest of at most one input."""
    fields = Fields(body, "EmbeddingRequest")
    req = rpb.EmbedRequest(model=fields.string("model"))
    prompt = fields.string("prompt")
    if prompt:
        req.inputs.append(prompt)
    req.options.CopyFrom(parse_options(body.get("options"), "EmbeddingRequest.options"))
    fields.keep_alive(req)
    return req
