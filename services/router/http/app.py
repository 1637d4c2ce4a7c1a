"""The Ollama- and OpenAI-compatible HTTP API, served inside the router process over its core."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from opentelemetry import propagate, trace

from services.common import errors, tls
from services.common.auth import Authenticator
from services.common.auth_http import auth_middleware
from services.router.config import RouterConfig
from services.router.http.errors import ApiError, from_domain, ollama_error, openai_error
from services.router.http.manage_api import ManageApi
from services.router.http.ollama_api import OllamaApi
from services.router.http.openai_api import OpenAiApi
from services.router.http.protocol import RouterCoreProtocol
from services.router.model_admin import ModelAdmin

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer("corral.router.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)


def _error_reply(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    if request.path.startswith("/v1/"):
        return openai_error(status, message, headers)
    return ollama_error(status, message, headers)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers every failure in the API's own error shape; only a bug is a 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error_reply(request, exc.status, exc.message, exc.headers)
    except errors.CorralError as exc:
        api = from_domain(exc)
        return _error_reply(request, api.status, api.message, api.headers)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY_BYTES]
        return _error_reply(request, 413, f"request body too large (limit {limit} bytes)")
    except web.HTTPMethodNotAllowed:
        if request.path.startswith("/v1/"):
            return openai_error(405, "405 method not allowed")
        return web.Response(status=405, text="405 method not allowed")
    except web.HTTPNotFound:
        if request.path.startswith("/v1/"):
            return openai_error(404, "404 page not found")
        return web.Response(status=404, text="404 page not found")
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("unexpected error serving %s %s", request.method, request.path)
        return _error_reply(request, 500, "internal error")


@web.middleware
async def _trace_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One server span per request, continuing the caller's W3C trace; the core's spans nest in it."""
    started = time.perf_counter()
    parent = propagate.extract(dict(request.headers))
    route = request.match_info.route.resource
    name = f"{request.method} {route.canonical if route is not None else request.path}"
    with _tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER) as span:
        span.set_attribute("http.request.method", request.method)
        span.set_attribute("url.path", request.path)
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(trace.StatusCode.ERROR)
    logger.debug(
        "http %s %s -> %d in %.1f ms",
        request.method,
        request.path,
        response.status,
        (time.perf_counter() - started) * 1000,
    )
    return response


def build_http_app(
    core: RouterCoreProtocol, cfg: RouterConfig, auth: Authenticator | None = None
) -> web.Application:
    """Builds the aiohttp application of the drop-in APIs.

    Args:
        core: The router core (or any object with the methods of RouterCoreProtocol).
        cfg: The router configuration; `max_message_bytes` bounds request bodies (413 beyond).
        auth: API keys (401 without a valid bearer key, 429 over a key's limits); None serves everyone.
    """
    auth_layer = [auth_middleware(auth, _error_reply)] if auth is not None else []
    app = web.Application(
        client_max_size=cfg.max_message_bytes,
        middlewares=[_trace_middleware, *auth_layer, _errors_middleware],
    )
    app[MAX_BODY_BYTES] = cfg.max_message_bytes
    ollama = OllamaApi(core)
    openai = OpenAiApi(core)
    app.router.add_get("/", ollama.root)
    app.router.add_get("/api/version", ollama.version)
    app.router.add_get("/api/tags", ollama.tags)
    app.router.add_get("/api/ps", ollama.ps)
    app.router.add_post("/api/show", ollama.show)
    app.router.add_post("/api/generate", ollama.generate)
    app.router.add_post("/api/chat", ollama.chat)
    app.router.add_post("/api/embed", ollama.embed)
    app.router.add_post("/api/embeddings", ollama.embeddings)
    # NOTE: model management needs the core's ModelAdmin (the router's; a fake core may have none).
    model_admin = getattr(core, "model_admin", None)
    if isinstance(model_admin, ModelAdmin):
        manage = ManageApi(model_admin)
        app.router.add_post("/api/pull", manage.pull)
        app.router.add_delete("/api/delete", manage.delete)
        app.router.add_post("/api/copy", manage.copy)
        app.router.add_post("/api/create", manage.create)
        app.router.add_post("/api/push", manage.push)
    else:
        for path in ("/api/pull", "/api/push", "/api/create", "/api/copy"):
            app.router.add_post(path, ollama.not_supported)
        app.router.add_delete("/api/delete", ollama.not_supported)
    app.router.add_post("/v1/chat/completions", openai.chat_completions)
    app.router.add_post("/v1/completions", openai.completions)
    app.router.add_post("/v1/responses", openai.responses)
    app.router.add_post("/v1/embeddings", openai.embeddings)
    app.router.add_get("/v1/models", openai.models)
    app.router.add_get("/v1/models/{model:.+}", openai.model)
    return app


async def start_http_server(
    core: RouterCoreProtocol, cfg: RouterConfig, auth: Authenticator | None = None, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """Starts the HTTP API on `cfg.host:cfg.http_port` (0 picks a free port), over TLS when `cfg.tls` is set;
    `reuse_port` shares the port with the router's other workers (SO_REUSEPORT).

    Returns:
        The runner (call `await runner.cleanup()` on shutdown, after the gRPC drain) and the bound port.
    """
    # NOTE: handler_cancellation stops the node request when an HTTP client disconnects mid-call.
    runner = web.AppRunner(
        build_http_app(core, cfg, auth),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=cfg.grace_s,
    )
    await runner.setup()
    ssl_context = tls.server_ssl_context(cfg.tls, "router.tls") if cfg.tls is not None else None
    site = web.TCPSite(runner, cfg.host, cfg.http_port, ssl_context=ssl_context, reuse_port=reuse_port)
    await site.start()
    addresses = runner.addresses
    port = int(addresses[0][1]) if addresses else cfg.http_port
    return runner, port
