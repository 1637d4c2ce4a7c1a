"""One simulated Ollama node: the HTTP server, its listening socket (for the refuse fault) and admin port."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sim.admin import build_admin_app
from sim.api_infer import InferenceApi
from sim.api_models import ModelsApi
from sim.api_openai import OpenAiApi, openai_errors
from sim.api_responses import ResponsesApi
from sim.completion import StreamCut
from sim.config import Faults, NodeConfig
from sim.embedder import EmbedderUnavailableError, check_backend
from sim.engine import BusyError, Engine
from sim.faults import RUNNER_ERROR, FaultState
from sim.wire import ApiError, json_response

logger = logging.getLogger(__name__)

INFERENCE_PATHS = frozenset(
    {
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/embeddings",
    }
)


class SimNode:
    """A simulated Ollama node, usable in-process (`await node.start()`) or from the CLI.

    Args:
        config: the node's models, cost model and initial faults (defaults: the three default models).
        host: address to listen on.
        port: API port; 0 picks a free one (read `node.port` after start).
        admin_port: port of the `/_sim/*` admin API; 0 picks a free one, None disables it.
    """

    def __init__(
        self,
        config: NodeConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int | None = 0,
    ) -> None:
        self.config = config or NodeConfig()
        self.host = host
        self.port = port
        self.admin_port = admin_port
        self.faults = FaultState(self.config.faults, self.config.seed)
        self.engine = Engine(self.config, self.faults)
        # NOTE: the W3C trace context of the latest requests that carried one (tracing tests).
        self.recent_traceparents: deque[dict[str, str]] = deque(maxlen=64)
        self._runner: web.AppRunner | None = None
        self._admin_runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._holder: socket.socket | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self.faults.add_listener(self._on_fault_change)

    # ----------------------------------------------------------------- public API
    @property
    def name(self) -> str:
        """The node's name from its config."""
        return self.config.name

    @property
    def url(self) -> str:
        """Base URL of the Ollama API, e.g. `http://127.0.0.1:11434`."""
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str | None:
        """Base URL of the admin API, if enabled."""
        return None if self.admin_port is None else f"http://{self.host}:{self.admin_port}"

    async def start(self) -> None:
        """Start serving (or only hold the port when started with the refuse fault)."""
        for spec in self.config.models:
            check_backend(spec)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        logger.info("node %s listening on %s:%s", self.name, self.host, self.port)

    async def _start(self) -> None:
        self.engine = Engine(self.config, self.faults)
        app = self._build_app()
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        self._holder = self._bind(self.port)
        self.port = self._holder.getsockname()[1]
        if not self.faults.current.refuse:
            await self._listen()
        if self.admin_port is not None:
            self._admin_runner = web.AppRunner(build_admin_app(self), access_log=None)
            await self._admin_runner.setup()
            admin_sock = self._bind(self.admin_port)
            self.admin_port = admin_sock.getsockname()[1]
            await web.SockSite(self._admin_runner, admin_sock).start()

    async def stop(self) -> None:
        """Stop serving; in-flight requests are cut, loaded models forgotten."""
        self._close_listener(abort_connections=True)
        if self._holder is not None:
            self._holder.close()
            self._holder = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        self.engine.close()

    async def restart(self) -> None:
        """Stop and start again on the same ports: models cold, stats reset, faults back to the config's."""
        await self.stop()
        self.faults.clear()
        self.faults.update(**self.config.faults.model_dump())
        await self.start()

    async def __aenter__(self) -> SimNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def set_fault(self, **changes: Any) -> Faults:
        """Change faults at run time, e.g. `set_fault(refuse=True)`, `set_fault(slow_factor=3)`.

        Raises:
            ValueError: naming the fault when a name or value is invalid.
        """
        return self.faults.update(**changes)

    def clear_faults(self) -> Faults:
        """Back to a healthy node."""
        return self.faults.clear()

    def stats(self) -> dict[str, Any]:
        """Counters and current load, as `/_sim/stats` returns them."""
        engine = self.engine
        s = engine.stats
        return {
            "name": self.name,
            "port": self.port,
            "requests_total": s.requests_total,
            "requests_by_route": dict(s.requests_by_route),
            "recent_traceparents": list(self.recent_traceparents),
            "busy_rejections": s.busy_rejections,
            "faults_injected": s.faults_injected,
            "loads": s.loads,
            "unloads": s.unloads,
            "evictions": s.evictions,
            "cancelled": s.cancelled,
            "in_flight": engine.in_flight,
            "queued": engine.queued,
            "loaded_models": sorted(r.spec.name for r in engine.runners.values()),
            "prompt_tokens_evaluated": dict(s.prompt_tokens_evaluated),
            "prompt_tokens_cached": dict(s.prompt_tokens_cached),
            "eval_tokens": dict(s.eval_tokens),
            "faults": self.faults.current.model_dump(),
        }

    def transcripts(self) -> list[dict[str, Any]]:
        """The latest completions, oldest first, as `GET /_sim/requests` lists them.

        Each: `seq`, `path`, `request` (the body received), `sent` (the text written to the client),
        `sent_tokens`, `outcome` (`running`, `done`, `cut`, `cancelled`, `busy`, `failed`).
        """
        return [t.as_json() for t in self.engine.transcripts]

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0) -> None:
        """Wait until `predicate(node.stats())` holds, woken by scheduler changes (no polling).

        Raises:
            TimeoutError: when it does not hold within `timeout_s`.
        """
        await self.engine.wait_for(lambda: predicate(self.stats()), timeout_s)

    async def load_model(self, name: str, keep_alive_s: float | None = None) -> None:
        """Load a model as an empty generate would (for tests that need a warm node).

        Raises:
            KeyError: the model is not installed.
        """
        spec = self.engine.resolve(name)
        if spec is None:
            raise KeyError(f"model {name!r} is not installed on {self.name}")
        ka = self.config.keep_alive_s if keep_alive_s is None else keep_alive_s
        runner, _ = await self.engine.acquire_runner(spec, ka)
        self.engine.release_runner(runner)

    # ----------------------------------------------------------------- sockets
    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        sock.setblocking(False)
        return sock

    async def _listen(self) -> None:
        assert self._runner is not None and self._runner.server is not None
        if self._holder is None:
            self._holder = self._bind(self.port)
        sock, self._holder = self._holder, None
        sock.listen(1024)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._runner.server, sock=sock)

    def _close_listener(self, abort_connections: bool) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if abort_connections and self._runner is not None and self._runner.server is not None:
            for handler in self._runner.server.connections:
                transport = handler.transport
                if transport is not None:
                    transport.abort()

    def _on_fault_change(self, old: Faults, new: Faults) -> None:
        if old.refuse == new.refuse or self._runner is None:
            return
        if new.refuse:
            # NOTE: a bound socket that does not listen makes connect() fail with ECONNREFUSED and
            # keeps the port ours until the fault is cleared.
            self._close_listener(abort_connections=True)
            self._holder = self._bind(self.port)
        else:
            # NOTE: listen() now, so that a connect right after the fault is cleared is queued in the
            # backlog and accepted once the server is attached, instead of refused.
            if self._holder is not None:
                self._holder.listen(1024)
            self._serve_task = asyncio.get_running_loop().create_task(self._listen())

    # ----------------------------------------------------------------- application
    def _build_app(self) -> web.Application:
        infer = InferenceApi(self.engine)
        models = ModelsApi(self.engine)
        openai = OpenAiApi(self.engine)
        responses = ResponsesApi(self.engine)
        app = web.Application(middlewares=[self._middleware()], client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/", models.root)
        r.add_get("/api/version", models.version)
        r.add_get("/api/tags", models.tags)
        r.add_get("/api/ps", models.ps, allow_head=False)
        r.add_post("/api/show", models.show)
        r.add_post("/api/generate", infer.generate)
        r.add_post("/api/chat", infer.chat)
        r.add_post("/api/embed", infer.embed)
        r.add_post("/api/embeddings", infer.embeddings)
        r.add_post("/api/pull", models.pull)
        r.add_delete("/api/delete", models.delete)
        r.add_post("/api/copy", models.copy)
        r.add_post("/v1/chat/completions", openai_errors(openai.chat_completions))
        r.add_post("/v1/completions", openai_errors(openai.completions))
        r.add_post("/v1/responses", openai_errors(responses.create))
        r.add_post("/v1/embeddings", openai_errors(openai.embeddings))
        r.add_get("/v1/models", openai_errors(openai.models))
        r.add_get("/v1/models/{model:.+}", openai_errors(openai.model))
        return app

    def _middleware(self) -> Any:
        faults = self.faults

        @web.middleware
        async def middleware(
            request: web.Request, handler: Callable[[web.Request], Any]
        ) -> web.StreamResponse:
            engine = self.engine
            stats = engine.stats
            path = request.path
            stats.requests_total += 1
            stats.requests_by_route[path] = stats.requests_by_route.get(path, 0) + 1
            traceparent = request.headers.get("traceparent")
            if traceparent is not None:
                self.recent_traceparents.append({"path": path, "traceparent": traceparent})
            try:
                if faults.any_request_fault:
                    early = await self._apply_faults(request, path)
                    if early is not None:
                        return early
                response: web.StreamResponse = await handler(request)
            except ApiError as exc:
                response = exc.response()
            except BusyError as exc:
                response = json_response({"error": str(exc)}, status=503)
            except web.HTTPNotFound:
                response = web.Response(status=404, text="404 page not found")
            except web.HTTPMethodNotAllowed:
                response = web.Response(status=405, text="405 method not allowed")
            except StreamCut:
                stats.faults_injected += 1
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError() from None
            except (asyncio.CancelledError, ConnectionResetError):
                # NOTE: the client went away before the answer ended (aiohttp cancels the handler
                # of a closed connection, or a write finds it closed), or the node is stopping.
                stats.cancelled += 1
                raise
            except EmbedderUnavailableError as exc:
                response = json_response({"error": str(exc)}, status=500)
            finally:
                engine.poke()
            if faults.current.malformed and isinstance(response, web.Response) and response.body:
                body = bytes(response.body)  # type: ignore[arg-type]
                if body.startswith(b"{"):
                    stats.faults_injected += 1
                    response.body = body[: max(1, len(body) // 2)]
            return response

        return middleware

    async def _apply_faults(self, request: web.Request, path: str) -> web.StreamResponse | None:
        current = self.faults.current
        stats = self.engine.stats
        if current.extra_latency_ms > 0:
            await asyncio.sleep(current.extra_latency_ms / 1000)
        if current.hang:
            stats.faults_injected += 1
            # NOTE: never answers; the client's disconnect (or the node's stop) cancels this.
            await asyncio.get_running_loop().create_future()
        if path in INFERENCE_PATHS:
            if self.faults.take_busy():
                stats.faults_injected += 1
                stats.busy_rejections += 1
                return _error(path, 503, BusyError.MESSAGE)
            if self.faults.take_error():
                stats.faults_injected += 1
                return _error(path, 500, RUNNER_ERROR)
        return None


def _error(path: str, status: int, message: str) -> web.Response:
    if path.startswith("/v1/"):
        body = {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
        return json_response(body, status=status)
    return json_response({"error": message}, status=status)
