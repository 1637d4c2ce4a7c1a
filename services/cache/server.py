"""Builds and runs the cache service's gRPC server."""

from __future__ import annotations

from corral.v1 import cache_service_pb2, cache_service_pb2_grpc

from services.common.config import load_config_or_exit
from services.common.server import Cleanup, ServiceContext, no_cleanup, run_service

SERVICE_NAMES = (cache_service_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name,)


async def setup(ctx: ServiceContext) -> Cleanup:
    """Registers the servicer (RPCs answer UNIMPLEMENTED until the service is built)."""
    cache_service_pb2_grpc.add_CacheServiceServicer_to_server(
        cache_service_pb2_grpc.CacheServiceServicer(),  # type: ignore[abstract]
        ctx.server,
    )
    return no_cleanup


async def serve() -> None:
    """Loads the configuration and runs the service until SIGTERM."""
    cfg = load_config_or_exit("cache")
    await run_service(name="cache", cfg=cfg, service_cfg=cfg.cache, service_names=SERVICE_NAMES, setup=setup)
