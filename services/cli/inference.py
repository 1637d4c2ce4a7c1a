"""`corral models`, `corral chat` (one-shot or interactive, streaming) and `corral embed`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from corral.v1 import common_pb2, router_service_pb2, router_service_pb2_grpc
from rich.console import Console

from services.cli.client import Peers, UsageError, to_json
from services.cli.fleet import required_models
from services.cli.render import fmt_ms, models_table, required_models_view

_CACHE_MODES = {
    "default": common_pb2.CACHE_MODE_UNSPECIFIED,
    "bypass": common_pb2.CACHE_MODE_BYPASS,
    "refresh": common_pb2.CACHE_MODE_REFRESH,
    "exact": common_pb2.CACHE_MODE_EXACT,
    "semantic": common_pb2.CACHE_MODE_SEMANTIC,
}
CACHE_MODE_NAMES = sorted(_CACHE_MODES)
_OUTCOMES = {
    common_pb2.CACHE_OUTCOME_MISS: "cache miss",
    common_pb2.CACHE_OUTCOME_EXACT_HIT: "exact cache hit",
    common_pb2.CACHE_OUTCOME_SEMANTIC_HIT: "semantic cache hit",
    common_pb2.CACHE_OUTCOME_BYPASS: "cache bypassed",
    common_pb2.CACHE_OUTCOME_DEGRADED: "cache unavailable",
    common_pb2.CACHE_OUTCOME_COALESCED: "coalesced",
}


async def models(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """Lists the fleet's models."""
    async with peers.channel("router") as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        request = router_service_pb2.ListModelsRequest(loaded_only=args.loaded)
        reply = await stub.ListModels(request, timeout=peers.timeout_s)
    if args.json:
        print(json.dumps([to_json(m) for m in reply.models]))
    else:
        console.print(models_table(reply.models))
        required = await required_models(peers)
        if required:
            console.print(required_models_view(required))
    return 0


def routing_line(routing: common_pb2.RoutingInfo, stats: common_pb2.GenerationStats) -> str:
    """How an answer was served, for people: node, cache outcome, TTFT, speed."""
    parts = [routing.node_id or "cache"]
    parts.append(_OUTCOMES.get(routing.cache_outcome, "cache ?"))
    if routing.attempts > 1:
        parts.append(f"{routing.attempts} attempts")
    if routing.resumed:
        parts.append("resumed on another node")
    if routing.ttft_ms:
        parts.append(f"ttft {fmt_ms(routing.ttft_ms)}")
    eval_s = stats.eval_duration.seconds + stats.eval_duration.nanos / 1e9
    if stats.eval_count and eval_s > 0:
        parts.append(f"{stats.eval_count / eval_s:.0f} tok/s")
    return " · ".join(parts)


def _spec(args: argparse.Namespace, history: list[common_pb2.ChatMessage]) -> common_pb2.ChatSpec:
    spec = common_pb2.ChatSpec(model=args.model, messages=history)
    if args.temperature is not None:
        spec.options.temperature = args.temperature
    if args.num_predict is not None:
        spec.options.num_predict = args.num_predict
    return spec


async def _ask(
    stub: router_service_pb2_grpc.RouterServiceStub,
    args: argparse.Namespace,
    history: list[common_pb2.ChatMessage],
    console: Console,
) -> str:
    """Sends the conversation, prints the answer (streamed unless --no-stream), returns its text."""
    spec = _spec(args, history)
    cache = common_pb2.CachePolicy(mode=_CACHE_MODES[args.cache_mode])
    err = Console(stderr=True, highlight=False)
    if args.no_stream or args.json:
        reply = await stub.Chat(
            router_service_pb2.ChatRequest(spec=spec, cache=cache, session_id=args.session),
            timeout=args.request_timeout,
        )
        if args.json:
            print(json.dumps(to_json(reply)))
        else:
            print(reply.message.content, flush=True)
            err.print(routing_line(reply.routing, reply.stats), style="dim")
        return str(reply.message.content)
    pieces: list[str] = []
    request = router_service_pb2.ChatStreamRequest(spec=spec, cache=cache, session_id=args.session)
    async for chunk in stub.ChatStream(request, timeout=args.request_timeout):
        if chunk.message.content:
            pieces.append(chunk.message.content)
            sys.stdout.write(chunk.message.content)
            sys.stdout.flush()
        if chunk.done:
            sys.stdout.write("\n")
            sys.stdout.flush()
            err.print(routing_line(chunk.routing, chunk.stats), style="dim")
    return "".join(pieces)


async def chat(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """One-shot when a prompt is given (or piped in); otherwise an interactive session."""
    history: list[common_pb2.ChatMessage] = []
    if args.system:
        history.append(common_pb2.ChatMessage(role="system", content=args.system))
    prompt = " ".join(args.prompt) if args.prompt else None
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise UsageError("no prompt: give one as an argument or on stdin")
    async with peers.channel("router") as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        if prompt is not None:
            history.append(common_pb2.ChatMessage(role="user", content=prompt))
            await _ask(stub, args, history, console)
            return 0
        console.print(f"chatting with {args.model} through Corral; /exit or Ctrl-D to quit", style="dim")
        while True:
            try:
                line = await asyncio.to_thread(input, ">>> ")
            except EOFError:
                print()
                return 0
            if line.strip() in ("/exit", "/bye", "/quit"):
                return 0
            if not line.strip():
                continue
            history.append(common_pb2.ChatMessage(role="user", content=line))
            answer = await _ask(stub, args, history, console)
            history.append(common_pb2.ChatMessage(role="assistant", content=answer))


async def embed(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """Embeds the given texts."""
    request = router_service_pb2.EmbedRequest(
        model=args.model, inputs=args.texts, dimensions=args.dimensions or 0
    )
    async with peers.channel("router") as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        reply = await stub.Embed(request, timeout=args.request_timeout)
    vectors = [list(e.values) for e in reply.embeddings]
    if args.json:
        out: dict[str, Any] = {"model": reply.model, "embeddings": vectors, "routing": to_json(reply.routing)}
        print(json.dumps(out))
        return 0
    dims = len(vectors[0]) if vectors else 0
    console.print(
        f"{len(vectors)} embedding(s) of {dims} dimensions from {reply.routing.node_id or '?'}",
        highlight=False,
    )
    for text, vector in zip(args.texts, vectors, strict=True):
        head = ", ".join(f"{v:+.4f}" for v in vector[:4])
        label = text if len(text) <= 30 else text[:27] + "..."
        console.print(f"  {label!r}: [{head}, ...]", highlight=False)
    return 0
