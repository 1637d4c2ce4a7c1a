"""OpenAI-compatible endpoints: /v1/chat/completions and /v1/completions (SSE or not), /v1/embeddings,
/v1/models."""

from __future__ import annotations

import base64
import json
import random
import struct
import time
from typing import Any

from aiohttp import web
from corral.v1 import common_pb2 as cpb
from corral.v1 import router_service_pb2 as rpb

from services.common import errors
from services.router.http import encode
from services.router.http.decode import Fields, number, read_object, to_struct
from services.router.http.errors import ApiError, dumps, json_response, openai_error_body
from services.router.http.ollama_api import canonical_model, model_error
from services.router.http.protocol import RouterCoreProtocol
from services.router.http.requests import Controls, parse_tools
from services.router.http.responses_api import ResponseBuilder, parse_responses
from services.router.http.streaming import SSE_CONTENT_TYPE, StreamWriter, stream_core_reply
from services.router.http.tenancy import tenant_of

_EFFORT = {"none": cpb.THINK_MODE_OFF, "low": cpb.THINK_MODE_LOW, "medium": cpb.THINK_MODE_MEDIUM}
_EFFORT["high"] = cpb.THINK_MODE_HIGH
_ROLES = frozenset({"system", "user", "assistant", "tool"})


class SseWriter(StreamWriter):
    """Server-sent events: `data: {json}` blocks, `data: [DONE]` at the end."""

    content_type = SSE_CONTENT_TYPE

    def frame(self, obj: dict[str, Any]) -> bytes:
        """One SSE event."""
        return f"data: {dumps(obj)}\n\n".encode()

    def error_frame(self, message: str) -> bytes:
        """An error event in OpenAI's shape (the client raises on it)."""
        return self.frame(openai_error_body(500, message))

    def trailer(self) -> bytes:
        """The end-of-stream marker."""
        return b"data: [DONE]\n\n"


def _content(value: Any, where: str, images: list[bytes]) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise ApiError(400, f"{where}: invalid message content type")
    texts: list[str] = []
    for index, part in enumerate(value):
        if not isinstance(part, dict):
            raise ApiError(400, f"{where}[{index}]: invalid message part")
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(_data_uri(part.get("image_url"), f"{where}[{index}].image_url"))
        else:
            raise ApiError(400, f"{where}[{index}]: invalid message part type: {kind!r}")
    return "\n".join(texts)


def _data_uri(value: Any, where: str) -> bytes:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise ApiError(400, f"{where}: invalid image input (only base64 data URIs are supported)")
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except ValueError:
        raise ApiError(400, f"{where}: invalid image input (bad base64)") from None


def _message(raw: Any, index: int) -> cpb.ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise ApiError(400, f"{where}: must be an object")
    role = raw.get("role")
    role = "system" if role == "developer" else role
    if not isinstance(role, str) or role not in _ROLES:
        raise ApiError(400, f"{where}.role: invalid role {role!r}")
    images: list[bytes] = []
    msg = cpb.ChatMessage(role=role, content=_content(raw.get("content"), f"{where}.content", images))
    msg.images.extend(images)
    if isinstance(raw.get("tool_call_id"), str):
        msg.tool_call_id = raw["tool_call_id"]
    if role == "tool" and isinstance(raw.get("name"), str):
        msg.tool_name = raw["name"]
    calls = raw.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ApiError(400, f"{where}.tool_calls: must be an array")
    for call_index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ApiError(400, f"{where}.tool_calls[{call_index}].function: must have a name")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            raise ApiError(
                400, f"{where}.tool_calls[{call_index}].function.arguments: invalid JSON"
            ) from None
        if not isinstance(parsed, dict):
            raise ApiError(400, f"{where}.tool_calls[{call_index}].function.arguments: must be a JSON object")
        tool_call = cpb.ToolCall(id=str(call.get("id") or ""), index=call_index, name=function["name"])
        tool_call.arguments.CopyFrom(
            to_struct(parsed, f"{where}.tool_calls[{call_index}].function.arguments")
        )
        msg.tool_calls.append(tool_call)
    return msg


