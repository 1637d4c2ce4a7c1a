"""Builds and runs the cache service's gRPC server."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc
from corral.v1 import cache_service_pb2, cache_service_pb2_grpc
from psycopg.conninfo import make_conninfo

from services.cache.backfill import watch_backfill
from services.cache.collector import watch_cache
from services.cache.config import CacheConfig
from services.cache.embedders import Embedder, OllamaEmbedder, make_embedder
from services.cache.engine import CacheEngine, StoreAuthError
from services.cache.exact_store import ExactStore
from services.cache.node_feed import NodeFeed
from services.cache.semantic_store import SemanticStore
from services.cache.servicer import CacheServicer
from services.common.config import configuration_error, load_config_or_exit
from services.common.server import Cleanup, ServiceContext, build_server, run_service, set_serving
from services.common.settings import SecretError

logger = logging.getLogger(__name__)

SERVICE_NAMES = (cache_service_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name,)
DOMAIN = "cache.corral"
# NOTE: the warm-up's pauses between embedding attempts: doubling from the first, never above the last.
WARMUP_FIRST_PAUSE_S = 0.1
WARMUP_MAX_PAUSE_S = 2.0
# NOTE: while the warm-up waits, one line at INFO this often (every attempt is logged at DEBUG).
WARMUP_LOG_EVERY_S = 5.0


def build_engine(
    cfg: CacheConfig,
    redis_url: str,
    postgres_dsn: str,
    embedder: Embedder | None = None,
    *,
    redis_password: str | None = None,
    postgres_password: str | None = None,
) -> CacheEngine:
    """The engine over Redis, PostgreSQL and the configured (or given) embedder.

    The passwords, when given, replace any in the URL or the DSN.
    """
    chosen = embedder if embedder is not None else make_embedder(cfg.embedder)
    exact = ExactStore(redis_url, cfg.redis_timeout_ms / 1000, password=redis_password)
    if postgres_password is not None:
        postgres_dsn = make_conninfo(postgres_dsn, password=postgres_password)
    semantic = SemanticStore(
        postgres_dsn,
        dims=chosen.dims,
        pool_max=cfg.postgres_pool_max,
        ef_search=cfg.hnsw_ef_search,
        connect_timeout_s=max(1.0, cfg.postgres_timeout_ms / 1000 * 10),
    )
    return CacheEngine(cfg, exact, semantic, chosen)


async def warm_embedder(engine: CacheEngine) -> bool:
    """Makes one real embedding call succeed before the cache reports SERVING; True once it has.

    Whatever the embedder (nodes to reach, a model to load), readiness is the same test: one text
    embedded. Until then the embedder's breaker is held open, so lookups and stores skip the semantic
    tier at no cost (stores keep their answers for the backfill) instead of queueing behind a model
    that is still loading. Attempts are retried with a doubling pause up to
    `embedder.warmup_timeout_s`; past it the cache serves with the semantic tier degraded (the exact
    tier serves), says so, and its recovery probe keeps trying the embedder.
    """
    cfg = engine.cfg
    timeout_s = cfg.embedder.warmup_timeout_s
    if not cfg.semantic_enabled or timeout_s <= 0:
        return True
    name = engine.embedder.name
    breaker = engine.embed_breaker
    breaker.trip()
    logger.info("waiting up to %.0f s for the embedder %s to answer before serving", timeout_s, name)
    started = time.monotonic()
    deadline = started + timeout_s
    pause_s = WARMUP_FIRST_PAUSE_S
    next_log = started + WARMUP_LOG_EVERY_S
    attempts = 0
    last_error = ""
    while True:
        left = deadline - time.monotonic()
        # NOTE: the recovery probe may have reached the embedder first.
        if not breaker.degraded:
            break
        if left <= 0:
            logger.warning(
                "the embedder %s did not answer within %.0f s (%d attempts, last: %s): serving with the "
                "semantic tier degraded (exact tier only) until it answers; answers stored meanwhile "
                "wait for the backfill",
                name,
                timeout_s,
                attempts,
                last_error,
            )
            return False
        attempts += 1
        try:
            await engine.embedder.embed("warm-up", min(cfg.embedder.timeout_s, left))
        except Exception as exc:
            last_error = str(exc) or type(exc).__name__
            logger.debug("embedder warm-up attempt %d failed: %s", attempts, last_error)
            now = time.monotonic()
            if now >= next_log:
                next_log = now + WARMUP_LOG_EVERY_S
                logger.info(
                    "still waiting for the embedder %s (%.0f s so far): %s", name, now - started, last_error
                )
            await asyncio.sleep(max(0.0, min(pause_s, deadline - time.monotonic())))
            pause_s = min(pause_s * 2, WARMUP_MAX_PAUSE_S)
            continue
        breaker.success()
        break
    logger.info("embedder %s answered after %.2f s (%d attempts)", name, time.monotonic() - started, attempts)
    return True


def follow_nodes(engine: CacheEngine) -> NodeFeed | None:
    """Starts following health for the embedder's nodes when `embedder.health_addr` is set."""
    cfg = engine.cfg.embedder
    if not cfg.health_addr or not isinstance(engine.embedder, OllamaEmbedder):
        return None
    feed = NodeFeed(engine.embedder, cfg.health_addr)
    feed.start()
    return feed


