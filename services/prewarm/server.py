"""Builds and runs the prewarm service's gRPC server."""

from __future__ import annotations

from corral.v1 import prewarm_service_pb2, prewarm_service_pb2_grpc

from services.common.config import configuration_error, load_config_or_exit
from services.common.server import Cleanup, ServiceContext, run_service
from services.common.settings import SecretError
from services.prewarm.app import PrewarmApp
from services.prewarm.collector import watch_prewarm
from services.prewarm.servicer import PrewarmServicer

SERVICE_NAMES = (prewarm_service_pb2.DESCRIPTOR.services_by_name["PrewarmService"].full_name,)


async def setup(ctx: ServiceContext) -> Cleanup:
    """Registers the servicer and starts the background work (health stream, election; the leader's
    triggers and start-up run)."""
    cfg = ctx.cfg.prewarm
    dsn = None
    if cfg.leader_election:
        try:
            dsn = ctx.cfg.postgres.resolved_dsn()
        except SecretError as exc:
            configuration_error("prewarm", str(exc))
    app = PrewarmApp(cfg, dsn=dsn)
    watch_prewarm(app.manager, app.leadership)
    servicer = PrewarmServicer(app.manager, app.next_scheduled_at, app.required.states, app.leadership)
    prewarm_service_pb2_grpc.add_PrewarmServiceServicer_to_server(servicer, ctx.server)
    await app.start()
    # NOTE: before the drain, so StartRun streams end with the run's last event instead of holding
    # the drain for the whole grace period.
    ctx.on_shutdown.append(app.stop_runs)
    return app.close


async def serve() -> None:
    """Loads the configuration and runs the service until SIGTERM."""
    cfg = load_config_or_exit("prewarm")
    await run_service(
        name="prewarm", cfg=cfg, service_cfg=cfg.prewarm, service_names=SERVICE_NAMES, setup=setup
    )