def _sampling(body: dict[str, Any], opts: cpb.ModelOptions) -> None:
    """The sampling fields both completion endpoints share, as Ollama's compatibility layer maps them."""
    # NOTE: Ollama's compatibility layer sends temperature and top_p 1.0 when the client sets none.
    temperature = number(body, "temperature", float)
    opts.temperature = 1.0 if temperature is None else float(temperature)
    top_p = number(body, "top_p", float)
    opts.top_p = 1.0 if top_p is None else float(top_p)
    max_tokens = number(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = number(body, "max_tokens", int)
    if max_tokens is not None:
        opts.num_predict = int(max_tokens)
    seed = number(body, "seed", int)
    if seed is not None:
        opts.seed = int(seed)
    for name in ("frequency_penalty", "presence_penalty"):
        value = number(body, name, float)
        if value is not None:
            setattr(opts, name, float(value))
    stop = body.get("stop")
    if isinstance(stop, str):
        opts.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        opts.stop.extend(stop)
    elif stop is not None:
        raise ApiError(400, "stop: must be a string or an array of strings")


def _include_usage(body: dict[str, Any]) -> bool:
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise ApiError(400, "stream_options: must be an object")
    return bool(stream_options.get("include_usage"))


def parse_completion(body: dict[str, Any]) -> tuple[cpb.GenerateSpec, bool, bool]:
    """A /v1/completions body as a GenerateSpec, whether to stream, and whether to add usage."""
    fields = Fields(body, "CompletionRequest")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "invalid prompt: must be a string")
    spec = cpb.GenerateSpec(model=fields.string("model"), prompt=prompt, suffix=fields.string("suffix"))
    _sampling(body, spec.options)
    stream = bool(fields.boolean("stream"))
    return spec, stream, _include_usage(body)