async def setup(ctx: ServiceContext) -> Cleanup:
    """Starts the engine (stores that are down leave it degraded, not stopped) and registers the servicer.

    A password setting that cannot be used, or a Redis that refuses the credentials, stops the service
    with exit status 2 and one line naming the setting.
    """
    cfg = ctx.cfg.cache
    try:
        redis_password = ctx.cfg.redis.resolved_password()
        postgres_password = ctx.cfg.postgres.resolved_password()
    except SecretError as exc:
        configuration_error("cache", str(exc))
    engine = build_engine(
        cfg,
        ctx.cfg.redis.url,
        ctx.cfg.postgres.dsn,
        redis_password=redis_password,
        postgres_password=postgres_password,
    )
    try:
        await engine.start()
    except StoreAuthError as exc:
        await engine.stop()
        configuration_error("cache", str(exc))
    watch_cache(engine)
    watch_backfill(engine)
    feed = follow_nodes(engine)
    cache_service_pb2_grpc.add_CacheServiceServicer_to_server(CacheServicer(engine), ctx.server)

    async def ready() -> None:
        await warm_embedder(engine)
        logger.info(
            "embedder %s, threshold %.2f, exact tier %s, semantic tier %s",
            engine.embedder.name,
            engine.threshold,
            "degraded" if engine.exact_degraded else "up",
            "degraded" if engine.semantic_degraded else "up",
        )

    ctx.ready = ready

    async def stop() -> None:
        if feed is not None:
            await feed.stop()
        await engine.stop()

    return stop


@dataclass
class RunningCache:
    """An in-process cache server (tests and benchmarks)."""

    server: grpc.aio.Server
    port: int
    engine: CacheEngine
    feed: NodeFeed | None = None

    @property
    def address(self) -> str:
        """host:port to dial."""
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stops the server and the engine."""
        await self.server.stop(None)
        if self.feed is not None:
            await self.feed.stop()
        await self.engine.stop()


async def start_in_process(
    cfg: CacheConfig,
    redis_url: str,
    postgres_dsn: str,
    *,
    embedder: Embedder | None = None,
    access_log: bool = False,
    redis_password: str | None = None,
    postgres_password: str | None = None,
) -> RunningCache:
    """Builds and starts a cache server with the production interceptors; SERVING once its embedder
    answered (or its warm-up timed out: warm_embedder).

    Raises:
        StoreAuthError: Redis refused the credentials.
    """
    server, port, health_servicer = build_server(cfg, SERVICE_NAMES, domain=DOMAIN, access_log=access_log)
    engine = build_engine(
        cfg,
        redis_url,
        postgres_dsn,
        embedder,
        redis_password=redis_password,
        postgres_password=postgres_password,
    )
    await engine.start()
    feed = follow_nodes(engine)
    cache_service_pb2_grpc.add_CacheServiceServicer_to_server(CacheServicer(engine), server)
    await set_serving(health_servicer, SERVICE_NAMES, False)
    await server.start()
    await warm_embedder(engine)
    await set_serving(health_servicer, SERVICE_NAMES, True)
    return RunningCache(server=server, port=port, engine=engine, feed=feed)


async def serve() -> None:
    """Loads the configuration and runs the service until SIGTERM."""
    cfg = load_config_or_exit("cache")
    await run_service(name="cache", cfg=cfg, service_cfg=cfg.cache, service_names=SERVICE_NAMES, setup=setup)
