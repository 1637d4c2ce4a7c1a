"""Builds and runs the prewarm service's gRPC server."""

from __future__ import annotations

from corral.v1 import prewarm_service_pb2, prewarm_service_pb2_grpc

from services.common.config import load_config_or_exit
from services.common.server import Cleanup, ServiceContext, run_service
from services.prewarm.app import PrewarmApp
from services.prewarm.collector import watch_prewarm
from services.prewarm.servicer import PrewarmServicer

SERVICE_NAMES = (prewarm_service_pb2.DESCRIPTOR.services_by_name["PrewarmService"].full_name,)


async def setup(ctx: ServiceContext) -> Cleanup:
    """Registers the servicer and starts the background work (health stream, triggers, start-up run)."""
    app = PrewarmApp(ctx.cfg.prewarm)
    watch_prewarm(app.manager)
    servicer = PrewarmServicer(app.manager, lambda: app.triggers.next_scheduled_at_s, app.required.states)
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
