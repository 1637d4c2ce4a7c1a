"""OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sim import textgen
from sim.api_infer import check_tools, completion_model, parse_format, render_chat, resolve_think, tool_prompt
from sim.completion import CompletionRequest, CompletionResult, Delta, run_completion
from sim.embedder import embed_texts
from sim.engine import BusyError, Engine
from sim.wire import ApiError, encode, json_response, start_sse

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
_ids = itertools.count(1)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def openai_errors(handler: Handler) -> Handler:
    """Answer errors in OpenAI's shape, keeping the native status."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            body = {
                "error": {
                    "message": exc.message,
                    "type": _ERROR_TYPES.get(exc.status, "api_error"),
                    "param": None,
                    "code": None,
                }
            }
            return json_response(body, status=exc.status)

    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid request body: expected a JSON object")
    return body


def _content_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(str(p) for p in parts)
    raise ApiError(400, f"messages[{index}].content: invalid content type")


class OpenAiApi:
    """Handlers bound to one node's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions."""
        body = await _body(request)
        name, spec = completion_model(self.engine, body, "chat")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "[] is too short - 'messages'")
        plain = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise ApiError(400, f"messages[{i}]: must be an object")
            role = "system" if m.get("role") == "developer" else m.get("role")
            message: dict[str, Any] = {"role": role, "content": _content_text(m.get("content"), i)}
            calls = _native_calls(m.get("tool_calls"), i)
            if calls:
                message["tool_calls"] = calls
            plain.append(message)
        ids, key = render_chat(plain)
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
        check_tools(spec, tools)
        effort = body.get("reasoning_effort")
        if isinstance(body.get("reasoning"), dict):
            effort = body["reasoning"].get("effort", effort)
        think = resolve_think(spec, name, None if effort is None else effort != "none" and effort)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        num_predict, stops, seed = _sampling(body, max_tokens, self.engine.cfg.seed)
        fmt = body.get("response_format")
        format_value: Any = None
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            format_value = "json"
        elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            format_value = (fmt.get("json_schema") or {}).get("schema") or "json"
        req = CompletionRequest(
            spec=spec,
            prompt_ids=ids,
            key=f"{spec.key}\x01{key}",
            keep_alive_s=self.engine.cfg.keep_alive_s,
            seed=seed,
            num_predict=num_predict,
            stop=stops,
            json_format=parse_format(format_value),
            think=think,
            tools=tools,
            tool_prompt=tool_prompt(plain),
            transcript=self.engine.transcript(request.path, body),
        )
        completion_id = f"chatcmpl-{next(_ids)}"
        created = int(time.time())
        if not body.get("stream"):
            try:
                result = await run_completion(self.engine, req, None)
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            return json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "system_fingerprint": "fp_ollama",
                    "choices": [
                        {
                            "index": 0,
                            "message": _message(result),
                            "finish_reason": _finish(result),
                        }
                    ],
                    "usage": _usage(result.prompt_eval_count, result.eval_count),
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response: web.StreamResponse | None = None

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            obj = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {encode(obj)}\n\n".encode()

        async def sink(piece: Delta) -> None:
            nonlocal response
            if response is None:
                response = await start_sse(request)
            delta: dict[str, Any] = {"role": "assistant", "content": piece.content}
            if piece.thinking:
                delta["reasoning"] = piece.thinking
            if piece.tool_calls:
                delta["tool_calls"] = _openai_calls(piece.tool_calls)
            await response.write(chunk(delta, None))

        try:
            result = await run_completion(self.engine, req, sink)
        except BusyError as exc:
            raise ApiError(503, str(exc)) from None
        if response is None:
            response = await start_sse(request)
        await response.write(chunk({}, _finish(result)))
        if include_usage:
            usage = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "system_fingerprint": "fp_ollama",
                "choices": [],
                "usage": _usage(result.prompt_eval_count, result.eval_count),
            }
            await response.write(f"data: {encode(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/completions: a templated completion of `prompt`, as Ollama's compatibility layer."""
        body = await _body(request)
        name, spec = completion_model(self.engine, body, "generate")
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "invalid prompt: must be a string")
        num_predict, stops, seed = _sampling(body, body.get("max_tokens"), self.engine.cfg.seed)
        ids, _ = render_chat([{"role": "user", "content": prompt}])
        req = CompletionRequest(
            spec=spec,
            prompt_ids=ids,
            key=f"{spec.key}\x01\x01{prompt}\x010",
            keep_alive_s=self.engine.cfg.keep_alive_s,
            seed=seed,
            num_predict=num_predict,
            stop=stops,
            # NOTE: Ollama's layer sends no `think`, so a thinking model thinks and the text is dropped.
            think=resolve_think(spec, name, None),
            transcript=self.engine.transcript(request.path, body),
        )
        completion_id = f"cmpl-{next(_ids)}"
        created = int(time.time())
        base = {"id": completion_id, "object": "text_completion", "created": created, "model": name}
        base["system_fingerprint"] = "fp_ollama"
        if not body.get("stream"):
            try:
                result = await run_completion(self.engine, req, None)
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            choice = {"text": result.text, "index": 0, "finish_reason": result.done_reason}
            usage = _usage(result.prompt_eval_count, result.eval_count)
            return json_response({**base, "choices": [choice], "usage": usage})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response: web.StreamResponse | None = None

        def event(text: str, finish: str | None) -> bytes:
            obj = {**base, "choices": [{"text": text, "index": 0, "finish_reason": finish}]}
            return f"data: {encode(obj)}\n\n".encode()

        async def sink(piece: Delta) -> None:
            nonlocal response
            if not piece.content:
                return
            if response is None:
                response = await start_sse(request)
            await response.write(event(piece.content, None))

        try:
            result = await run_completion(self.engine, req, sink)
        except BusyError as exc:
            raise ApiError(503, str(exc)) from None
        if response is None:
            response = await start_sse(request)
        await response.write(event("", result.done_reason))
        if include_usage:
            usage_obj = {**base, "choices": [], "usage": _usage(result.prompt_eval_count, result.eval_count)}
            await response.write(f"data: {encode(usage_obj)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/embeddings."""
        body = await _body(request)
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model is required")
        spec = self.engine.resolve(name)
        if spec is None:
            raise ApiError(404, f'model "{name}" not found, try pulling it first')
        raw = body.get("input")
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            texts = list(raw)
        else:
            raise ApiError(400, "invalid input type")
        dimensions = body.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise ApiError(400, "dimensions must be a positive integer")
        engine = self.engine
        try:
            runner, _ = await engine.acquire_runner(spec, engine.cfg.keep_alive_s)
        except BusyError as exc:
            raise ApiError(503, str(exc)) from None
        try:
            try:
                slot, _ = await engine.acquire_slot(runner, [])
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            try:
                tokens = sum(textgen.count_tokens(t) for t in texts)
                await engine.sleep(engine.prompt_eval_s(spec, tokens))
                vectors = await embed_texts(spec, texts)
                engine.account_prompt(spec, tokens, 0, 0)
            finally:
                engine.release_slot(runner, slot, None)
        finally:
            engine.release_runner(runner)
        data = [
            {"object": "embedding", "embedding": textgen.truncate_normalize(v, dimensions), "index": i}
            for i, v in enumerate(vectors)
        ]
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _model_entry(self, name: str, modified_at: str) -> dict[str, Any]:
        created = int(time.mktime(time.strptime(modified_at[:19], "%Y-%m-%dT%H:%M:%S")))
        return {"id": name, "object": "model", "created": created, "owned_by": "library"}

    async def models(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/models."""
        data = [self._model_entry(s.name, s.modified_at) for s in self.engine.installed.values()]
        return json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/models/{model}."""
        name = request.match_info["model"]
        spec = self.engine.resolve(name)
        if spec is None:
            raise ApiError(404, f"model '{name}' not found")
        return json_response(self._model_entry(name, spec.modified_at))


def _sampling(body: dict[str, Any], max_tokens: Any, default_seed: int) -> tuple[int | None, list[str], int]:
    """The length limit, stop strings and seed of a completion: (num_predict, stop, seed).

    Raises:
        ApiError: 400 when `max_tokens` is not an integer.
    """
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
        raise ApiError(400, "max_tokens: must be an integer")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else []
    seed = body.get("seed")
    return (
        max_tokens,
        [s for s in stops if isinstance(s, str)],
        seed if isinstance(seed, int) and seed >= 0 else default_seed,
    )


def _native_calls(raw: Any, index: int) -> list[dict[str, Any]]:
    """OpenAI tool calls of a message (arguments as JSON text) in Ollama's shape (arguments as objects)."""
    if not isinstance(raw, list):
        return []
    calls: list[dict[str, Any]] = []
    for position, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise ApiError(400, f"messages[{index}].tool_calls[{position}]: invalid tool call")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            raise ApiError(
                400, f"messages[{index}].tool_calls[{position}].function.arguments: invalid JSON"
            ) from None
        calls.append({"function": {"index": position, "name": function.get("name"), "arguments": parsed}})
    return calls


def _openai_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama tool calls in OpenAI's shape: `call_` ids, arguments as JSON text."""
    return [
        {
            "id": f"call_{call['id']}",
            "index": call["function"]["index"],
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": json.dumps(call["function"]["arguments"]),
            },
        }
        for call in calls
    ]


def _message(result: CompletionResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.thinking:
        message["reasoning"] = result.thinking_text
    if result.tool_calls:
        message["tool_calls"] = _openai_calls(result.tool_calls)
    return message


def _finish(result: CompletionResult) -> str:
    return "tool_calls" if result.tool_calls else result.done_reason


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
