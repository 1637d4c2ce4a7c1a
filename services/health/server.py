"""Builds and runs the health service's gRPC server."""

from __future__ import annotations

from corral.v1 import health_service_pb2, health_service_pb2_grpc

from services.common.config import load_config_or_exit
from services.common.server import Cleanup, ServiceContext, no_cleanup, run_service

SERVICE_NAMES = (health_service_pb2.DESCRIPTOR.services_by_name["HealthService"].full_name,)


async def setup(ctx: ServiceContext) -> Cleanup:
    """Registers the servicer (RPCs answer UNIMPLEMENTED until the service is built)."""
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(
        health_service_pb2_grpc.HealthServiceServicer(),  # type: ignore[abstract]
        ctx.server,
    )
    return no_cleanup


async def serve() -> None:
    """Loads the configuration and runs the service until SIGTERM."""
    cfg = load_config_or_exit("health")
    await run_service(
        name="health", cfg=cfg, service_cfg=cfg.health, service_names=SERVICE_NAMES, setup=setup
    )
