"""Answers whose semantic entry could not be written wait in Redis; maintenance gives them one later.

While the embedder or PostgreSQL is down (or the embedder is still warming up), a stored answer gets
its exact entry but no semantic one. Instead of losing it to the semantic tier, the store path
records it as pending: a Redis hash named like its exact entry (`cxp:...`, see exact_store) holding
what its semantic entry needs (tenant, model, context, question, the stamped entry), kept as long as
the answer lives, and its name in a sorted set by arrival. A maintenance run (RunMaintenance, which
prewarm calls on its schedule) embeds and writes up to `backfill_batch` of them, oldest first, once
the embedder and PostgreSQL answer.

Redis, not PostgreSQL, holds them: PostgreSQL may be the store that is down. A backfill is
idempotent: the semantic table keeps one entry per request (an upsert that never replaces an entry
created later), and a record leaves the queue only once written, expired or invalidated. At most
`backfill_max_pending` wait; past that the oldest are dropped (and counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from corral.v1 import cache_service_pb2
from google.protobuf import message as pb_message
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.cache.exact_store import bounded, pending_key
from services.cache.keys import RequestView, TierPlan
from services.cache.semantic_store import Namespace
from services.common import collectors

if TYPE_CHECKING:
    from services.cache.engine import CacheEngine

logger = logging.getLogger(__name__)

# NOTE: embedding calls of one backfill in flight at once (each micro-batch of the embedder is one call).
_EMBED_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class BackfillReport:
    """What one backfill run did.

    Attributes:
        backfilled: Answers that got their semantic entry.
        expired: Queued answers that had expired or been invalidated (removed from the queue).
        pending: Answers still waiting afterwards (-1 when Redis could not be asked).
        stopped: Why the run stopped early ("" when it went through its batch).
    """

    backfilled: int
    expired: int
    pending: int
    stopped: str = ""


class Backfill:
    """Records answers whose semantic entry is missing, and writes those entries later."""

    def __init__(self, engine: CacheEngine) -> None:
        self._engine = engine
        self.deferred = 0
        self.backfilled = 0
        self.dropped = 0
        self.lost = 0
        self._running = asyncio.Lock()

    def wanted(self, view: RequestView, plan: TierPlan) -> bool:
        """Whether the answer should have had a semantic entry."""
        return self._engine.cfg.semantic_enabled and plan.store_semantic and view.semantic_text is not None

    async def defer(self, items: Sequence[tuple[RequestView, TierPlan, bytes]]) -> None:
        """Queues answers whose semantic entry was not written, in one Redis round trip (never raises;
        best effort)."""
        engine = self._engine
        cfg = engine.cfg
        wanted = [(v, p, value) for v, p, value in items if self.wanted(v, p)]
        if not wanted:
            return
        # NOTE: degraded, not allow(): a record must not take the trial call a lookup would make.
        if cfg.backfill_max_pending == 0 or engine.exact_breaker.degraded:
            self.lost += len(wanted)
            return
        records: list[tuple[str, dict[str, str | bytes], float]] = [
            (
                pending_key(view.tenant, view.model, view.exact_key),
                {
                    "tenant": view.tenant,
                    "model": view.model,
                    "key": view.exact_key,
                    "context": view.context_key,
                    "text": view.semantic_text or "",
                    "entry": value,
                },
                plan.ttl_s,
            )
            for view, plan, value in wanted
        ]
        try:
            dropped = await bounded(
                engine.exact.add_pending(records, time.time(), cfg.backfill_max_pending),
                cfg.store_timeout_ms / 1000,
            )
        except Exception as exc:
            self.lost += len(records)
            logger.debug("pending semantic entries not recorded: %r", exc)
            return
        self.deferred += len(records)
        if dropped:
            self.dropped += dropped
            logger.warning(
                "%d answers waiting for their semantic entry dropped: over backfill_max_pending (%d)",
                dropped,
                cfg.backfill_max_pending,
            )

    async def pending(self) -> int:
        """Answers waiting (-1 when Redis does not answer)."""
        engine = self._engine
        if engine.exact_breaker.degraded:
            return -1
        try:
            return await bounded(engine.exact.pending_count(), engine.cfg.redis_timeout_ms / 1000 * 4)
        except Exception as exc:
            logger.debug("pending semantic entries unknown: %r", exc)
            return -1

    async def run(self, limit: int | None = None) -> BackfillReport:
        """Writes the semantic entries of up to `limit` (backfill_batch) waiting answers, oldest first.

        Stops at the first embedding or PostgreSQL failure (what is left waits for the next run);
        one run at a time per process.
        """
        async with self._running:
            return await self._run(self._engine.cfg.backfill_batch if limit is None else limit)

    async def _run(self, limit: int) -> BackfillReport:
        engine = self._engine
        timeout_s = engine.cfg.store_timeout_ms / 1000
        if limit <= 0:
            return BackfillReport(0, 0, await self.pending(), "backfill_batch is 0")
        if not engine.semantic.is_open or engine.semantic_breaker.degraded:
            return BackfillReport(0, 0, await self.pending(), "the semantic tier (PostgreSQL) is down")
        try:
            queued = await bounded(engine.exact.oldest_pending(limit), timeout_s)
        except Exception as exc:
            engine.exact_breaker.failure()
            return BackfillReport(0, 0, -1, f"the exact tier (Redis) is down: {type(exc).__name__}")
        now = datetime.now(UTC)
        gone: list[bytes] = []
        work: list[tuple[bytes, dict[bytes, bytes], cache_service_pb2.CacheEntry]] = []
        for name, record in queued:
            entry = _entry(record)
            if entry is None or entry.expires_at.ToDatetime(tzinfo=UTC) <= now:
                gone.append(name)
            else:
                work.append((name, record, entry))
        done: list[bytes] = []
        stopped = ""
        limit_embeds = asyncio.Semaphore(_EMBED_CONCURRENCY)

        async def one(name: bytes, record: dict[bytes, bytes], entry: cache_service_pb2.CacheEntry) -> None:
            nonlocal stopped
            async with limit_embeds:
                if stopped:
                    return
                try:
                    text = record[b"text"].decode()
                    vector = await engine.embedder.embed(text, engine.cfg.embedder.timeout_s)
                except Exception as exc:
                    engine.embed_breaker.failure()
                    stopped = stopped or f"the embedder {engine.embedder.name} failed: {exc}"
                    return
                engine.embed_breaker.success()
                ns = Namespace(
                    record[b"tenant"].decode(),
                    record[b"model"].decode(),
                    engine.embedder.name,
                    record[b"context"].decode(),
                )
                try:
                    async with asyncio.timeout(timeout_s):
                        await engine.semantic.upsert(
                            ns,
                            record[b"key"].decode(),
                            record[b"text"].decode(),
                            vector,
                            record[b"entry"],
                            entry.created_at.ToDatetime(tzinfo=UTC),
                            entry.expires_at.ToDatetime(tzinfo=UTC),
                            timeout_s,
                            keep_newer=True,
                        )
                except Exception as exc:
                    engine.semantic_breaker.failure()
                    stopped = stopped or f"the semantic tier (PostgreSQL) failed: {type(exc).__name__}"
                    return
                done.append(name)

        await asyncio.gather(*(one(*item) for item in work))
        try:
            await bounded(engine.exact.drop_pending([*gone, *done]), timeout_s)
        except Exception as exc:
            # NOTE: they stay queued; the next run writes them again, which changes nothing.
            logger.debug("backfilled entries not unqueued: %r", exc)
        self.backfilled += len(done)
        engine.stats.semantic.stores += len(done)
        report = BackfillReport(len(done), len(gone), await self.pending(), stopped)
        if done or gone or stopped:
            logger.info(
                "backfill: %d semantic entries written, %d expired, %d still waiting%s",
                report.backfilled,
                report.expired,
                report.pending,
                f" (stopped: {stopped})" if stopped else "",
            )
        return report


def _entry(record: dict[bytes, bytes]) -> cache_service_pb2.CacheEntry | None:
    """The stamped entry of a complete record; None for a record that expired (or is malformed)."""
    if not all(k in record for k in (b"tenant", b"model", b"key", b"context", b"text", b"entry")):
        return None
    try:
        entry = cache_service_pb2.CacheEntry.FromString(record[b"entry"])
    except pb_message.DecodeError:
        return None
    return entry if entry.HasField("expires_at") and entry.HasField("created_at") else None


class BackfillCollector(Collector):
    """The backfill's counters and the embedder's state for Prometheus."""

    def __init__(self, engine: CacheEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        backfill = self._engine.backfill
        counts = CounterMetricFamily(
            "corral_cache_backfill_entries",
            "Answers whose semantic entry waited for the backfill, by what became of them "
            "(deferred, backfilled, dropped over backfill_max_pending, lost: Redis down too).",
            labels=["result"],
        )
        for result, value in (
            ("deferred", backfill.deferred),
            ("backfilled", backfill.backfilled),
            ("dropped", backfill.dropped),
            ("lost", backfill.lost),
        ):
            counts.add_metric([result], value)
        yield counts
        yield GaugeMetricFamily(
            "corral_cache_embedder_up",
            "1 when the embedder answers, 0 while it is down or still warming up.",
            0.0 if self._engine.embed_breaker.degraded else 1.0,
        )


def watch_backfill(engine: CacheEngine) -> None:
    """Exports the backfill's counters and the embedder's state."""
    collectors.install("cache-backfill", BackfillCollector(engine))
