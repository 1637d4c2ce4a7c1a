"""Test launcher: the router service with the HTTP API started beside it (until server.py does it)."""

from __future__ import annotations

import uvloop
from corral.v1 import router_service_pb2_grpc

from services.common.config import load_config_or_exit
from services.common.server import Cleanup, ServiceContext, run_service
from services.router import server as router_server
from services.router.config import RouterConfig
from services.router.http import start_http_server
from services.router.servicer import RouterServicer


async def _setup(ctx: ServiceContext) -> Cleanup:
    cfg = ctx.service_cfg
    assert isinstance(cfg, RouterConfig)
    runtime = await router_server.start_router(cfg)
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(runtime.core), ctx.server)
    runner, port = await start_http_server(runtime.core, cfg)
    print(f"corral-router: http api on {cfg.host}:{port}", flush=True)

    async def cleanup() -> None:
        await runner.cleanup()
        await runtime.close()

    return cleanup


async def _serve() -> None:
    cfg = load_config_or_exit("router")
    await run_service(
        name="router",
        cfg=cfg,
        service_cfg=cfg.router,
        service_names=router_server.SERVICE_NAMES,
        setup=_setup,
    )


if __name__ == "__main__":
    uvloop.run(_serve())
