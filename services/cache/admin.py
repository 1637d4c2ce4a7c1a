"""Administrative operations of the cache: invalidation, statistics and semantic-tier maintenance."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from services.cache.engine import CacheEngine
from services.cache.exact_store import PENDING_PREFIX
from services.cache.stats import TierCounters
from services.common.errors import Unavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TierReport:
    """One tier's counters plus its current size."""

    counters: TierCounters
    entries: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class StatsReport:
    """Everything the Stats RPC returns."""

    exact: TierReport
    semantic: TierReport
    coalesced: int
    guard_rejections: int
    degraded_lookups: int
    exact_degraded: bool
    semantic_degraded: bool
    embedder: str
    embedder_degraded: bool = False
    backfill_pending: int = 0
    backfilled: int = 0


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What maintenance did (backfill_pending is -1 when Redis could not be asked)."""

    removed: int
    vacuumed: bool
    remaining: int
    duration_s: float
    backfilled: int = 0
    backfill_pending: int = 0
    backfill_stopped: str = ""


class CacheAdmin:
    """Invalidate, Stats and RunMaintenance over the engine's stores.

    Unlike lookups these do not fail open: an invalidation that could not reach a store must say
    so (UNAVAILABLE), or the caller would believe stale answers were gone.
    """

    def __init__(self, engine: CacheEngine) -> None:
        self._engine = engine
        self._timeout_s = engine.cfg.store_timeout_ms / 1000

    async def invalidate(self, tenant: str | None, model: str | None, key: str | None) -> tuple[int, int]:
        """Removes the selected entries from both tiers; returns (exact, semantic) removed."""
        engine = self._engine
        try:
            async with asyncio.timeout(self._timeout_s * 5):
                exact_removed = await engine.exact.delete_matching(tenant, model, key)
                # NOTE: answers waiting for their semantic entry go too (or the backfill brings them back).
                await engine.exact.delete_matching(tenant, model, key, prefix=PENDING_PREFIX)
        except Exception as exc:
            engine.exact_breaker.failure()
            raise Unavailable(f"exact tier (Redis) unreachable: {type(exc).__name__}") from exc
        if not engine.semantic.is_open:
            raise Unavailable("semantic tier (PostgreSQL) unreachable")
        try:
            async with asyncio.timeout(self._timeout_s * 5):
                semantic_removed = await engine.semantic.delete(tenant, model, key, self._timeout_s)
        except Exception as exc:
            engine.semantic_breaker.failure()
            raise Unavailable(f"semantic tier (PostgreSQL) unreachable: {type(exc).__name__}") from exc
        logger.info(
            "invalidated tenant=%s model=%s key=%s: %d exact, %d semantic",
            tenant,
            model,
            key,
            exact_removed,
            semantic_removed,
        )
        return exact_removed, semantic_removed

    async def stats(self, tenant: str | None) -> StatsReport:
        """Counters since start, and current sizes where the stores answer (0 where they do not)."""
        engine = self._engine
        exact_entries = exact_bytes = semantic_entries = semantic_bytes = 0
        if not engine.exact_degraded:
            try:
                async with asyncio.timeout(self._timeout_s):
                    exact_entries = await engine.exact.count(tenant)
                    exact_bytes = await engine.exact.used_memory_bytes() if tenant is None else 0
            except Exception as exc:
                logger.debug("exact tier size unknown: %r", exc)
        if engine.semantic.is_open and not engine.semantic_breaker.degraded:
            try:
                async with asyncio.timeout(self._timeout_s):
                    semantic_entries, semantic_bytes = await engine.semantic.count(tenant, self._timeout_s)
            except Exception as exc:
                logger.debug("semantic tier size unknown: %r", exc)
        stats = engine.stats
        return StatsReport(
            exact=TierReport(stats.exact, exact_entries, exact_bytes),
            semantic=TierReport(stats.semantic, semantic_entries, 0 if tenant else semantic_bytes),
            coalesced=stats.coalesced,
            guard_rejections=stats.guard_rejections,
            degraded_lookups=stats.degraded_lookups,
            exact_degraded=engine.exact_degraded,
            semantic_degraded=engine.semantic_degraded,
            embedder=engine.embedder.name,
            embedder_degraded=engine.embed_breaker.degraded,
            backfill_pending=await engine.backfill.pending(),
            backfilled=engine.backfill.backfilled,
        )

    async def maintenance(self, max_age_s: float | None, vacuum: bool) -> MaintenanceReport:
        """Deletes expired (and, with max_age_s, old) semantic entries, gives up to `backfill_batch`
        answers stored while the semantic tier or the embedder was down their semantic entries
        (services/cache/backfill.py), and optionally vacuums."""
        engine = self._engine
        started = time.perf_counter()
        if not engine.semantic.is_open:
            raise Unavailable("semantic tier (PostgreSQL) unreachable")
        # NOTE: maintenance is a batch job: it gets far more time than a lookup.
        timeout_s = max(self._timeout_s * 30, 60.0)
        try:
            async with asyncio.timeout(timeout_s):
                removed = await engine.semantic.expire(max_age_s, timeout_s)
                backfill = await engine.backfill.run()
                if vacuum:
                    await engine.semantic.vacuum(timeout_s)
                remaining, _ = await engine.semantic.count(None, timeout_s)
        except Exception as exc:
            engine.semantic_breaker.failure()
            raise Unavailable(f"semantic tier (PostgreSQL) unreachable: {type(exc).__name__}") from exc
        duration_s = time.perf_counter() - started
        logger.info(
            "maintenance removed %d entries, backfilled %d (%d waiting), vacuum=%s, in %.2f s",
            removed,
            backfill.backfilled,
            backfill.pending,
            vacuum,
            duration_s,
        )
        return MaintenanceReport(
            removed=removed,
            vacuumed=vacuum,
            remaining=remaining,
            duration_s=duration_s,
            backfilled=backfill.backfilled,
            backfill_pending=backfill.pending,
            backfill_stopped=backfill.stopped,
        )
