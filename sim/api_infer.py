"""Ollama inference endpoints: /api/generate, /api/chat, /api/embed and the legacy /api/embeddings."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from sim import textgen
from sim.completion import CompletionRequest, CompletionResult, Delta, run_completion
from sim.config import ModelSpec
from sim.embedder import embed_texts
from sim.engine import BusyError, Engine
from sim.wire import (
    ApiError,
    Fields,
    Options,
    encode,
    json_response,
    metrics,
    read_body,
    rfc3339,
    send_line,
    start_ndjson,
)

_SYSTEM = textgen.marker_id("<|system|>")
_USER = textgen.marker_id("<|user|>")
_ASSISTANT = textgen.marker_id("<|assistant|>")
_ROLES = ("system", "user", "assistant", "tool")
_ROLE_IDS = {role: textgen.marker_id(f"<|{role}|>") for role in _ROLES}


def render_chat(messages: list[dict[str, Any]]) -> tuple[list[int], str]:
    """Template a conversation into prompt token ids and a determinism key.

    The rendering of a conversation is a prefix of the rendering of its continuation, so that the
    per-slot KV cache can be reused turn after turn.
    """
    ids: list[int] = []
    key_parts: list[str] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content", "")
        if not isinstance(role, str) or role.lower() not in _ROLE_IDS:
            raise ApiError(400, f"messages[{index}].role: invalid role {role!r}")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{index}].content: must be a string")
        role = role.lower()
        calls = message.get("tool_calls")
        if calls:
            # NOTE: the calls an assistant made are part of the conversation the model sees.
            content += json.dumps(calls, sort_keys=True, separators=(",", ":"))
        ids.append(_ROLE_IDS[role])
        ids.extend(textgen.token_ids(content))
        key_parts.append(f"{role}\x02{content}")
    ids.append(_ASSISTANT)
    return ids, "\x03".join(key_parts)


def parse_format(fmt: Any) -> str | dict[str, Any] | None:
    """A `format` value: None, "json" or a JSON Schema object; 500 for an invalid one, as Ollama."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return "json"
    if isinstance(fmt, dict):
        return fmt
    raise ApiError(500, f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema object')


THINK_LEVELS = ("low", "medium", "high", "max")


def completion_model(engine: Engine, body: dict[str, Any], action: str) -> tuple[str, ModelSpec]:
    """The name and installed model an OpenAI-compatible request body asks to complete with.

    Raises:
        ApiError: 400 without a model name or when the model cannot complete (`action` names the
            endpoint in Ollama's message, "chat" or "generate"); 404 when it is not installed.
    """
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model is required")
    spec = engine.resolve(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    if "completion" not in spec.capabilities:
        raise ApiError(400, f'"{name}" does not support {action}')
    return name, spec


def resolve_think(spec: ModelSpec, name: str, think: Any) -> bool:
    """Whether the model thinks: by default when it can; 400 when asked of a model that cannot.

    True and the level strings turn thinking on (levels change nothing else for a qwen3-like model);
    false turns it off, and is accepted by any model.
    """
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        raise ApiError(
            400, f'invalid think value: "{think}" (must be "max", "high", "medium", "low", true, or false)'
        )
    capable = "thinking" in spec.capabilities
    if think not in (None, False) and not capable:
        raise ApiError(400, f'"{name}" does not support thinking')
    return capable and think is not False


def check_tools(spec: ModelSpec, tools: list[dict[str, Any]]) -> None:
    """400 when a request offers tools to a model that cannot call them, as Ollama."""
    if tools and "tools" not in spec.capabilities:
        raise ApiError(400, f"registry.ollama.ai/library/{spec.name} does not support tools")


def tool_prompt(messages: list[dict[str, Any]]) -> str | None:
    """The user turn a tool call may answer; None after a tool result (the model answers in text)."""
    last = messages[-1] if messages else {}
    if str(last.get("role", "")).lower() != "user":
        return None
    content = last.get("content")
    return content if isinstance(content, str) else ""


class InferenceApi:
    """Handlers bound to one node's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _model(self, name: str, empty_status: int, embed: bool = False) -> ModelSpec:
        if not name:
            raise ApiError(empty_status, "model '' not found" if empty_status == 404 else "model is required")
        spec = self.engine.resolve(name)
        if spec is None:
            if embed:
                raise ApiError(404, f'model "{name}" not found, try pulling it first')
            raise ApiError(404, f"model '{name}' not found")
        return spec

    def _seed(self, options: Options) -> int:
        seed = options.integer("seed")
        return self.engine.cfg.seed if seed is None or seed < 0 else seed

    async def _load_or_unload(
        self, spec: ModelSpec, name: str, keep_alive_s: float, shape: dict[str, Any]
    ) -> web.Response:
        if keep_alive_s == 0:
            self.engine.request_unload(spec)
            reason = "unload"
        else:
            try:
                runner, _ = await self.engine.acquire_runner(spec, keep_alive_s)
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            self.engine.release_runner(runner)
            reason = "load"
        return json_response(
            {"model": name, "created_at": rfc3339(), **shape, "done": True, "done_reason": reason}
        )

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """POST /api/generate."""
        f = Fields(await read_body(request, "GenerateRequest"), "GenerateRequest")
        name = f.string("model")
        spec = self._model(name, 404)
        if "completion" not in spec.capabilities:
            raise ApiError(400, f'"{name}" does not support generate')
        think = resolve_think(spec, name, f.body.get("think"))
        prompt, system, raw = f.string("prompt"), f.string("system"), f.boolean("raw", False)
        context = f.int_list("context")
        if raw and (system or f.string("template") or context):
            raise ApiError(400, "raw mode does not support template, system, or context")
        options = Options(f.body.get("options"))
        keep_alive_s = f.keep_alive(self.engine.cfg.keep_alive_s)
        stream = f.boolean("stream", True)
        fmt = parse_format(f.body.get("format"))
        if not prompt and not f.body.get("images"):
            return await self._load_or_unload(spec, name, keep_alive_s, {"response": ""})
        if raw:
            ids = textgen.token_ids(prompt)
        else:
            ids = list(context)
            if system:
                ids.append(_SYSTEM)
                ids.extend(textgen.token_ids(system))
            ids.append(_USER)
            ids.extend(textgen.token_ids(prompt))
            ids.append(_ASSISTANT)
        req = CompletionRequest(
            spec=spec,
            prompt_ids=ids,
            key=f"{spec.key}\x01{system}\x01{prompt}\x01{len(context)}",
            keep_alive_s=keep_alive_s,
            seed=self._seed(options),
            num_predict=options.integer("num_predict"),
            stop=options.stop,
            json_format=fmt,
            think=think,
            transcript=self.engine.transcript(request.path, f.body),
        )

        def final(result: CompletionResult, text: str, whole: bool = False) -> dict[str, Any]:
            body: dict[str, Any] = {"model": name, "created_at": rfc3339(), "response": text}
            if whole and result.thinking:
                body["thinking"] = result.thinking_text
            body.update({"done": True, "done_reason": result.done_reason})
            if not raw:
                body["context"] = result.context
            body.update(_metrics(result))
            return body

        if not stream:
            try:
                result = await run_completion(self.engine, req, None)
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            return json_response(final(result, result.text, True))

        def chunk(delta: Delta) -> dict[str, Any]:
            if delta.thinking:
                return {"response": "", "thinking": delta.thinking}
            return {"response": delta.content}

        return await self._stream(request, req, chunk, name, final, "")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /api/chat."""
        f = Fields(await read_body(request, "ChatRequest"), "ChatRequest")
        name = f.string("model")
        spec = self._model(name, 400)
        if "completion" not in spec.capabilities:
            raise ApiError(400, f'"{name}" does not support chat')
        think = resolve_think(spec, name, f.body.get("think"))
        messages = f.obj_list("messages")
        tools = f.obj_list("tools")
        check_tools(spec, tools)
        options = Options(f.body.get("options"))
        keep_alive_s = f.keep_alive(self.engine.cfg.keep_alive_s)
        stream = f.boolean("stream", True)
        fmt = parse_format(f.body.get("format"))
        empty_message = {"role": "assistant", "content": ""}
        if not messages:
            return await self._load_or_unload(spec, name, keep_alive_s, {"message": empty_message})
        ids, key = render_chat(messages)
        req = CompletionRequest(
            spec=spec,
            prompt_ids=ids,
            key=f"{spec.key}\x01{key}",
            keep_alive_s=keep_alive_s,
            seed=self._seed(options),
            num_predict=options.integer("num_predict"),
            stop=options.stop,
            json_format=fmt,
            think=think,
            tools=tools,
            tool_prompt=tool_prompt(messages),
            transcript=self.engine.transcript(request.path, f.body),
        )

        def final(result: CompletionResult, text: str, whole: bool = False) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if whole:
                # NOTE: the whole answer in one object (stream false); a stream's last line is empty.
                if result.thinking:
                    message["thinking"] = result.thinking_text
                if result.tool_calls:
                    message["tool_calls"] = result.tool_calls
            body: dict[str, Any] = {
                "model": name,
                "created_at": rfc3339(),
                "message": message,
                "done": True,
                "done_reason": result.done_reason,
            }
            body.update(_metrics(result))
            return body

        if not stream:
            try:
                result = await run_completion(self.engine, req, None)
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            return json_response(final(result, result.text, True))

        def chunk(delta: Delta) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": delta.content}
            if delta.thinking:
                message["thinking"] = delta.thinking
            if delta.tool_calls:
                message["tool_calls"] = delta.tool_calls
            return {"message": message}

        return await self._stream(request, req, chunk, name, final, "")

    async def _stream(
        self,
        request: web.Request,
        req: CompletionRequest,
        chunk: Any,
        name: str,
        final: Any,
        final_text: str,
    ) -> web.StreamResponse:
        state: dict[str, web.StreamResponse] = {}
        malformed = self.engine.faults.current.malformed

        async def sink(piece: Delta) -> None:
            response = state.get("r")
            if response is None:
                response = state["r"] = await start_ndjson(request)
            line = {"model": name, "created_at": rfc3339(), **chunk(piece), "done": False}
            if malformed:
                await response.write(encode(line)[:-7].encode() + b"\n")
                raise _Malformed()
            await send_line(response, line)

        try:
            result = await run_completion(self.engine, req, sink)
        except BusyError as exc:
            # NOTE: the 503 comes before any byte is written (the queue is checked before the first
            # token), so it keeps its status, as in Ollama's streamResponse.
            raise ApiError(503, str(exc)) from None
        except _Malformed:
            return state["r"]
        response = state.get("r") or await start_ndjson(request)
        await send_line(response, final(result, final_text))
        await response.write_eof()
        return response

    async def embed(self, request: web.Request) -> web.Response:
        """POST /api/embed."""
        f = Fields(await read_body(request, "EmbedRequest"), "EmbedRequest")
        name = f.string("model")
        spec = self._model(name, 404, embed=True)
        raw_input = f.body.get("input")
        if raw_input is None or raw_input == "" or raw_input == []:
            texts: list[str] = []
        elif isinstance(raw_input, str):
            texts = [raw_input]
        elif isinstance(raw_input, list) and all(isinstance(t, str) for t in raw_input):
            texts = list(raw_input)
        else:
            raise ApiError(400, "invalid input type")
        truncate = f.boolean("truncate", True)
        dimensions = f.body.get("dimensions")
        if dimensions is not None and (
            not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
        ):
            raise ApiError(400, "dimensions must be a positive integer")
        Options(f.body.get("options"))
        keep_alive_s = f.keep_alive(self.engine.cfg.keep_alive_s)
        if not texts:
            return await self._embed_load(spec, name, keep_alive_s, {"embeddings": []})
        counts = [textgen.count_tokens(t) for t in texts]
        limit = min(spec.context_length, self.engine.cfg.num_ctx)
        if not truncate and any(c > limit for c in counts):
            raise ApiError(400, "the input length exceeds the context length")
        vectors, load_ns, total_ns, tokens = await self._run_embedding(spec, texts, counts, keep_alive_s)
        embeddings = [textgen.truncate_normalize(v, dimensions) for v in vectors]
        body: dict[str, Any] = {"model": name, "embeddings": embeddings}
        body.update({"total_duration": total_ns, "load_duration": load_ns, "prompt_eval_count": tokens})
        return json_response(body)

    async def embeddings(self, request: web.Request) -> web.Response:
        """POST /api/embeddings (legacy: one prompt, vector not normalised, no metrics)."""
        f = Fields(await read_body(request, "EmbeddingRequest"), "EmbeddingRequest")
        name = f.string("model")
        spec = self._model(name, 400, embed=True)
        prompt = f.string("prompt")
        Options(f.body.get("options"))
        keep_alive_s = f.keep_alive(self.engine.cfg.keep_alive_s)
        if not prompt:
            return await self._embed_load(spec, name, keep_alive_s, {"embedding": []}, with_model=False)
        count = textgen.count_tokens(prompt)
        vectors, _, _, _ = await self._run_embedding(spec, [prompt], [count], keep_alive_s)
        # NOTE: the legacy endpoint returns the raw pooled vector; a deterministic norm stands for it.
        scale = 1.0 + math.sqrt(count)
        return json_response(
            {"embedding": [round(x * scale, 8) for x in textgen.truncate_normalize(vectors[0], None)]}
        )

    async def _embed_load(
        self, spec: ModelSpec, name: str, keep_alive_s: float, shape: dict[str, Any], with_model: bool = True
    ) -> web.Response:
        if keep_alive_s == 0:
            self.engine.request_unload(spec)
        else:
            try:
                runner, _ = await self.engine.acquire_runner(spec, keep_alive_s)
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            self.engine.release_runner(runner)
        return json_response({"model": name, **shape} if with_model else shape)

    async def _run_embedding(
        self, spec: ModelSpec, texts: list[str], counts: list[int], keep_alive_s: float
    ) -> tuple[list[Any], int, int, int]:
        engine = self.engine
        try:
            runner, load_ns = await engine.acquire_runner(spec, keep_alive_s)
        except BusyError as exc:
            raise ApiError(503, str(exc)) from None
        try:
            try:
                slot, waited_s = await engine.acquire_slot(runner, [])
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            try:
                tokens = sum(counts)
                prompt_s = engine.prompt_eval_s(spec, tokens)
                await engine.sleep(prompt_s)
                vectors = await embed_texts(spec, texts)
                engine.account_prompt(spec, tokens, 0, 0)
            finally:
                engine.release_slot(runner, slot, None)
        finally:
            engine.release_runner(runner)
        total_ns = load_ns + int((waited_s + prompt_s) * 1e9)
        return vectors, load_ns, total_ns, tokens


class _Malformed(Exception):
    """A malformed line was sent; the stream ends there."""


def _metrics(result: CompletionResult) -> dict[str, int]:
    return metrics(
        result.total_ns,
        result.load_ns,
        result.prompt_eval_count,
        result.prompt_eval_ns,
        result.eval_count,
        result.eval_ns,
    )