def parse_chat_completion(body: dict[str, Any]) -> tuple[cpb.ChatSpec, bool, bool]:
    """A /v1/chat/completions body as a ChatSpec, whether to stream, and whether to add usage."""
    fields = Fields(body, "ChatCompletionRequest")
    spec = cpb.ChatSpec(model=fields.string("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "[] is too short - 'messages'")
    spec.messages.extend(_message(m, i) for i, m in enumerate(messages))
    spec.tools.extend(parse_tools(fields.objects("tools", "[]api.Tool")))
    _sampling(body, spec.options)
    spec.format = _response_format(body.get("response_format"))
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _EFFORT:
            raise ApiError(400, f"reasoning_effort: invalid value {effort!r} (none, low, medium or high)")
        spec.think = _EFFORT[effort]
    stream = bool(fields.boolean("stream"))
    return spec, stream, _include_usage(body)


def _response_format(value: Any) -> str:
    if value is None:
        return ""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return ""
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (
            (value.get("json_schema") or {}).get("schema")
            if isinstance(value.get("json_schema"), dict)
            else None
        )
        return json.dumps(schema, separators=(",", ":")) if isinstance(schema, dict) else "json"
    raise ApiError(400, "response_format: type must be text, json_object or json_schema")


def _finish_reason(done_reason: str, has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id or f"call_{random.randrange(16**8):08x}",
            "index": call.index,
            "type": "function",
            "function": {"name": call.name, "arguments": dumps(encode.struct_to_json(call.arguments))},
        }
        for call in calls
    ]


def _usage(stats: cpb.GenerationStats) -> dict[str, int]:
    prompt, completion = int(stats.prompt_eval_count), int(stats.eval_count)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _model_error(model: str, err: errors.CorralError) -> ApiError:
    """The HTTP error for a failed call about `model`: OpenAI's not-found text for an unknown model."""
    return model_error(err, ApiError(404, f"model '{model}' not found"))


class OpenAiApi:
    """The /v1 endpoints, translating to and from the router core."""

    def __init__(self, core: RouterCoreProtocol) -> None:
        self.core = core
        self._writer = SseWriter()

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions."""
        spec, stream, include_usage = parse_chat_completion(
            await read_object(request, "ChatCompletionRequest")
        )
        model = spec.model
        if not model:
            raise ApiError(400, "model is required")
        controls = Controls(request)
        tenant = tenant_of(request)
        base = {
            "id": f"chatcmpl-{random.randrange(1000)}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ollama",
        }
        if not stream:
            unary = rpb.ChatRequest(
                spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
            )
            try:
                resp = await self.core.chat(unary, tenant=tenant, deadline_s=None)
            except errors.CorralError as exc:
                raise _model_error(model, exc) from None
            msg: dict[str, Any] = {"role": "assistant", "content": resp.message.content}
            if resp.message.thinking:
                msg["reasoning"] = resp.message.thinking
            if resp.message.tool_calls:
                msg["tool_calls"] = _tool_calls(resp.message.tool_calls)
            choice = {
                "index": 0,
                "message": msg,
                "finish_reason": _finish_reason(resp.done_reason, bool(resp.message.tool_calls)),
            }
            reply = {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(resp.stats)}
            return json_response(reply, headers=encode.routing_headers(resp.routing))
        streamed = rpb.ChatStreamRequest(
            spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
        )
        saw_tool_calls = False

        def chunk_obj(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**base, "object": "chat.completion.chunk", "choices": [choice]}

        def render(chunk: rpb.ChatStreamResponse) -> list[dict[str, Any]]:
            nonlocal saw_tool_calls
            out: list[dict[str, Any]] = []
            m = chunk.message
            if m.content or m.thinking or m.tool_calls or not chunk.done:
                delta: dict[str, Any] = {"role": "assistant", "content": m.content}
                if m.thinking:
                    delta["reasoning"] = m.thinking
                if m.tool_calls:
                    saw_tool_calls = True
                    delta["tool_calls"] = _tool_calls(m.tool_calls)
                out.append(chunk_obj(delta, None))
            if chunk.done:
                out.append(chunk_obj({}, _finish_reason(chunk.done_reason, saw_tool_calls)))
                if include_usage:
                    out.append(
                        {
                            **base,
                            "object": "chat.completion.chunk",
                            "choices": [],
                            "usage": _usage(chunk.stats),
                        }
                    )
            return out

        return await stream_core_reply(
            request,
            self.core.chat_stream(streamed, tenant=tenant, deadline_s=None),
            render=render,
            writer=self._writer,
            translate=lambda e: _model_error(model, e),
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/completions: a templated completion of `prompt` (Ollama maps it to /api/generate)."""
        spec, stream, include_usage = parse_completion(await read_object(request, "CompletionRequest"))
        model = spec.model
        if not model:
            raise ApiError(400, "model is required")
        controls = Controls(request)
        tenant = tenant_of(request)
        base = {
            "id": f"cmpl-{random.randrange(1000)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ollama",
        }

        if not stream:
            unary = rpb.GenerateRequest(
                spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
            )
            try:
                resp = await self.core.generate(unary, tenant=tenant, deadline_s=None)
            except errors.CorralError as exc:
                raise _model_error(model, exc) from None
            choice = {
                "text": resp.response,
                "index": 0,
                "finish_reason": _finish_reason(resp.done_reason, False),
            }
            reply = {**base, "choices": [choice], "usage": _usage(resp.stats)}
            return json_response(reply, headers=encode.routing_headers(resp.routing))
        streamed = rpb.GenerateStreamRequest(
            spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
        )

        def render(chunk: rpb.GenerateStreamResponse) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            if chunk.response:
                out.append({**base, "choices": [{"text": chunk.response, "index": 0, "finish_reason": None}]})
            if chunk.done:
                finish = _finish_reason(chunk.done_reason, False)
                out.append({**base, "choices": [{"text": "", "index": 0, "finish_reason": finish}]})
                if include_usage:
                    out.append({**base, "choices": [], "usage": _usage(chunk.stats)})
            return out

        return await stream_core_reply(
            request,
            self.core.generate_stream(streamed, tenant=tenant, deadline_s=None),
            render=render,
            writer=self._writer,
            translate=lambda e: _model_error(model, e),
        )

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses: OpenAI's Responses API over a chat (responses_api.py)."""
        spec, stream = parse_responses(await read_object(request, "ResponsesRequest"))
        model = spec.model
        if not model:
            raise ApiError(400, "model is required")
        controls = Controls(request)
        tenant = tenant_of(request)
        builder = ResponseBuilder(spec)

        if not stream:
            unary = rpb.ChatRequest(
                spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
            )
            try:
                resp = await self.core.chat(unary, tenant=tenant, deadline_s=None)
            except errors.CorralError as exc:
                raise _model_error(model, exc) from None
            return json_response(builder.whole(resp), headers=encode.routing_headers(resp.routing))
        streamed = rpb.ChatStreamRequest(
            spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
        )
        started = False

        def render(chunk: rpb.ChatStreamResponse) -> list[dict[str, Any]]:
            nonlocal started
            events: list[dict[str, Any]] = []
            if not started:
                started = True
                events += builder.start()
            events += builder.add(chunk.message)
            if chunk.done:
                events += builder.finish(chunk.stats, chunk.done_reason)
            return events

        return await stream_core_reply(
            request,
            self.core.chat_stream(streamed, tenant=tenant, deadline_s=None),
            render=render,
            writer=self._writer,
            translate=lambda e: _model_error(model, e),
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/embeddings (float lists or base64 little-endian float32)."""
        body = await read_object(request, "EmbedRequest")
        fields = Fields(body, "EmbedRequest")
        model = fields.string("model")
        if not model:
            raise ApiError(400, "model is required")
        raw = body.get("input")
        if isinstance(raw, str) and raw:
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            inputs = list(raw)
        else:
            raise ApiError(400, "invalid input type")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(400, "encoding_format: must be float or base64")
        controls = Controls(request)
        req = rpb.EmbedRequest(model=model, inputs=inputs, priority=controls.priority, cache=controls.cache)
        dimensions = number(body, "dimensions", int)
        if dimensions is not None:
            if dimensions < 0:
                raise ApiError(400, "dimensions: must be a positive integer")
            req.dimensions = int(dimensions)
        try:
            resp = await self.core.embed(req, tenant=tenant_of(request), deadline_s=None)
        except errors.CorralError as exc:
            raise _model_error(model, exc) from None
        data = []
        for index, embedding in enumerate(resp.embeddings):
            values = list(embedding.values)
            vector: Any = values
            if encoding == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "embedding": vector, "index": index})
        tokens = int(resp.prompt_eval_count)
        reply = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return json_response(reply, headers=encode.routing_headers(resp.routing))

    async def models(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/models."""
        listing = await self.core.list_models(
            rpb.ListModelsRequest(), tenant=tenant_of(request), deadline_s=None
        )
        return json_response({"object": "list", "data": [_model_entry(m) for m in listing.models]})

    async def model(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/models/{model}."""
        name = request.match_info["model"]
        listing = await self.core.list_models(
            rpb.ListModelsRequest(), tenant=tenant_of(request), deadline_s=None
        )
        for fleet_model in listing.models:
            if canonical_model(fleet_model.name) == canonical_model(name):
                return json_response({**_model_entry(fleet_model), "id": name})
        raise ApiError(404, f"model '{name}' not found")


def _model_entry(model: rpb.FleetModel) -> dict[str, Any]:
    created = encode.unix_seconds(model.details.modified_at)
    return {"id": model.name, "object": "model", "created": created, "owned_by": "library"}
