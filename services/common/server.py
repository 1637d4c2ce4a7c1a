"""Service bootstrap shared by the four services: server, standard health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import tls
from services.common.auth import Authenticator, AuthSetupError, build_authenticator, service_key
from services.common.auth_grpc import AuthInterceptor
from services.common.channels import PeerSecurity, configure_peers
from services.common.config import CorralConfig
from services.common.interceptors import ErrorAndAccessInterceptor
from services.common.logs import setup_logging
from services.common.metrics import start_metrics_server
from services.common.settings import ServiceConfig
from services.common.tracing import setup_tracing, shutdown_tracing
from services.common.wire import MalformedRequestInterceptor

logger = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]


@dataclass
class ServiceContext:
    """What a service's setup function receives.

    Attributes:
        server: The gRPC server to add servicers to.
        cfg: The whole configuration.
        service_cfg: This service's section.
        health: The standard health servicer (statuses are set by run_service).
        port: The bound gRPC port.
        tasks: Background tasks; run_service cancels them after the drain.
        on_shutdown: Callbacks run when shutdown starts, after health goes NOT_SERVING and before
            the drain (e.g. to end long-lived streams that would otherwise hold the drain).
        auth: The API-key authenticator when `auth.enabled` (the router's HTTP API shares it).
        ready: Awaited once the server has started and before it reports SERVING (NOT_SERVING until
            then; a shutdown signal ends the wait), e.g. the cache warming its embedder.
        reuse_port: The ports are shared with sibling processes (SO_REUSEPORT: the router's workers).
    """

    server: grpc.aio.Server
    cfg: CorralConfig
    service_cfg: ServiceConfig
    health: health.aio.HealthServicer
    port: int
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    auth: Authenticator | None = None
    ready: Callable[[], Awaitable[None]] | None = None
    reuse_port: bool = False


def build_server(
    service_cfg: ServiceConfig,
    service_names: Sequence[str],
    *,
    domain: str,
    access_log: bool = True,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds a grpc.aio server with the shared interceptors, standard health and reflection.

    Args:
        service_cfg: The service's section (host, port, limits, reflection).
        service_names: Full names of the services it will serve (for health and reflection).
        domain: The ErrorInfo domain, e.g. "router.corral".
        access_log: Write one access line per call.
        interceptors: Extra interceptors placed before the shared ones (e.g. tracing, auth).
        reuse_port: Share the port with sibling processes (SO_REUSEPORT). Off by default, so a port
            another process holds is an error rather than a port silently split between two servers.

    Returns:
        The server (not started), the bound port and the health servicer (every name NOT_SERVING).
    """
    options = [
        ("grpc.max_receive_message_length", service_cfg.max_message_bytes),
        ("grpc.max_send_message_length", service_cfg.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]
    if service_cfg.max_connection_age_s is not None:
        options += [
            ("grpc.max_connection_age_ms", int(service_cfg.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(service_cfg.max_connection_age_grace_s * 1000)),
        ]
    server = grpc.aio.server(
        interceptors=[
            *interceptors,
            ErrorAndAccessInterceptor(domain, access_log),
            MalformedRequestInterceptor(),
        ],
        options=options,
        maximum_concurrent_rpcs=service_cfg.max_concurrent_rpcs,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if service_cfg.enable_reflection:
        reflection.enable_server_reflection(
            [
                *service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    if service_cfg.debug_rpcs:
        server.add_generic_rpc_handlers([_debug_handler()])
    address = f"{service_cfg.host}:{service_cfg.port}"
    if service_cfg.tls is not None:
        port = server.add_secure_port(address, tls.server_credentials(service_cfg.tls))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {service_cfg.host}:{service_cfg.port}")
    return server, port, health_servicer


DEBUG_SLEEP_METHOD = "/corral.debug.DebugService/Sleep"


def _debug_handler() -> grpc.GenericRpcHandler:
    """A raw-bytes RPC that sleeps for the number of milliseconds in its ASCII payload and echoes it."""

    async def sleep(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            delay_ms = float(request.decode("ascii") or "0")
        except (UnicodeDecodeError, ValueError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payload: milliseconds as ASCII digits")
        await asyncio.sleep(min(delay_ms, 60_000) / 1000)
        return request

    handler = grpc.unary_unary_rpc_method_handler(sleep)
    return grpc.method_handlers_generic_handler("corral.debug.DebugService", {"Sleep": handler})


async def set_serving(
    health_servicer: health.aio.HealthServicer, names: Sequence[str], serving: bool
) -> None:
    """Sets the overall status ("") and each service's status."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *names):
        await health_servicer.set(name, status)


async def run_service(
    *,
    name: str,
    cfg: CorralConfig,
    service_cfg: ServiceConfig,
    service_names: Sequence[str],
    setup: Callable[[ServiceContext], Awaitable[Cleanup]],
    reuse_port: bool = False,
) -> None:
    """Runs one service until SIGTERM or SIGINT, then drains in-flight calls and returns.

    Args:
        name: The service name ("router", "cache", "health", "prewarm").
        cfg: The whole configuration.
        service_cfg: This service's section.
        service_names: Full names of the gRPC services it serves.
        setup: Adds servicers and starts background work; returns the cleanup to run at shutdown.
        reuse_port: Share the ports with sibling processes (the router's workers).
    """
    setup_logging(name, cfg.logging)
    setup_tracing(name, cfg.tracing)
    authenticator = _security_or_exit(name, cfg, service_cfg)
    auth_interceptors = [AuthInterceptor(authenticator, f"{name}.corral")] if authenticator else []
    server, port, health_servicer = build_server(
        service_cfg,
        service_names,
        domain=f"{name}.corral",
        access_log=cfg.logging.access_log,
        interceptors=auth_interceptors,
        reuse_port=reuse_port,
    )
    await set_serving(health_servicer, service_names, False)
    ctx = ServiceContext(
        server=server,
        cfg=cfg,
        service_cfg=service_cfg,
        health=health_servicer,
        port=port,
        auth=authenticator,
        reuse_port=reuse_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_runner = None
    if service_cfg.metrics_port > 0:
        metrics_runner, metrics_port = await start_metrics_server(service_cfg.host, service_cfg.metrics_port)
        logger.info("metrics on http://%s:%s/metrics", service_cfg.host, metrics_port)
    cleanup = await setup(ctx)
    await server.start()
    if ctx.ready is not None:
        await _until_ready(ctx.ready, stop)
    if not stop.is_set():
        await set_serving(health_servicer, service_names, True)
        print(f"corral-{name}: serving on {service_cfg.host}:{port}", flush=True)
        logger.info("serving on %s:%s", service_cfg.host, port)
    await stop.wait()
    logger.info("shutting down: draining in-flight calls for up to %.1f s", service_cfg.grace_s)
    # NOTE: health first, so load balancers stop sending before the listener closes.
    await health_servicer.enter_graceful_shutdown()
    for hook in ctx.on_shutdown:
        await hook()
    await server.stop(grace=service_cfg.grace_s)
    for task in ctx.tasks:
        task.cancel()
    await asyncio.gather(*ctx.tasks, return_exceptions=True)
    await cleanup()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    shutdown_tracing()
    logger.info("stopped")
    sys.stdout.flush()


async def _until_ready(ready: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Awaits `ready` unless a shutdown signal comes first (a failure is logged: the service then serves)."""
    waiting = asyncio.ensure_future(ready())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((waiting, stopping), return_when=asyncio.FIRST_COMPLETED)
    for task in (waiting, stopping):
        task.cancel()
    done = await asyncio.gather(waiting, stopping, return_exceptions=True)
    if isinstance(done[0], Exception):
        logger.error("readiness check failed: %r", done[0])


def _security_or_exit(name: str, cfg: CorralConfig, service_cfg: ServiceConfig) -> Authenticator | None:
    """Builds the authenticator and the peers' TLS and key; a bad setting exits 2 with one line."""
    try:
        authenticator = build_authenticator(cfg.auth)
        peer_tls = cfg.peer_tls if cfg.peer_tls.enabled else None
        security = PeerSecurity(tls=peer_tls, api_key=service_key(cfg.auth))
        if security.tls is not None:
            tls.channel_credentials(security.tls)
        if service_cfg.tls is not None:
            tls.check_server(service_cfg.tls, f"{name}.tls")
    except (AuthSetupError, tls.TlsSetupError) as exc:
        print(f"corral-{name}: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    configure_peers(security)
    if authenticator is not None:
        logger.info("authentication on: %d keys", len(authenticator))
    return authenticator


async def no_cleanup() -> None:
    """A cleanup that does nothing."""
