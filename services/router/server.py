"""Builds and runs the router service's gRPC server."""

from __future__ import annotations

from corral.v1 import router_service_pb2, router_service_pb2_grpc

from services.common.config import load_config_or_exit
from services.common.server import Cleanup, ServiceContext, no_cleanup, run_service

SERVICE_NAMES = (router_service_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name,)


async def setup(ctx: ServiceContext) -> Cleanup:
    """Registers the servicer (RPCs answer UNIMPLEMENTED until the service is built)."""
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(
        router_service_pb2_grpc.RouterServiceServicer(),  # type: ignore[abstract]
        ctx.server,
    )
    return no_cleanup


async def serve() -> None:
    """Loads the configuration and runs the service until SIGTERM."""
    cfg = load_config_or_exit("router")
    await run_service(
        name="router", cfg=cfg, service_cfg=cfg.router, service_names=SERVICE_NAMES, setup=setup
    )
