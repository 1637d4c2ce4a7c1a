"""Ollama-compatible endpoints: /, /api/version, /api/tags, /api/ps, /api/show and inference."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from corral.v1 import router_service_pb2 as rpb

from services.common import errors
from services.router.http import encode
from services.router.http.decode import Fields, read_object
from services.router.http.errors import ApiError, from_domain, json_response
from services.router.http.protocol import RouterCoreProtocol, ShowCapable
from services.router.http.requests import (
    Controls,
    parse_chat,
    parse_embed,
    parse_embeddings,
    parse_generate,
)
from services.router.http.streaming import StreamWriter, stream_core_reply
from services.router.http.tenancy import tenant_of

# The Ollama API version the facade implements (what `/api/version` reports to clients).
OLLAMA_API_VERSION = "0.12.6"


def canonical_model(name: str) -> str:
    """A model name as Ollama compares them: lower case, `:latest` when no tag is given."""
    name = name.strip().lower()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def _not_found_generate(model: str) -> ApiError:
    return ApiError(404, f"model '{model}' not found")


def _not_found_embed(model: str) -> ApiError:
    return ApiError(404, f'model "{model}" not found, try pulling it first')


class OllamaApi:
    """The Ollama endpoints, translating to and from the router core."""

    def __init__(self, core: RouterCoreProtocol) -> None:
        self.core = core
        self._writer = StreamWriter()

    async def root(self, request: web.Request) -> web.StreamResponse:
        """GET/HEAD / — the liveness text Ollama clients look for."""
        return web.Response(text="Ollama is running", content_type="text/plain")

    async def version(self, request: web.Request) -> web.StreamResponse:
        """GET/HEAD /api/version."""
        return json_response({"version": OLLAMA_API_VERSION})

    async def tags(self, request: web.Request) -> web.StreamResponse:
        """GET/HEAD /api/tags — the union of the fleet's installed models."""
        listing = await self.core.list_models(
            rpb.ListModelsRequest(), tenant=tenant_of(request), deadline_s=None
        )
        return json_response({"models": [encode.tags_entry(m) for m in listing.models]})

    async def ps(self, request: web.Request) -> web.StreamResponse:
        """GET /api/ps — models loaded anywhere in the fleet, latest expiry first."""
        listing = await self.core.list_models(
            rpb.ListModelsRequest(loaded_only=True), tenant=tenant_of(request), deadline_s=None
        )
        entries = [e for e in (encode.ps_entry(m) for m in listing.models) if e is not None]
        entries.sort(key=lambda e: str(e["expires_at"]), reverse=True)
        return json_response({"models": entries})

    async def show(self, request: web.Request) -> web.StreamResponse:
        """POST /api/show — asked of a node holding the model, or built from the fleet list."""
        body = await read_object(request, "ShowRequest")
        fields = Fields(body, "ShowRequest")
        model = fields.string("model") or fields.string("name")
        verbose = bool(fields.boolean("verbose"))
        if not model:
            raise ApiError(400, "model is required")
        tenant = tenant_of(request)
        if isinstance(self.core, ShowCapable):
            try:
                show_body = {"model": model, "verbose": verbose}
                return json_response(await self.core.show(show_body, tenant=tenant, deadline_s=None))
            except errors.CorralError as exc:
                raise model_error(exc, ApiError(404, f"model '{model}' not found")) from None
        listing = await self.core.list_models(rpb.ListModelsRequest(), tenant=tenant, deadline_s=None)
        wanted = canonical_model(model)
        for fleet_model in listing.models:
            if canonical_model(fleet_model.name) == wanted:
                return json_response(encode.show_from_fleet(fleet_model))
        raise ApiError(404, f"model '{model}' not found")

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """POST /api/generate — streamed NDJSON unless `stream` is false; an empty prompt loads."""
        body = await read_object(request, "GenerateRequest")
        spec, stream = parse_generate(body)
        model = spec.model
        if not model:
            raise _not_found_generate(model)
        controls = Controls(request)
        tenant = tenant_of(request)
        if not stream or not (spec.prompt or spec.images):
            unary = rpb.GenerateRequest(
                spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
            )
            try:
                resp = await self.core.generate(unary, tenant=tenant, deadline_s=None)
            except errors.CorralError as exc:
                raise model_error(exc, _not_found_generate(model)) from None
            return json_response(
                encode.generate_reply(model, resp), headers=encode.routing_headers(resp.routing)
            )
        streamed = rpb.GenerateStreamRequest(
            spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
        )

        def render(chunk: rpb.GenerateStreamResponse) -> list[dict[str, Any]]:
            if not chunk.done:
                return [encode.generate_chunk(model, chunk, final=False)]
            lines = []
            if chunk.response or chunk.thinking:
                lines.append(encode.generate_chunk(model, chunk, final=False))
            lines.append(encode.generate_chunk(model, chunk, final=True))
            return lines

        return await stream_core_reply(
            request,
            self.core.generate_stream(streamed, tenant=tenant, deadline_s=None),
            render=render,
            writer=self._writer,
            translate=lambda e: model_error(e, _not_found_generate(model)),
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /api/chat — streamed NDJSON unless `stream` is false; no messages loads."""
        body = await read_object(request, "ChatRequest")
        spec, stream = parse_chat(body)
        model = spec.model
        if not model:
            raise ApiError(400, "model is required")
        controls = Controls(request)
        tenant = tenant_of(request)
        if not stream or not spec.messages:
            unary = rpb.ChatRequest(
                spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
            )
            try:
                resp = await self.core.chat(unary, tenant=tenant, deadline_s=None)
            except errors.CorralError as exc:
                raise model_error(exc, _not_found_generate(model)) from None
            return json_response(encode.chat_reply(model, resp), headers=encode.routing_headers(resp.routing))
        streamed = rpb.ChatStreamRequest(
            spec=spec, cache=controls.cache, priority=controls.priority, session_id=controls.session_id
        )

        def render(chunk: rpb.ChatStreamResponse) -> list[dict[str, Any]]:
            if not chunk.done:
                return [encode.chat_chunk(model, chunk, final=False)]
            lines = []
            if chunk.message.content or chunk.message.thinking or chunk.message.tool_calls:
                lines.append(encode.chat_chunk(model, chunk, final=False))
            lines.append(encode.chat_chunk(model, chunk, final=True))
            return lines

        return await stream_core_reply(
            request,
            self.core.chat_stream(streamed, tenant=tenant, deadline_s=None),
            render=render,
            writer=self._writer,
            translate=lambda e: model_error(e, _not_found_generate(model)),
        )

    async def embed(self, request: web.Request) -> web.StreamResponse:
        """POST /api/embed — one normalised vector per input."""
        req = parse_embed(await read_object(request, "EmbedRequest"))
        model = req.model
        if not model:
            raise _not_found_generate(model)
        controls = Controls(request)
        req.priority = controls.priority
        req.cache.CopyFrom(controls.cache)
        if not req.inputs:
            # NOTE: Ollama loads the model for an empty input; Corral leaves loading to prewarm.
            return json_response({"model": model, "embeddings": []})
        try:
            resp = await self.core.embed(req, tenant=tenant_of(request), deadline_s=None)
        except errors.CorralError as exc:
            raise model_error(exc, _not_found_embed(model)) from None
        out: dict[str, Any] = {"model": model, "embeddings": [list(e.values) for e in resp.embeddings]}
        extra = {
            "total_duration": encode.nanoseconds(resp.total_duration),
            "load_duration": encode.nanoseconds(resp.load_duration),
            "prompt_eval_count": int(resp.prompt_eval_count),
        }
        out.update({k: v for k, v in extra.items() if v})
        return json_response(out, headers=encode.routing_headers(resp.routing))

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """POST /api/embeddings (legacy) — `{"embedding": [...]}` for one prompt."""
        req = parse_embeddings(await read_object(request, "EmbeddingRequest"))
        model = req.model
        if not model:
            raise ApiError(400, "model is required")
        controls = Controls(request)
        req.priority = controls.priority
        req.cache.CopyFrom(controls.cache)
        if not req.inputs:
            return json_response({"embedding": []})
        try:
            resp = await self.core.embed(req, tenant=tenant_of(request), deadline_s=None)
        except errors.CorralError as exc:
            raise model_error(exc, _not_found_embed(model)) from None
        vector = list(resp.embeddings[0].values) if resp.embeddings else []
        return json_response({"embedding": vector}, headers=encode.routing_headers(resp.routing))

    async def not_supported(self, request: web.Request) -> web.StreamResponse:
        """Model management goes to the nodes, not through Corral."""
        raise ApiError(
            501, f"{request.path} is not supported by Corral: manage models on the Ollama nodes directly"
        )


def model_error(err: errors.CorralError, not_found: ApiError) -> ApiError:
    """The HTTP error for a failed call about a model: Ollama's not-found text for an unknown model."""
    if isinstance(err, errors.NotFound) or err.reason == "MODEL_NOT_FOUND":
        return not_found
    return from_domain(err)
