"""RouterCore: the whole request pipeline (validate, cache, single-flight, route, forward, store).

Transport-neutral: the gRPC servicer and the Ollama/OpenAI-compatible HTTP API both call it with
protobuf messages and receive protobuf messages, or a domain error from services.common.errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from corral.v1 import cache_service_pb2, common_pb2, router_service_pb2

from services.common.errors import CorralError, Unavailable
from services.router.admission import AdmissionQueue
from services.router.answers import (
    Answer,
    Assembler,
    Done,
    chat_chunk,
    chat_chunks,
    generate_chunk,
    generate_chunks,
)
from services.router.balancer import Ect, make_balancer
from services.router.cache_client import CacheClient, reason_without_lookup, semantic_tier_may_answer
from services.router.config import RouterConfig
from services.router.embed import Embedder
from services.router.fleet import Fleet
from services.router.forward import Forwarder, Job, Piece
from services.router.model_admin import ModelAdmin
from services.router.near_cache import NearCache
from services.router.observe import Observer, Observers
from services.router.resilience import BackgroundGate, ConcurrencyLimit, RetryBudget, TtftTimeout
from services.router.scores import ScoreBoard
from services.router.singleflight import SingleFlight
from services.router.telemetry import annotate_request
from services.router.transport import NodeTransport
from services.router.validation import validate_chat, validate_embed, validate_generate

logger = logging.getLogger(__name__)

Spec = common_pb2.GenerateSpec | common_pb2.ChatSpec
_NO_LOOKUP = (common_pb2.CACHE_MODE_BYPASS, common_pb2.CACHE_MODE_REFRESH)


def affinity_key(spec: Spec, session_id: str) -> str | None:
    """The request's affinity key: the session id, else for a chat the conversation prefix.

    The prefix (model, first system message, first user message) is what consecutive turns of one
    conversation share, so their requests land where Ollama's KV cache already holds it.
    """
    if session_id:
        return f"s:{session_id}"
    if not isinstance(spec, common_pb2.ChatSpec):
        return None
    system = next((m.content for m in spec.messages if m.role.lower() == "system"), "")
    user = next((m.content for m in spec.messages if m.role.lower() == "user"), "")
    digest = hashlib.blake2b(f"{spec.model}\x00{system}\x00{user}".encode(), digest_size=12).hexdigest()
    return f"p:{digest}"


def semantic_eligible(spec: Spec, policy: common_pb2.CachePolicy) -> bool:
    """True when the cache may answer from its semantic tier, which first embeds the prompt.

    The cache decides (services/cache/keys.py `plan`) by its operator's semantic policy; this is its
    default rule (CACHE_MODE_SEMANTIC, or the default mode with temperature exactly 0), which applies
    until the cache has reported the policy of a tenant and model (`CacheClient.semantic_may_answer`).
    The router only needs to know which lookup budget applies.
    """
    return semantic_tier_may_answer(spec, policy, None)


def flight_key(tenant: str, spec: Spec, policy: common_pb2.CachePolicy) -> str:
    """Identity of a request for single-flight: tenant, the exact spec and the cache policy."""
    h = hashlib.blake2b(digest_size=16)
    h.update(tenant.encode())
    h.update(b"\x00" + spec.DESCRIPTOR.name.encode() + b"\x00")
    h.update(spec.SerializeToString(deterministic=True))
    h.update(b"\x00")
    h.update(policy.SerializeToString(deterministic=True))
    return h.hexdigest()


def near_ttl_s(entry: cache_service_pb2.CacheEntry, policy: common_pb2.CachePolicy, now: float) -> float:
    """How much longer the near cache may serve an exact hit: until the entry's expiry, and for a policy
    with max_age until the entry is that old (0 when it has no expiry). `now` is Unix time."""
    if not entry.HasField("expires_at"):
        return 0.0
    until = entry.expires_at.seconds + entry.expires_at.nanos / 1e9
    if policy.HasField("max_age"):
        if not entry.HasField("created_at"):
            return 0.0
        created = entry.created_at.seconds + entry.created_at.nanos / 1e9
        until = min(until, created + policy.max_age.seconds + policy.max_age.nanos / 1e9)
    return until - now


def _cached_reply(hit: Answer, model: str, routing: common_pb2.RoutingInfo, started: float) -> Answer:
    """A cached answer as this request's reply: the model it asked for, and `routing` with its TTFT."""
    routing.ttft_ms = (time.perf_counter() - started) * 1000
    hit.model = model
    hit.routing.CopyFrom(routing)
    return hit


def _decode_entry(payload: bytes, payload_type: str, chat: bool) -> Answer | None:
    expected = router_service_pb2.ChatResponse if chat else router_service_pb2.GenerateResponse
    if payload_type != expected.DESCRIPTOR.full_name:
        return None
    answer = expected()
    try:
        answer.ParseFromString(payload)
    except Exception:
        return None
    return answer


