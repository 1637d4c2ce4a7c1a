"""The cache engine: exact then semantic lookups, stores, single-flight, fail-open around both stores."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from corral.v1 import cache_service_pb2, common_pb2
from google.protobuf import message as pb_message
from redis.exceptions import AuthenticationError

from services.cache import guard
from services.cache.backfill import Backfill
from services.cache.breaker import Breaker
from services.cache.config import CacheConfig
from services.cache.embedders import Embedder, Vector, normalise
from services.cache.exact_store import ExactStore, bounded
from services.cache.flights import Flights
from services.cache.keys import RequestView, TierPlan
from services.cache.semantic_store import Candidate, Namespace, SemanticStore
from services.cache.stats import CacheStats

SharedVector = Callable[[str, str, str, float], Awaitable[bytes | None]]
"""(tenant, model, text, budget seconds) to a client's stored vector of the text, or None."""

logger = logging.getLogger(__name__)

CacheEntry = cache_service_pb2.CacheEntry


class StoreAuthError(Exception):
    """A store refused the cache's credentials at start-up; the message names the setting to fix."""


@dataclass(slots=True)
class LookupResult:
    """What a lookup produced (the servicer turns it into a LookupResponse)."""

    outcome: int
    key: str
    entry: CacheEntry | None = None
    similarity: float = 0.0
    flight_token: str = ""
    guard_reason: str = ""
    reason: str = ""


@dataclass(slots=True)
class StoreItem:
    """One answer of a batch store (what Store takes, already validated and keyed)."""

    view: RequestView
    plan: TierPlan
    answer: CacheEntry
    flight_token: str
    embedding: Vector | None


@dataclass(slots=True)
class _Candidates:
    """What the semantic tier's query found, and when the tier's work on the lookup started."""

    candidates: list[Candidate]
    started: float


@dataclass(slots=True)
class _Trace:
    degraded: bool = False
    guard_reason: str = ""
    # NOTE: what each tier did, for the answer's reason.
    exact: str = ""
    semantic: str = ""

    def reason(self, skip: str) -> str:
        """ "exact miss; semantic skipped: ...": the parts in tier order, the plan's skip last."""
        return "; ".join(part for part in (self.exact, self.semantic, skip) if part)


def _refusal(exc: AuthenticationError, has_password: bool) -> str:
    """One line on why Redis refused the cache, naming the setting to fix."""
    if has_password:
        return (
            "redis refused the password (WRONGPASS): redis.password_file (or redis.password, or the "
            f"password in redis.url) must be Redis's requirepass ({exc})"
        )
    return (
        "redis requires a password (NOAUTH) and none is configured: set redis.password_file "
        f"(or redis.password) to Redis's requirepass ({exc})"
    )


def _blame(breaker: Breaker, exc: BaseException, *, caller_bound: bool) -> bool:
    """Counts a failed lookup call against its store unless the caller's deadline ran out first.

    A timeout imposed by the caller's short remaining budget (shorter than the store's own timeout)
    says little about the store: counting it would let a busy machine, or a batch of lookups sharing
    one late reply, open the breaker and turn every lookup into a miss for `breaker_open_ms`.
    Returns False for such a timeout; the caller then has the store probed with its full timeout,
    so a hung store still opens the breaker.
    """
    timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError)
    if caller_bound and timed_out:
        return False
    breaker.failure()
    return True


def _fresh(entry: CacheEntry, max_age_s: float | None, now: datetime) -> bool:
    if entry.HasField("expires_at") and entry.expires_at.ToDatetime(tzinfo=UTC) <= now:
        return False
    if max_age_s is not None and entry.HasField("created_at"):
        return (now - entry.created_at.ToDatetime(tzinfo=UTC)).total_seconds() <= max_age_s
    return True


# NOTE: a store found too slow for a lookup's budget is probed at most this often.
_CHECK_INTERVAL_S = 0.1


