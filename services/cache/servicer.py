"""CacheService servicer: translates protobuf to engine calls and results back (no logic of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
from corral.v1 import cache_service_pb2, cache_service_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from services.cache import keys, validation
from services.cache.admin import CacheAdmin, TierReport
from services.cache.embed_cache import EmbeddingCache, EmbeddingScope, pack, scope_of, unpack
from services.cache.embedders import Vector
from services.cache.engine import CacheEngine, LookupResult, StoreItem
from services.common.errors import InvalidArgument, NotFound
from services.common.tracing import annotate, annotate_cache_lookup
from services.common.wire import CACHE_MAX_BATCH

pb = cache_service_pb2
M = TypeVar("M")
T = TypeVar("T")
# NOTE: a router sends at most `lookup_batch_max` lookups (1 by default) and `store_batch_max` (64)
# stores per call, and embeddings in chunks of at most this many texts; the bound keeps one call from
# occupying the cache with an unbounded fan-out of tasks.
MAX_BATCH = CACHE_MAX_BATCH


def _each(field: str, items: Sequence[M], check: Callable[[M], T]) -> list[T]:
    """`check` applied to every item of a batch; a refusal names the item (`lookups[3].tenant`)."""
    if len(items) > MAX_BATCH:
        raise InvalidArgument(field, f"at most {MAX_BATCH} per call, got {len(items)}")
    checked: list[T] = []
    for index, item in enumerate(items):
        try:
            checked.append(check(item))
        except InvalidArgument as exc:
            where = f"{field}[{index}]" + (f".{exc.field}" if exc.field else "")
            raise InvalidArgument(where, exc.message.removeprefix(f"{exc.field}: ")) from None
    return checked


def _tier(report: TierReport) -> pb.TierStats:
    counters = report.counters
    return pb.TierStats(
        hits=counters.hits,
        misses=counters.misses,
        stores=counters.stores,
        entries=report.entries,
        lookup_p50_ms=counters.percentile_ms(50),
        lookup_p99_ms=counters.percentile_ms(99),
        size_bytes=report.size_bytes,
    )


class CacheServicer(cache_service_pb2_grpc.CacheServiceServicer):
    """The CacheService RPCs over a CacheEngine."""

    def __init__(self, engine: CacheEngine) -> None:
        self._engine = engine
        self._admin = CacheAdmin(engine)
        self._cfg = engine.cfg
        self._vectors = EmbeddingCache(engine)
        # NOTE: the semantic tier reads a question's vector from the embedding cache when a client
        # already embedded the same text with the embedder's model (a RAG application embeds its
        # question to retrieve documents, then asks it): one node call instead of two.
        engine.shared_vector = self._vectors.node_vector

    def _plan(self, request: pb.LookupRequest | pb.StoreRequest, view: keys.RequestView) -> keys.TierPlan:
        return keys.plan(
            request.policy,
            view,
            default_ttl_s=self._cfg.default_ttl_s,
            max_ttl_s=self._cfg.max_ttl_s,
            semantic_enabled=self._cfg.semantic_enabled,
            rule=self._cfg.semantic_policy.resolve(view.tenant, view.model),
        )

    def _budget_s(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self._cfg.lookup_deadline_ms / 1000 if remaining is None else remaining

    def _lookup_args(
        self, request: pb.LookupRequest
    ) -> tuple[keys.RequestView, keys.TierPlan, Vector | None]:
        spec = validation.check_keyed(request, self._cfg)
        embedding = validation.embedding_of(request.embedding, self._engine.embedder.dims)
        view = keys.derive(request.tenant, spec)
        return view, self._plan(request, view), embedding

    async def _lookup(
        self,
        request: pb.LookupRequest,
        args: tuple[keys.RequestView, keys.TierPlan, Vector | None],
        budget_s: float,
    ) -> tuple[pb.LookupResponse, LookupResult]:
        view, plan, embedding = args
        result = await self._engine.lookup(
            view, plan, embedding=embedding, single_flight=request.single_flight, budget_s=budget_s
        )
        reply = pb.LookupResponse(
            hit=result.entry is not None,
            outcome=result.outcome,  # type: ignore[arg-type]
            entry=result.entry,
            similarity=result.similarity,
            key=result.key,
            flight_token=result.flight_token,
            guard_reason=result.guard_reason,
            reason=result.reason,
            semantic_max_temperature=self._cfg.semantic_policy.resolve(view.tenant, view.model).ceiling,
        )
        return reply, result

    async def Lookup(self, request: pb.LookupRequest, context: grpc.aio.ServicerContext) -> pb.LookupResponse:
        """Exact tier, then semantic tier, then single-flight; a store that is down is a miss."""
        reply, result = await self._lookup(request, self._lookup_args(request), self._budget_s(context))
        annotate_cache_lookup(result.outcome, result.similarity, result.guard_reason, request.tenant)
        return reply

    async def LookupBatch(
        self, request: pb.LookupBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupBatchResponse:
        """Lookup for several requests at once, all within the call's deadline."""
        args = _each("lookups", request.lookups, self._lookup_args)
        budget_s = self._budget_s(context)
        done = await asyncio.gather(
            *(self._lookup(lookup, a, budget_s) for lookup, a in zip(request.lookups, args, strict=True))
        )
        annotate({"corral.cache.batch_size": len(done)})
        return pb.LookupBatchResponse(results=[reply for reply, _ in done])

    async def Store(self, request: pb.StoreRequest, context: grpc.aio.ServicerContext) -> pb.StoreResponse:
        """Hands the answer to waiting lookups and writes the tiers the policy allows."""
        item = self._store_item(request)
        stored_exact, stored_semantic = await self._engine.store(
            item.view, item.plan, item.answer, flight_token=item.flight_token, embedding=item.embedding
        )
        return pb.StoreResponse(
            key=item.view.exact_key, stored_exact=stored_exact, stored_semantic=stored_semantic
        )

    def _store_item(self, request: pb.StoreRequest) -> StoreItem:
        spec = validation.check_keyed(request, self._cfg)
        validation.check_store(request, self._cfg)
        embedding = validation.embedding_of(request.embedding, self._engine.embedder.dims)
        view = keys.derive(request.tenant, spec)
        return StoreItem(view, self._plan(request, view), request.entry, request.flight_token, embedding)

    async def StoreBatch(
        self, request: pb.StoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoreBatchResponse:
        """Store for several answers; the whole batch is refused when one entry is malformed."""
        items = _each("entries", request.entries, self._store_item)
        stored = await self._engine.store_many(items) if items else []
        return pb.StoreBatchResponse(
            results=[
                pb.StoreResponse(key=item.view.exact_key, stored_exact=exact, stored_semantic=semantic)
                for item, (exact, semantic) in zip(items, stored, strict=True)
            ]
        )

    async def AbandonFlight(
        self, request: pb.AbandonFlightRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbandonFlightResponse:
        """Releases the waiters of a flight whose leader has no answer."""
        validation.check_token(request.flight_token, required=True)
        released = self._engine.abandon(request.flight_token)
        if released is None:
            raise NotFound("no flight with this token (it was completed, abandoned or expired)")
        return pb.AbandonFlightResponse(released_waiters=released)

    async def Invalidate(
        self, request: pb.InvalidateRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvalidateResponse:
        """Removes entries by tenant, model or key from both tiers."""
        validation.check_invalidate(request, self._cfg)
        exact_removed, semantic_removed = await self._admin.invalidate(
            request.tenant or None,
            keys.normalise_model(request.model) if request.model else None,
            request.key or None,
        )
        return pb.InvalidateResponse(exact_removed=exact_removed, semantic_removed=semantic_removed)

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsResponse:
        """Counters since start and current sizes."""
        validation.check_tenant(request.tenant, self._cfg)
        report = await self._admin.stats(request.tenant or None)
        return pb.StatsResponse(
            exact=_tier(report.exact),
            semantic=_tier(report.semantic),
            coalesced=report.coalesced,
            guard_rejections=report.guard_rejections,
            degraded_lookups=report.degraded_lookups,
            exact_degraded=report.exact_degraded,
            semantic_degraded=report.semantic_degraded,
            embedder=report.embedder,
            embeddings=_tier(TierReport(self._engine.stats.embeddings, 0, 0)),
            semantic_skips=dict(self._engine.stats.semantic_skips),
            embedder_degraded=report.embedder_degraded,
            backfill_pending=report.backfill_pending,
            backfilled=report.backfilled,
            shared_vectors=self._engine.stats.shared_vectors,
        )

    def _scope(self, key: pb.EmbeddingKey, inputs: Sequence[str]) -> EmbeddingScope:
        validation.check_tenant(key.tenant, self._cfg, "key.tenant")
        if not key.model.strip():
            raise InvalidArgument("key.model", "is required")
        if len(key.model) > 512:
            raise InvalidArgument("key.model", "at most 512 characters")
        if len(inputs) > MAX_BATCH:
            raise InvalidArgument("inputs", f"at most {MAX_BATCH} per call, got {len(inputs)}")
        return scope_of(key)

    async def LookupEmbeddings(
        self, request: pb.LookupEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupEmbeddingsResponse:
        """Per-text vectors in input order; a store that is down answers every text as a miss."""
        scope = self._scope(request.key, request.inputs)
        found, degraded = await self._vectors.lookup(scope, request.inputs, self._budget_s(context))
        return pb.LookupEmbeddingsResponse(
            results=[
                pb.CachedVector(hit=True, values=unpack(raw)) if raw is not None else pb.CachedVector()
                for raw in found
            ],
            degraded=degraded,
        )

    async def StoreEmbeddings(
        self, request: pb.StoreEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoreEmbeddingsResponse:
        """Stores one vector per text for the policy's TTL (the default TTL when it names none)."""
        scope = self._scope(request.key, request.inputs)
        if len(request.vectors) != len(request.inputs):
            raise InvalidArgument("vectors", "one vector per input is required")
        for index, vector in enumerate(request.vectors):
            if not vector.values:
                raise InvalidArgument(f"vectors[{index}]", "must not be empty")
        ttl = request.policy.ttl
        if ttl.seconds < 0 or ttl.nanos < 0:
            raise InvalidArgument("policy.ttl", "must not be negative")
        cfg = self._cfg
        # NOTE: a zero TTL means the default here.
        ttl_s = keys.policy_ttl_s(request.policy, default_ttl_s=cfg.default_ttl_s, max_ttl_s=cfg.max_ttl_s)
        ttl_s = ttl_s or cfg.default_ttl_s
        stored = await self._vectors.store(
            scope, request.inputs, [pack(v.values) for v in request.vectors], ttl_s
        )
        return pb.StoreEmbeddingsResponse(stored=stored)

    async def RunMaintenance(
        self, request: pb.RunMaintenanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunMaintenanceResponse:
        """Expires semantic entries and optionally vacuums the table."""
        max_age_s: float | None = None
        if request.HasField("max_age"):
            if request.max_age.seconds < 0 or request.max_age.nanos < 0:
                raise InvalidArgument("max_age", "must not be negative")
            # NOTE: seconds + nanos, not ToTimedelta(): a huge age overflows timedelta (INTERNAL before).
            max_age_s = request.max_age.seconds + request.max_age.nanos / 1e9
        report = await self._admin.maintenance(max_age_s, request.vacuum)
        duration = Duration()
        duration.FromNanoseconds(int(report.duration_s * 1e9))
        return pb.RunMaintenanceResponse(
            expired_removed=report.removed,
            vacuumed=report.vacuumed,
            semantic_entries=report.remaining,
            duration=duration,
            backfilled=report.backfilled,
            backfill_pending=report.backfill_pending,
        )
