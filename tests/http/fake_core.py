"""A small in-test router core: deterministic answers, recorded requests, injectable errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from corral.v1 import common_pb2 as cpb
from corral.v1 import router_service_pb2 as rpb
from google.protobuf import duration_pb2, timestamp_pb2

from services.common import errors
from services.common.auth import Authenticator
from services.router.config import RouterConfig
from services.router.http.app import start_http_server
from services.router.model_admin import ModelAdmin
from services.router.scores import NodeView, ScoreBoard
from services.router.transport import NodeTransport

MODELS = ("llama3.2:1b", "nomic-embed-text:latest")


def _dur(ns: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ns // 10**9, nanos=ns % 10**9)


def _stats() -> cpb.GenerationStats:
    return cpb.GenerationStats(
        total_duration=_dur(1_500_000_000),
        load_duration=_dur(2_000_000),
        prompt_eval_count=7,
        prompt_eval_duration=_dur(30_000_000),
        eval_count=3,
        eval_duration=_dur(90_000_000),
    )


def _routing() -> cpb.RoutingInfo:
    return cpb.RoutingInfo(node_id="node-1", attempts=1, cache_outcome=cpb.CACHE_OUTCOME_MISS)


def _now() -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=1_726_175_849, nanos=110_811_000)


class FakeCore:
    """Answers "Hello from Corral" in three chunks; knows MODELS; errors are injected by attribute."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.fail_before: errors.CorralError | None = None
        self.fail_after_chunks: int | None = None
        self.fail_error: errors.CorralError = errors.Unavailable("node-1 went away")
        self.pieces = ["Hello", " from", " Corral"]

    def _check(self, model: str) -> None:
        if self.fail_before is not None:
            raise self.fail_before
        if model not in MODELS and f"{model}:latest" not in MODELS:
            raise errors.NotFound(f"model {model} is installed on no node")

    async def generate(
        self, request: rpb.GenerateRequest, *, tenant: str, deadline_s: float | None = None
    ) -> rpb.GenerateResponse:
        self.requests.append((request, tenant))
        self._check(request.spec.model)
        if not request.spec.prompt:
            reason = (
                "unload"
                if request.spec.HasField("keep_alive") and request.spec.keep_alive.seconds == 0
                else "load"
            )
            return rpb.GenerateResponse(model=request.spec.model, done_reason=reason, created_at=_now())
        return rpb.GenerateResponse(
            model=request.spec.model,
            response="".join(self.pieces),
            done_reason="stop",
            stats=_stats(),
            routing=_routing(),
            created_at=_now(),
        )

    async def generate_stream(
        self, request: rpb.GenerateStreamRequest, *, tenant: str, deadline_s: float | None = None
    ) -> AsyncIterator[rpb.GenerateStreamResponse]:
        self.requests.append((request, tenant))
        self._check(request.spec.model)
        for index, piece in enumerate(self.pieces):
            if self.fail_after_chunks is not None and index == self.fail_after_chunks:
                raise self.fail_error
            yield rpb.GenerateStreamResponse(model=request.spec.model, response=piece, created_at=_now())
        yield rpb.GenerateStreamResponse(
            model=request.spec.model, done=True, done_reason="stop", stats=_stats(), routing=_routing()
        )

    async def chat(
        self, request: rpb.ChatRequest, *, tenant: str, deadline_s: float | None = None
    ) -> rpb.ChatResponse:
        self.requests.append((request, tenant))
        self._check(request.spec.model)
        if not request.spec.messages:
            return rpb.ChatResponse(
                model=request.spec.model, message=cpb.ChatMessage(role="assistant"), done_reason="load"
            )
        message = cpb.ChatMessage(role="assistant", content="".join(self.pieces))
        if request.spec.tools:
            call = cpb.ToolCall(id="call0001", index=0, name=request.spec.tools[0].function.name)
            call.arguments.update({"city": "Tokyo", "days": 3})
            message.tool_calls.append(call)
        return rpb.ChatResponse(
            model=request.spec.model,
            message=message,
            done_reason="stop",
            stats=_stats(),
            routing=_routing(),
            created_at=_now(),
        )

    async def chat_stream(
        self, request: rpb.ChatStreamRequest, *, tenant: str, deadline_s: float | None = None
    ) -> AsyncIterator[rpb.ChatStreamResponse]:
        self.requests.append((request, tenant))
        self._check(request.spec.model)
        for index, piece in enumerate(self.pieces):
            if self.fail_after_chunks is not None and index == self.fail_after_chunks:
                raise self.fail_error
            yield rpb.ChatStreamResponse(
                model=request.spec.model, message=cpb.ChatMessage(role="assistant", content=piece)
            )
        yield rpb.ChatStreamResponse(
            model=request.spec.model,
            message=cpb.ChatMessage(role="assistant"),
            done=True,
            done_reason="stop",
            stats=_stats(),
            routing=_routing(),
        )

    async def embed(
        self, request: rpb.EmbedRequest, *, tenant: str, deadline_s: float | None = None
    ) -> rpb.EmbedResponse:
        self.requests.append((request, tenant))
        self._check(request.model)
        size = request.dimensions or 4
        vectors = [rpb.Embedding(values=[0.5] * size) for _ in request.inputs]
        return rpb.EmbedResponse(
            model=request.model,
            embeddings=vectors,
            prompt_eval_count=2 * len(request.inputs),
            total_duration=_dur(5_000_000),
            routing=_routing(),
        )

    async def list_models(
        self, request: rpb.ListModelsRequest, *, tenant: str, deadline_s: float | None = None
    ) -> rpb.ListModelsResponse:
        self.requests.append((request, tenant))
        if self.fail_before is not None:
            raise self.fail_before
        llama = rpb.FleetModel(
            name="llama3.2:1b",
            details=rpb.ModelDetails(
                digest="baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878",
                size_bytes=1_321_098_329,
                format="gguf",
                family="llama",
                parameter_size="1.2B",
                quantization_level="Q8_0",
                capabilities=["completion", "tools"],
                modified_at=timestamp_pb2.Timestamp(seconds=1_726_000_000),
            ),
            placements=[
                rpb.ModelPlacement(
                    node_id="node-1",
                    loaded=True,
                    expires_at=timestamp_pb2.Timestamp(seconds=1_900_000_000),
                    size_loaded_bytes=1_500_000_000,
                    context_length=4096,
                ),
                rpb.ModelPlacement(node_id="node-2"),
            ],
        )
        embed = rpb.FleetModel(
            name="nomic-embed-text:latest",
            details=rpb.ModelDetails(
                digest="0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
                size_bytes=274_302_450,
                family="nomic-bert",
                parameter_size="137M",
                quantization_level="F16",
                capabilities=["embedding"],
            ),
            placements=[rpb.ModelPlacement(node_id="node-1")],
        )
        models = [llama, embed]
        if request.loaded_only:
            models = [m for m in models if any(p.loaded for p in m.placements)]
        return rpb.ListModelsResponse(models=models)


@asynccontextmanager
async def model_admin_server(
    nodes: Iterable[NodeView], auth: Authenticator | None = None, *, pull_read_timeout_s: float = 10
) -> AsyncIterator[str]:
    """The router's HTTP API on a free port, its model management fanned out to `nodes` (a real
    ModelAdmin and NodeTransport; the rest is FakeCore's); yields the API's base URL."""
    board = ScoreBoard()
    board.use_static(nodes)
    transport = NodeTransport()
    await transport.start()
    core = FakeCore()
    core.model_admin = ModelAdmin(board, transport, parallel=2, pull_read_timeout_s=pull_read_timeout_s)  # type: ignore[attr-defined]
    try:
        runner, port = await start_http_server(core, RouterConfig(http_port=0), auth)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()
    finally:
        await transport.close()