class RouterCore:
    """The router's request pipeline, shared by every front end.

    Args:
        cfg: The router configuration.
        board: The score copy (fed by health's stream or the static node list).
        transport: The HTTP transport to the nodes.
        cache: The cache client, or None to run without a cache.
        observer: Hooks for metrics and tracing (attempt outcomes also go to health through it).
    """

    def __init__(
        self,
        cfg: RouterConfig,
        *,
        board: ScoreBoard,
        transport: NodeTransport,
        cache: CacheClient | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.cfg = cfg
        self.board = board
        self.transport = transport
        self.cache = cache
        self.observers = Observers(*([observer] if observer is not None else []))
        self.budget = RetryBudget(cfg.retry_budget)
        self.limit = ConcurrencyLimit(cfg.max_concurrent_requests)
        self.gate = BackgroundGate(cfg.background_max_inflight, cfg.background_wait_s)
        self.balancer = make_balancer(cfg.strategy, cfg.balancer)
        if isinstance(self.balancer, Ect):
            board.learned_slots = self.balancer.learner.confirmed_slots
        self.admission = AdmissionQueue(
            cfg.admission.max_waiting, cfg.admission.max_wait_s, cfg.admission.retry_after_s
        )
        self.forwarder = Forwarder(
            board=board,
            balancer=self.balancer,
            transport=transport,
            budget=self.budget,
            ttft=TtftTimeout(cfg.ttft_timeout_s, cfg.ttft_cold_extra_s),
            gate=self.gate,
            observer=self.observers,
            node_cooldown_s=cfg.node_cooldown_s,
            busy_cooldown_s=cfg.busy_cooldown_s,
            background_node_threshold=cfg.background_node_threshold,
            buffered_read_timeout_s=cfg.buffered_read_timeout_s,
            admission=self.admission,
            stall=cfg.stall,
        )
        self.embedder = Embedder(
            self.forwarder,
            cfg.embed_split_size,
            cfg.embed_timeout_s,
            cache,
            cfg.lookup_budget_ms / 1000,
            cfg.embed_coalesce_size,
            cfg.embed_coalesce_window_ms / 1000,
        )
        self.fleet = Fleet(board, transport)
        self.model_admin = ModelAdmin(
            board,
            transport,
            parallel=cfg.model_admin_parallel,
            pull_read_timeout_s=cfg.model_pull_read_timeout_s,
        )
        self.flights: SingleFlight[Answer] = SingleFlight()
        near = cfg.near_cache
        # NOTE: the near cache needs the cache (it keeps only what the cache served) and its Redis; it
        # serves nothing until the runtime (services/router/server.py) has subscribed it to the events.
        self.near: NearCache | None = None
        if cache is not None and near.redis_url and near.max_bytes > 0:
            self.near = NearCache(near.max_bytes)

    # --- public API -------------------------------------------------------------------------------
    async def generate(
        self, req: router_service_pb2.GenerateRequest, *, tenant: str, deadline_s: float | None
    ) -> router_service_pb2.GenerateResponse:
        """Answers a completion in one response."""
        answer = await self._unary("Generate", req, tenant, deadline_s)
        assert isinstance(answer, router_service_pb2.GenerateResponse)
        return answer

    async def chat(
        self, req: router_service_pb2.ChatRequest, *, tenant: str, deadline_s: float | None
    ) -> router_service_pb2.ChatResponse:
        """Answers a chat in one response."""
        answer = await self._unary("Chat", req, tenant, deadline_s)
        assert isinstance(answer, router_service_pb2.ChatResponse)
        return answer

    async def generate_stream(
        self, req: router_service_pb2.GenerateStreamRequest, *, tenant: str, deadline_s: float | None
    ) -> AsyncIterator[router_service_pb2.GenerateStreamResponse]:
        """Streams a completion; the last chunk has done set and carries stats and routing."""
        model = req.spec.model
        async with aclosing(self._run("GenerateStream", req, tenant, deadline_s)) as items:
            async for item in items:
                if isinstance(item, Piece):
                    yield generate_chunk(model, item)
                else:
                    assert isinstance(item.answer, router_service_pb2.GenerateResponse)
                    for chunk in generate_chunks(item.answer, replay=not item.live):
                        yield chunk

    async def chat_stream(
        self, req: router_service_pb2.ChatStreamRequest, *, tenant: str, deadline_s: float | None
    ) -> AsyncIterator[router_service_pb2.ChatStreamResponse]:
        """Streams a chat answer; the last chunk has done set and carries stats and routing."""
        model = req.spec.model
        async with aclosing(self._run("ChatStream", req, tenant, deadline_s)) as items:
            async for item in items:
                if isinstance(item, Piece):
                    yield chat_chunk(model, item)
                else:
                    assert isinstance(item.answer, router_service_pb2.ChatResponse)
                    for chunk in chat_chunks(item.answer, replay=not item.live):
                        yield chunk

    async def embed(
        self, req: router_service_pb2.EmbedRequest, *, tenant: str, deadline_s: float | None
    ) -> router_service_pb2.EmbedResponse:
        """Embeds every input; large batches are split across nodes."""
        started = time.perf_counter()
        status = "OK"
        cache_outcome: common_pb2.CacheOutcome.ValueType = common_pb2.CACHE_OUTCOME_BYPASS
        self.limit.acquire()
        try:
            model = validate_embed(
                req, self.board.known_models(), self.cfg.max_prompt_bytes, self.cfg.max_embed_inputs
            )
            background = req.priority == common_pb2.PRIORITY_BACKGROUND
            if background:
                await self.gate.enter(deadline_s)
            try:
                response = await self.embedder.embed(
                    req, model, self._deadline(deadline_s), background, tenant
                )
                cache_outcome = response.routing.cache_outcome
                return response
            finally:
                if background:
                    self.gate.leave()
        except CorralError as exc:
            status = exc.code.name
            raise
        finally:
            self.limit.release()
            self.observers.request(
                "Embed",
                req.model,
                status,
                (time.perf_counter() - started) * 1000,
                cache_outcome,
            )

    async def list_models(
        self, req: router_service_pb2.ListModelsRequest, *, tenant: str, deadline_s: float | None
    ) -> router_service_pb2.ListModelsResponse:
        """The union of the fleet's models, with where each is installed and loaded."""
        return await self.fleet.list_models(req.loaded_only, min(deadline_s or 3.0, 3.0))

    async def show(self, body: dict[str, Any], *, tenant: str, deadline_s: float | None) -> dict[str, Any]:
        """Forwards an /api/show body to a node that has the model; returns the node's JSON reply."""
        return await self.fleet.show(body, min(deadline_s or 10.0, 10.0))

    def ps(self) -> dict[str, Any]:
        """The fleet's loaded models in /api/ps form, from the score copy (no node is contacted)."""
        return self.fleet.ps()

    # --- pipeline -----------------------------------------------------------------------------------
    def _deadline(self, deadline_s: float | None) -> float:
        limit = (
            self.cfg.request_timeout_s if deadline_s is None else min(deadline_s, self.cfg.request_timeout_s)
        )
        return time.monotonic() + limit

    async def _unary(self, rpc: str, req: Any, tenant: str, deadline_s: float | None) -> Answer:
        async with aclosing(self._run(rpc, req, tenant, deadline_s)) as items:
            async for item in items:
                if isinstance(item, Done):
                    return item.answer
        raise Unavailable("the request ended without an answer")  # pragma: no cover - defensive

    async def _run(
        self, rpc: str, req: Any, tenant: str, deadline_s: float | None
    ) -> AsyncGenerator[Piece | Done, None]:
        """Validate → single-flight → cache → forward → store; yields live pieces and then Done."""
        started = time.perf_counter()
        annotate_request(rpc, tenant)
        spec: Spec = req.spec
        streaming = rpc.endswith("Stream")
        status = "OK"
        cache_outcome: common_pb2.CacheOutcome.ValueType = common_pb2.CACHE_OUTCOME_BYPASS
        key: str | None = None
        flight_token = ""
        entered_gate = False
        self.limit.acquire()
        try:
            chat = isinstance(spec, common_pb2.ChatSpec)
            known = self.board.known_models()
            if chat:
                model = validate_chat(spec, known, self.cfg.max_prompt_bytes)  # type: ignore[arg-type]
            else:
                model = validate_generate(spec, known, self.cfg.max_prompt_bytes)  # type: ignore[arg-type]
            deadline = self._deadline(deadline_s)
            is_load = not chat and not spec.prompt and not spec.images  # type: ignore[union-attr]
            policy: common_pb2.CachePolicy = req.cache
            use_cache = self.cache is not None and not is_load and policy.mode != common_pb2.CACHE_MODE_BYPASS
            cache_reason = reason_without_lookup(self.cache is not None, is_load, policy.mode)
            if use_cache and policy.mode not in _NO_LOOKUP:
                assert self.cache is not None
                request_key = flight_key(tenant, spec, policy)
                near = self.near if self.near is not None and self.near.live else None
                kept = near.get(request_key) if near is not None else None
                hit = _decode_entry(kept.payload, kept.payload_type, chat) if kept is not None else None
                if hit is not None:
                    cache_outcome = common_pb2.CACHE_OUTCOME_EXACT_HIT
                    routing = common_pb2.RoutingInfo(
                        cache_outcome=cache_outcome, cache_reason="exact hit (near cache)", near_cache=True
                    )
                    yield Done(_cached_reply(hit, spec.model, routing, started), live=False)
                    return
                since = near.mark() if near is not None else 0
                key = request_key
                flight = self.flights.leader_or_flight(key)
                if flight is not None:
                    key = None
                    coalesced = await self._follow(flight, deadline)
                    if coalesced is not None:
                        cache_outcome = common_pb2.CACHE_OUTCOME_COALESCED
                        yield Done(coalesced, live=False)
                        return
                lookup_started = time.perf_counter()
                learned = self.cache.semantic_may_answer(tenant, spec, policy)
                semantic = semantic_eligible(spec, policy) if learned is None else learned
                budget_ms = self.cfg.semantic_lookup_budget_ms if semantic else self.cfg.lookup_budget_ms
                found = await self.cache.lookup(tenant, spec, policy, budget_ms / 1000)
                self.observers.cache_lookup(found.outcome, (time.perf_counter() - lookup_started) * 1000)
                cache_outcome = found.outcome
                cache_reason = found.reason
                flight_token = found.flight_token
                hit = (
                    _decode_entry(found.entry.payload, found.entry.payload_type, chat)
                    if found.entry is not None
                    else None
                )
                if hit is not None:
                    if near is not None and found.outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT:
                        assert found.entry is not None
                        near.put(
                            request_key,
                            payload=found.entry.payload,
                            payload_type=found.entry.payload_type,
                            tenant=tenant,
                            model=spec.model,
                            exact_key=found.key,
                            ttl_s=near_ttl_s(found.entry, policy, time.time()),
                            since=since,
                        )
                    routing = common_pb2.RoutingInfo(
                        cache_outcome=found.outcome, similarity=found.similarity, cache_reason=found.reason
                    )
                    hit = _cached_reply(hit, spec.model, routing, started)
                    if key is not None:
                        self.flights.finish(key, hit)
                        key = None
                    yield Done(hit, live=False)
                    return
                if found.entry is not None:
                    cache_outcome = common_pb2.CACHE_OUTCOME_MISS
                    cache_reason = "cached answer unreadable"
            background = req.priority == common_pb2.PRIORITY_BACKGROUND
            if background:
                await self.gate.enter(deadline - time.monotonic())
                entered_gate = True
            job = Job(spec, model, affinity_key(spec, req.session_id), background, deadline, started, tenant)
            assembler = Assembler(spec.model, chat)
            final = None
            buffered = not streaming and not self.cfg.unary_node_stream
            async with aclosing(self.forwarder.run(job, emit=streaming, buffered=buffered)) as items:
                async for item in items:
                    if isinstance(item, Piece):
                        assembler.add(item)
                        yield item
                    else:
                        final = item
            assert final is not None
            for piece in final.pieces:
                assembler.add(piece)
            final.routing.cache_outcome = cache_outcome
            final.routing.cache_reason = cache_reason
            answer = assembler.finish(final)
            if use_cache and answer.done_reason not in ("load", "unload") and not final.routing.resumed:
                assert self.cache is not None
                self.cache.store(tenant, spec, policy, answer, flight_token)
                flight_token = ""
            if key is not None:
                self.flights.finish(key, answer)
                key = None
            yield Done(answer, live=True)
        except CorralError as exc:
            status = exc.code.name
            raise
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        finally:
            self.limit.release()
            if entered_gate:
                self.gate.leave()
            if key is not None:
                self.flights.fail(key, Unavailable("the identical request in flight did not finish"))
            if flight_token and self.cache is not None:
                self.cache.abandon(flight_token)
            self.observers.request(
                rpc, spec.model, status, (time.perf_counter() - started) * 1000, cache_outcome
            )

    async def _follow(self, flight: Any, deadline: float) -> Answer | None:
        """Waits for an identical request's answer; None means "go on alone" (the leader failed)."""
        try:
            leader = await SingleFlight.wait(flight, max(0.0, deadline - time.monotonic()))
        except CorralError:
            return None
        except TimeoutError:
            return None
        answer = cast(Answer, type(leader)())
        answer.CopyFrom(leader)
        answer.routing.cache_outcome = common_pb2.CACHE_OUTCOME_COALESCED
        answer.routing.cache_reason = "coalesced with an identical request in flight"
        answer.routing.attempts = 0
        return answer

    @staticmethod
    def remaining_s(deadline: float | None) -> float:
        """Seconds left until a monotonic deadline (inf when none)."""
        return math.inf if deadline is None else deadline - time.monotonic()