class CacheEngine:
    """Looks up and stores answers; never raises for a store that is down or slow.

    Every store call is bounded by its own timeout and by what is left of the caller's deadline.
    A failure opens that store's breaker, so while Redis, PostgreSQL or the embedder is down the
    tier is skipped at no cost and the lookup answers DEGRADED (a miss); a background probe
    closes the breaker when the store answers again.
    """

    def __init__(
        self, cfg: CacheConfig, exact: ExactStore, semantic: SemanticStore, embedder: Embedder
    ) -> None:
        self.cfg = cfg
        self.exact = exact
        self.semantic = semantic
        self.embedder = embedder
        self.stats = CacheStats()
        self.flights = Flights(cfg.flight_lease_s)
        open_s = cfg.breaker_open_ms / 1000
        self.exact_breaker = Breaker(open_s, cfg.breaker_failures)
        self.semantic_breaker = Breaker(open_s, cfg.breaker_failures)
        self.embed_breaker = Breaker(open_s, cfg.breaker_failures)
        self.threshold = cfg.threshold()
        self._memo: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        # Set by the servicer: reads a client's stored vector of a text (services/cache/embed_cache.py).
        self.shared_vector: SharedVector | None = None
        self._hits: Counter[int] = Counter()
        self._recovery: asyncio.Task[None] | None = None
        # NOTE: semantic queries made moot by an exact hit, referenced until they finish.
        self.moot_queries: set[asyncio.Task[_Candidates | None]] = set()
        # NOTE: probes of stores that were too slow for a lookup's budget (see _blame).
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._checked_at: dict[str, float] = {}
        # NOTE: why Redis refused the last probe's credentials ("" while it accepts them).
        self._exact_refused = ""
        # NOTE: answers stored without their semantic entry wait here for maintenance.
        self.backfill = Backfill(self)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connects (without waiting for dead stores) and starts the recovery probe.

        A store that is down leaves the engine degraded; a Redis that refuses the credentials is a
        configuration error, not an outage, and stops the start.

        Raises:
            StoreAuthError: Redis answered NOAUTH or WRONGPASS.
        """
        await asyncio.gather(self._probe_exact(), self._probe_semantic())
        if self._exact_refused:
            raise StoreAuthError(self._exact_refused)
        self._recovery = asyncio.create_task(self._recover_forever(), name="cache-recovery")

    async def stop(self) -> None:
        """Stops background work and closes the stores."""
        self.flights.close()
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        for check in self._checks.values():
            check.cancel()
        await asyncio.gather(*self._checks.values(), return_exceptions=True)
        if self.moot_queries:
            await asyncio.wait(self.moot_queries, timeout=self.cfg.postgres_timeout_ms / 1000)
        await self._flush_hits()
        await self.embedder.close()
        await self.exact.close()
        await self.semantic.close()

    @property
    def exact_degraded(self) -> bool:
        """True while Redis is considered down."""
        return self.exact_breaker.degraded

    @property
    def semantic_degraded(self) -> bool:
        """True while PostgreSQL (or its migrations) or the embedder is considered down."""
        return self.semantic_breaker.degraded or self.embed_breaker.degraded or not self.semantic.is_open

    async def _recover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.recovery_interval_s)
            try:
                await self._recover_once()
            except Exception:  # NOTE: the probe must never die; the next round tries again.
                logger.exception("recovery probe failed unexpectedly")

    async def _flush_hits(self) -> None:
        """Writes the semantic hit counts gathered since the last flush (best effort)."""
        if not self._hits or not self.semantic.is_open or self.semantic_breaker.degraded:
            return
        hits, self._hits = dict(self._hits), Counter()
        try:
            await self.semantic.record_hits(hits, self.cfg.store_timeout_ms / 1000)
        except Exception as exc:
            logger.debug("hit counts lost: %r", exc)

    async def _recover_once(self) -> None:
        """Probes each degraded store once, and flushes hit counts."""
        await self._flush_hits()
        if self.exact_breaker.degraded:
            await self._probe_exact(reset=True)
        if self.semantic_breaker.degraded or not self.semantic.migrated or not self.semantic.is_open:
            await self._probe_semantic()
        if self.embed_breaker.degraded:
            try:
                await self.embedder.embed("ping", self.cfg.embedder.timeout_s)
            except Exception:
                self.embed_breaker.trip()
            else:
                self.embed_breaker.success()
                logger.info("embedder %s is back", self.embedder.name)

    def _check_soon(self, store: str, probe: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Probes a store that was too slow for a lookup's budget, once at a time and at most every
        `_CHECK_INTERVAL_S`: a probe that fails with the store's own timeout opens its breaker."""
        now = time.monotonic()
        running = self._checks.get(store)
        if (running is not None and not running.done()) or now < self._checked_at.get(store, 0.0):
            return
        self._checked_at[store] = now + _CHECK_INTERVAL_S
        self._checks[store] = asyncio.create_task(probe())

    async def _check_semantic(self) -> None:
        try:
            await self.semantic.ping(max(1.0, self.cfg.postgres_timeout_ms / 1000 * 4))
        except Exception as exc:
            self.semantic_breaker.trip()
            logger.debug("postgresql too slow: %r", exc)

    async def _check_embedder(self) -> None:
        try:
            await self.embedder.embed("ping", self.cfg.embedder.timeout_s)
        except Exception as exc:
            self.embed_breaker.trip()
            logger.debug("embedder too slow: %r", exc)

    async def _probe_exact(self, reset: bool = False) -> None:
        try:
            async with asyncio.timeout(self.cfg.redis_timeout_ms / 1000 * 4):
                if reset:
                    await self.exact.reset()
                await self.exact.ping()
        except AuthenticationError as exc:
            # NOTE: after start (a Redis restarted with another password) this fails open like an outage.
            self.exact_breaker.trip()
            refused = _refusal(exc, self.exact.has_password)
            if refused != self._exact_refused:
                logger.warning("%s", refused)
            self._exact_refused = refused
            return
        except Exception as exc:
            self.exact_breaker.trip()
            logger.debug("redis unreachable: %r", exc)
            return
        self._exact_refused = ""
        if self.exact_breaker.degraded:
            logger.info("redis is back")
        self.exact_breaker.success()

    async def _probe_semantic(self) -> None:
        timeout_s = max(1.0, self.cfg.postgres_timeout_ms / 1000 * 4)
        semantic = self.semantic
        try:
            async with asyncio.timeout(timeout_s * 2):
                if not semantic.migrated and self.cfg.migrate_on_start:
                    applied = await semantic.migrate()
                    if applied:
                        logger.info("applied migrations: %s", ", ".join(applied))
                semantic.migrated = True
                # NOTE: a direct connection first: while PostgreSQL is down no pool is kept reconnecting.
                await semantic.reachable(timeout_s)
                await semantic.reset()
                await semantic.ping(timeout_s)
        except Exception as exc:
            self.semantic_breaker.trip()
            await semantic.shut()
            logger.debug("postgresql unreachable: %r", exc)
            return
        if self.semantic_breaker.degraded:
            logger.info("postgresql is back")
        self.semantic_breaker.success()

    # -- lookups -----------------------------------------------------------------------------

    async def lookup(
        self,
        view: RequestView,
        plan: TierPlan,
        *,
        embedding: Vector | None,
        single_flight: bool,
        budget_s: float,
    ) -> LookupResult:
        """Exact tier, then semantic tier where allowed, then single-flight; within `budget_s`.

        When both tiers are planned and the query vector is at hand (given by the caller or
        remembered), the semantic query is sent at the same time as the exact GET. An exact hit
        still wins, and the semantic query it made moot finishes in the background without being
        counted as a semantic hit or miss (only its breaker learns from it).
        """
        if plan.skip_category:
            self.stats.semantic_skips[plan.skip_category] += 1
        if not plan.looks_up:
            self.stats.bypassed += 1
            return LookupResult(
                outcome=common_pb2.CACHE_OUTCOME_BYPASS, key=view.exact_key, reason=plan.skip_reason
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s - self.cfg.deadline_margin_ms / 1000
        trace = _Trace()
        now = datetime.now(UTC)
        text = view.semantic_text if plan.lookup_semantic else None
        pending: asyncio.Task[_Candidates | None] | None = None
        if plan.lookup_exact:
            if text is not None and self.cfg.concurrent_tiers and self._vector_at_hand(text, embedding):
                # NOTE: the task yields once first, so the exact GET started right after it goes out first.
                pending = asyncio.create_task(self._nearest(text, view, plan, embedding, deadline, now, True))
            entry = await self._lookup_exact(view, plan, deadline, now, trace)
            if entry is not None:
                if pending is not None:
                    self._leave_running(pending)
                return LookupResult(
                    outcome=common_pb2.CACHE_OUTCOME_EXACT_HIT,
                    key=view.exact_key,
                    entry=entry,
                    reason="exact hit",
                )
        if text is not None:
            if pending is None:
                nearest = self._nearest(text, view, plan, embedding, deadline, now, False)
                pending = asyncio.create_task(nearest)
                await asyncio.sleep(0)  # NOTE: lets it send its query before the guard's work below.
            if self.cfg.guard_enabled and not pending.done():
                # NOTE: the loop is idle while PostgreSQL searches; the guard's analysis of the
                # query text (cached per text) is done now instead of after the answer.
                guard.analyse(text)
            found = await self._lookup_semantic(text, pending, trace)
            if found is not None:
                entry, similarity = found
                trace.semantic = f"semantic hit: similarity {similarity:.2f}"
                return LookupResult(
                    outcome=common_pb2.CACHE_OUTCOME_SEMANTIC_HIT,
                    key=view.exact_key,
                    entry=entry,
                    similarity=similarity,
                    reason=trace.reason(""),
                )
        if trace.degraded:
            self.stats.degraded_lookups += 1
        miss = common_pb2.CACHE_OUTCOME_DEGRADED if trace.degraded else common_pb2.CACHE_OUTCOME_MISS
        result = LookupResult(
            outcome=miss,
            key=view.exact_key,
            guard_reason=trace.guard_reason,
            reason=trace.reason(plan.skip_reason),
        )
        if not single_flight:
            return result
        ticket = self.flights.join(view.exact_key)
        if ticket.future is None:
            result.flight_token = ticket.token
            return result
        # NOTE: a waiter whose deadline comes first gets a plain miss without a token: the leader is
        # still at work, and a second leader for the key would defeat the flight.
        remaining = deadline - loop.time()
        with contextlib.suppress(TimeoutError):
            if remaining > 0:
                async with asyncio.timeout(remaining):
                    shared = await asyncio.shield(ticket.future)
                if shared is not None:
                    self.stats.coalesced += 1
                    return LookupResult(
                        outcome=common_pb2.CACHE_OUTCOME_COALESCED,
                        key=view.exact_key,
                        entry=shared,
                        reason=f"{result.reason}; coalesced with an identical request",
                    )
        return result

    async def _lookup_exact(
        self, view: RequestView, plan: TierPlan, deadline: float, now: datetime, trace: _Trace
    ) -> CacheEntry | None:
        loop = asyncio.get_running_loop()
        timeout_s = min(self.cfg.redis_timeout_ms / 1000, deadline - loop.time())
        if timeout_s <= 0 or not self.exact_breaker.allow():
            trace.degraded = True
            trace.exact = "exact tier unavailable"
            return None
        started = time.perf_counter()
        try:
            raw = await bounded(self.exact.get(view.tenant, view.model, view.exact_key), timeout_s)
        except Exception as exc:
            if not _blame(self.exact_breaker, exc, caller_bound=timeout_s < self.cfg.redis_timeout_ms / 1000):
                self._check_soon("redis", self._probe_exact)
            trace.degraded = True
            trace.exact = "exact tier unavailable"
            logger.debug("exact lookup failed: %r", exc)
            return None
        self.exact_breaker.success()
        counters = self.stats.exact
        counters.latencies_ms.append((time.perf_counter() - started) * 1000)
        entry = self._decode(raw) if raw is not None else None
        if entry is None or not _fresh(entry, plan.max_age_s, now):
            counters.misses += 1
            trace.exact = "exact miss"
            return None
        counters.hits += 1
        return entry

    async def _nearest(
        self,
        text: str,
        view: RequestView,
        plan: TierPlan,
        embedding: Vector | None,
        deadline: float,
        now: datetime,
        yield_first: bool,
    ) -> _Candidates | None:
        """The candidates nearest to the request, or None when the tier is down or too slow (degraded).

        The semantic tier's I/O (embedding if needed, the nearest-neighbour query), run as a task.
        """
        loop = asyncio.get_running_loop()
        if yield_first:
            await asyncio.sleep(0)
        if not self.semantic.is_open or not self.semantic_breaker.allow():
            return None
        started = time.perf_counter()
        vector = await self._vector(text, embedding, deadline - loop.time(), view.tenant)
        timeout_s = min(self.cfg.postgres_timeout_ms / 1000, deadline - loop.time())
        if vector is None or timeout_s <= 0:
            return None
        min_created = now - timedelta(seconds=plan.max_age_s) if plan.max_age_s is not None else None
        try:
            async with asyncio.timeout(timeout_s):
                candidates = await self.semantic.nearest(
                    self._namespace(view), vector, self.cfg.semantic_candidates, min_created, timeout_s
                )
        except Exception as exc:
            caller_bound = timeout_s < self.cfg.postgres_timeout_ms / 1000
            if not _blame(self.semantic_breaker, exc, caller_bound=caller_bound):
                self._check_soon("postgres", self._check_semantic)
            logger.debug("semantic lookup failed: %r", exc)
            return None
        self.semantic_breaker.success()
        return _Candidates(candidates, started)

    async def _lookup_semantic(
        self, text: str, pending: asyncio.Task[_Candidates | None], trace: _Trace
    ) -> tuple[CacheEntry, float] | None:
        """Waits for the semantic query, then applies the threshold and the guard and counts the outcome."""
        nearest = await pending
        if nearest is None:
            trace.degraded = True
            trace.semantic = "semantic tier unavailable"
            return None
        counters = self.stats.semantic
        found = self._first_accepted(text, nearest.candidates, trace)
        # NOTE: the tier's latency covers embedding, the query and the guard.
        counters.latencies_ms.append((time.perf_counter() - nearest.started) * 1000)
        if found is None:
            counters.misses += 1
            trace.semantic = self._miss_reason(nearest.candidates, trace)
            return None
        counters.hits += 1
        self._hits[found[0]] += 1
        return found[1], found[2]

    def _leave_running(self, task: asyncio.Task[_Candidates | None]) -> None:
        """Lets a semantic query that an exact hit made moot finish (cancelling it would cost more)."""
        self.moot_queries.add(task)
        task.add_done_callback(self._forget_moot)

    def _forget_moot(self, task: asyncio.Task[_Candidates | None]) -> None:
        self.moot_queries.discard(task)
        if not task.cancelled():
            task.exception()  # NOTE: retrieved, so that an unexpected failure is not logged as unretrieved.

    def _first_accepted(
        self, text: str, candidates: list[Candidate], trace: _Trace
    ) -> tuple[int, CacheEntry, float] | None:
        """The most similar candidate above the threshold that the guard accepts."""
        for candidate in candidates:
            if candidate.similarity < self.threshold:
                break
            reason = guard.check(text, candidate.prompt_text) if self.cfg.guard_enabled else None
            if reason is not None:
                self.stats.guard_rejections += 1
                self.stats.guard_reasons[reason] += 1
                trace.guard_reason = trace.guard_reason or reason
                continue
            entry = self._decode(candidate.payload)
            if entry is not None:
                return candidate.id, entry, candidate.similarity
        return None

    def _miss_reason(self, candidates: list[Candidate], trace: _Trace) -> str:
        """Why no candidate was served: the guard refused one, or none was similar enough."""
        if trace.guard_reason:
            return f"semantic refused by guard: {trace.guard_reason}"
        if not candidates:
            return "semantic miss: no stored entry"
        best = candidates[0].similarity
        if best >= self.threshold:
            return "semantic miss: stored entry unreadable"
        return f"semantic miss: best similarity {best:.2f} below {self.threshold:.2f}"

    def _vector_at_hand(self, text: str, given: Vector | None) -> bool:
        """True when the request's vector needs no embedding call (given by the caller, or remembered)."""
        return given is not None or (self.embedder.name, text) in self._memo

    async def _vector(self, text: str, given: Vector | None, budget_s: float, tenant: str) -> Vector | None:
        """The request's vector: given by the caller, remembered, read from the embedding cache
        (a client embedded the same text with the embedder's model), or embedded now (None on
        failure)."""
        if given is not None:
            return given
        memo_key = (self.embedder.name, text)
        cached = self._memo.get(memo_key)
        if cached is not None:
            self._memo.move_to_end(memo_key)
            return cached
        # NOTE: a vector read from the tenant's embedding cache is not remembered: the memo serves
        # every tenant, and that vector is the tenant's.
        shared = await self._shared(text, budget_s, tenant)
        if shared is not None:
            return shared
        if budget_s <= 0 or not self.embed_breaker.allow():
            return None
        try:
            vector = await self.embedder.embed(text, budget_s)
        except Exception as exc:
            if not _blame(self.embed_breaker, exc, caller_bound=budget_s < self.cfg.embedder.timeout_s):
                self._check_soon("embedder", self._check_embedder)
            logger.debug("embedding failed: %r", exc)
            return None
        self.embed_breaker.success()
        if self.cfg.embedding_memo_size:
            self._memo[memo_key] = vector
            while len(self._memo) > self.cfg.embedding_memo_size:
                self._memo.popitem(last=False)
        return vector

    async def _shared(self, text: str, budget_s: float, tenant: str) -> Vector | None:
        """A client's vector of `text` from the embedding cache, when the embedder is the nodes'
        model (the same vectors), normalised as the embedder's are; None when there is none."""
        model = getattr(self.embedder, "node_model", None)
        if self.shared_vector is None or not model or budget_s <= 0:
            return None
        raw = await self.shared_vector(tenant, model, text, budget_s)
        if raw is None:
            return None
        vector = normalise(np.frombuffer(raw, dtype="<f4"))
        if vector.shape != (self.embedder.dims,):
            return None
        self.stats.shared_vectors += 1
        return vector

    def _namespace(self, view: RequestView) -> Namespace:
        return Namespace(view.tenant, view.model, self.embedder.name, view.context_key)

    @staticmethod
    def _decode(raw: bytes) -> CacheEntry | None:
        try:
            return CacheEntry.FromString(raw)
        except pb_message.DecodeError:
            logger.warning("dropping an undecodable cache entry")
            return None

    # -- stores ------------------------------------------------------------------------------

    async def store(
        self,
        view: RequestView,
        plan: TierPlan,
        answer: CacheEntry,
        *,
        flight_token: str,
        embedding: Vector | None,
    ) -> tuple[bool, bool]:
        """Hands the answer to waiters, then writes the tiers the plan allows; (exact, semantic) stored."""
        now = datetime.now(UTC)
        value = self._release(view, plan, answer, flight_token, now)
        stored_exact, stored_semantic = await asyncio.gather(
            self._store_exact(view, plan, value),
            self._store_semantic(view, plan, value, embedding, now),
        )
        if not stored_semantic:
            await self.backfill.defer([(view, plan, value)])
        return stored_exact, stored_semantic

    def _release(
        self, view: RequestView, plan: TierPlan, answer: CacheEntry, flight_token: str, now: datetime
    ) -> bytes:
        """Stamps the entry, hands it to the flight's waiters and returns it serialised."""
        entry = CacheEntry(payload=answer.payload, payload_type=answer.payload_type)
        entry.created_at.FromDatetime(now)
        entry.expires_at.FromDatetime(now + timedelta(seconds=plan.ttl_s))
        self.flights.complete(view.exact_key, flight_token, entry)
        return entry.SerializeToString()

    async def store_many(self, items: list[StoreItem]) -> list[tuple[bool, bool]]:
        """Store for several answers: waiters released first, one Redis pipeline for the exact tier."""
        now = datetime.now(UTC)
        values = [self._release(i.view, i.plan, i.answer, i.flight_token, now) for i in items]
        exact = [n for n, item in enumerate(items) if item.plan.store_exact]
        semantic_tasks = [
            self._store_semantic(item.view, item.plan, value, item.embedding, now)
            for item, value in zip(items, values, strict=True)
        ]
        exact_ok, semantic_ok = await asyncio.gather(
            self._store_exact_many([(items[n], values[n]) for n in exact]),
            asyncio.gather(*semantic_tasks),
        )
        await self.backfill.defer(
            [(i.view, i.plan, v) for i, v, ok in zip(items, values, semantic_ok, strict=True) if not ok]
        )
        stored_exact = [False] * len(items)
        if exact_ok:
            for n in exact:
                stored_exact[n] = True
        return list(zip(stored_exact, semantic_ok, strict=True))

    async def _store_exact_many(self, pairs: list[tuple[StoreItem, bytes]]) -> bool:
        if not pairs or not self.exact_breaker.allow():
            return False
        batch = [(i.view.tenant, i.view.model, i.view.exact_key, v, i.plan.ttl_s) for i, v in pairs]
        try:
            await bounded(self.exact.put_many(batch, announce=True), self.cfg.store_timeout_ms / 1000)
        except Exception as exc:
            self.exact_breaker.failure()
            logger.debug("exact batch store failed: %r", exc)
            return False
        self.exact_breaker.success()
        self.stats.exact.stores += len(pairs)
        return True

    async def _store_exact(self, view: RequestView, plan: TierPlan, value: bytes) -> bool:
        if not plan.store_exact or not self.exact_breaker.allow():
            return False
        try:
            await bounded(
                self.exact.put(view.tenant, view.model, view.exact_key, value, plan.ttl_s),
                self.cfg.store_timeout_ms / 1000,
            )
        except Exception as exc:
            self.exact_breaker.failure()
            logger.debug("exact store failed: %r", exc)
            return False
        self.exact_breaker.success()
        self.stats.exact.stores += 1
        return True

    async def _store_semantic(
        self, view: RequestView, plan: TierPlan, value: bytes, embedding: Vector | None, now: datetime
    ) -> bool:
        text = view.semantic_text
        if not plan.store_semantic or text is None or not self.semantic.is_open:
            return False
        if not self.semantic_breaker.allow():
            return False
        timeout_s = self.cfg.store_timeout_ms / 1000
        vector = await self._vector(text, embedding, timeout_s, view.tenant)
        if vector is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self.semantic.upsert(
                    self._namespace(view),
                    view.exact_key,
                    text,
                    vector,
                    value,
                    now,
                    now + timedelta(seconds=plan.ttl_s),
                    timeout_s,
                )
        except Exception as exc:
            self.semantic_breaker.failure()
            logger.debug("semantic store failed: %r", exc)
            return False
        self.semantic_breaker.success()
        self.stats.semantic.stores += 1
        return True

    def abandon(self, flight_token: str) -> int | None:
        """Releases a flight's waiters as misses; None when the token is unknown (or already used)."""
        return self.flights.abandon(flight_token)
