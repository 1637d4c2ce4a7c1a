"""Builds and runs the health service's gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from corral.v1 import health_service_pb2, health_service_pb2_grpc

from services.common.config import configuration_error, load_config_or_exit
from services.common.server import Cleanup, ServiceContext, build_server, run_service, set_serving
from services.common.settings import SecretError
from services.health.collector import watch_health
from services.health.config import HealthConfig
from services.health.engine import HealthEngine
from services.health.prober import Prober
from services.health.servicer import HealthServicer

logger = logging.getLogger(__name__)

SERVICE_NAMES = (health_service_pb2.DESCRIPTOR.services_by_name["HealthService"].full_name,)
DOMAIN = "health.corral"


async def setup(ctx: ServiceContext) -> Cleanup:
    """Registers the servicer and starts probing the configured nodes."""
    cfg = ctx.cfg.health
    engine = HealthEngine(cfg, Prober(cfg.probe_timeout_s))
    if cfg.shared_registry:
        try:
            dsn = ctx.cfg.postgres.resolved_dsn()
        except SecretError as exc:
            configuration_error("health", str(exc))
        engine.use_store(dsn)
    servicer = HealthServicer(engine)
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(servicer, ctx.server)
    await engine.start()
    watch_health(engine)

    async def end_watches() -> None:
        # NOTE: WatchScores and ReportOutcomes streams never end by themselves; ending them with
        # UNAVAILABLE lets the drain finish instead of waiting the whole grace period.
        engine.hub.close()
        servicer.close()

    ctx.on_shutdown.append(end_watches)
    logger.info(
        "probing %d nodes every %.1f s (timeout %.1f s)",
        len(cfg.nodes),
        cfg.probe_interval_s,
        cfg.probe_timeout_s,
    )
    return engine.stop


@dataclass
class RunningHealth:
    """An in-process health server (for tests and embedding)."""

    server: grpc.aio.Server
    port: int
    engine: HealthEngine

    async def stop(self) -> None:
        """Stops the server and the engine."""
        self.engine.hub.close()
        await self.server.stop(None)
        await self.engine.stop()


async def start_in_process(cfg: HealthConfig, *, access_log: bool = False) -> RunningHealth:
    """Builds, starts and marks SERVING a health server with the production interceptors."""
    server, port, health_servicer = build_server(cfg, SERVICE_NAMES, domain=DOMAIN, access_log=access_log)
    engine = HealthEngine(cfg, Prober(cfg.probe_timeout_s))
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(HealthServicer(engine), server)
    await engine.start()
    await server.start()
    await set_serving(health_servicer, SERVICE_NAMES, True)
    return RunningHealth(server=server, port=port, engine=engine)


async def serve() -> None:
    """Loads the configuration and runs the service until SIGTERM."""
    cfg = load_config_or_exit("health")
    await run_service(
        name="health", cfg=cfg, service_cfg=cfg.health, service_names=SERVICE_NAMES, setup=setup
    )
