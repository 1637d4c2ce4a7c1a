"""API keys at the gRPC front: missing, wrong, roles, limits, streams, the service key and the tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from corral.v1 import health_service_pb2 as hpb
from corral.v1 import health_service_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.common.auth import Access, Authenticator, current_tenant
from services.common.auth_grpc import AuthInterceptor, access_of
from services.common.channels import PeerSecurity, make_channel
from services.common.errors import error_info
from services.common.server import build_server
from services.common.settings import ServiceConfig
from tests.security.helpers import (
    ADMIN_KEY,
    SERVICE_KEY,
    TENANT_A_KEY,
    TENANT_B_KEY,
    AuthedHealth,
    FrozenClock,
    bearer,
    key_entries,
    start_authed_health,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def health(clock: FrozenClock) -> AsyncIterator[AuthedHealth]:
    auth = Authenticator(key_entries(rate_per_s=1.0, burst=3, max_concurrent=1), clock=clock)
    running = await start_authed_health(auth)
    yield running
    await running.stop()


@pytest.fixture
async def channel(health: AuthedHealth) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(health.address) as chan:
        yield chan


async def _reason(exc: grpc.aio.AioRpcError) -> str:
    info = error_info(rpc_status.from_call(exc))
    assert info is not None, exc
    return str(info.reason)


async def test_no_key_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    stub = health_service_pb2_grpc.HealthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListNodes(hpb.ListNodesRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _reason(caught.value) == "API_KEY_MISSING"
    assert "authorization: Bearer" in (caught.value.details() or "")


async def test_wrong_key_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    stub = health_service_pb2_grpc.HealthServiceStub(channel)
    for metadata in (bearer("crl_not-a-key"), (("authorization", "Basic abc"),), bearer(SERVICE_KEY + "x")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListNodes(hpb.ListNodesRequest(), metadata=metadata, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_streams_are_refused_without_a_key(channel: grpc.aio.Channel) -> None:
    stub = health_service_pb2_grpc.HealthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.WatchScores(hpb.WatchScoresRequest(subscriber="x"), timeout=5):
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_roles(channel: grpc.aio.Channel) -> None:
    stub = health_service_pb2_grpc.HealthServiceStub(channel)
    # A tenant key never reaches an internal service.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListNodes(hpb.ListNodesRequest(), metadata=bearer(TENANT_B_KEY), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _reason(caught.value) == "SERVICE_KEY_REQUIRED"
    # The service key reads, but node administration needs the admin key.
    await stub.ListNodes(hpb.ListNodesRequest(), metadata=bearer(SERVICE_KEY), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DrainNode(hpb.DrainNodeRequest(node_id="n1"), metadata=bearer(SERVICE_KEY), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _reason(caught.value) == "ADMIN_KEY_REQUIRED"
    assert "admin" in (caught.value.details() or "")
    # With the admin key the call reaches the servicer (which does not know the node).
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DrainNode(hpb.DrainNodeRequest(node_id="n1"), metadata=bearer(ADMIN_KEY), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_standard_health_stays_open(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def _rate_server(auth: Authenticator) -> tuple[grpc.aio.Server, int]:
    """A server with a raw method under RouterService (tenant access) that answers the caller's tenant."""
    server, port, _ = build_server(
        ServiceConfig(port=0),
        (),
        domain="router.corral",
        access_log=False,
        interceptors=[AuthInterceptor(auth, "router.corral")],
    )

    async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return current_tenant().encode()

    async def hold(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield current_tenant().encode()
        await asyncio.Event().wait()

    handlers = {
        "Whoami": grpc.unary_unary_rpc_method_handler(whoami),
        "Hold": grpc.unary_stream_rpc_method_handler(hold),
    }
    generic = grpc.method_handlers_generic_handler("corral.v1.RouterService", handlers)
    server.add_generic_rpc_handlers([generic])
    await server.start()
    return server, port


async def test_tenant_comes_from_the_key_and_limits_apply(clock: FrozenClock) -> None:
    auth = Authenticator(key_entries(rate_per_s=1.0, burst=3, max_concurrent=1), clock=clock)
    server, port = await _rate_server(auth)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            whoami = chan.unary_unary("/corral.v1.RouterService/Whoami")
            hold = chan.unary_stream("/corral.v1.RouterService/Hold")
            assert await whoami(b"", metadata=bearer(TENANT_B_KEY), timeout=5) == b"tenant-b"
            assert await whoami(b"", metadata=bearer(ADMIN_KEY), timeout=5) == b"ops"

            # Concurrency: tenant A may have one call in progress; a held stream blocks a second call.
            stream = hold(b"", metadata=bearer(TENANT_A_KEY), timeout=10)
            assert await stream.read() == b"tenant-a"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await whoami(b"", metadata=bearer(TENANT_A_KEY), timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await _reason(caught.value) == "CONCURRENCY_LIMITED"
            stream.cancel()

            # Rate: the burst of 3 is spent (stream + refused call + this one); the next is refused
            # with a RetryInfo until the clock moves on by a second.
            await _until_ok(whoami, TENANT_A_KEY)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await whoami(b"", metadata=bearer(TENANT_A_KEY), timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = rpc_status.from_call(caught.value)
            assert error_info(status).reason == "RATE_LIMITED"  # type: ignore[union-attr]
            retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
            assert retry, "a rate-limit refusal carries RetryInfo"
            clock.now += 1.0
            assert await whoami(b"", metadata=bearer(TENANT_A_KEY), timeout=5) == b"tenant-a"
            # Other keys are not affected by tenant A's limits.
            assert await whoami(b"", metadata=bearer(TENANT_B_KEY), timeout=5) == b"tenant-b"
    finally:
        await server.stop(None)


async def _until_ok(call: grpc.aio.UnaryUnaryMultiCallable, key: str) -> None:
    """Retries while the cancelled stream's slot is being released (bounded)."""
    for _ in range(100):
        try:
            await call(b"", metadata=bearer(key), timeout=5)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            info = error_info(rpc_status.from_call(exc))
            assert info is not None and info.reason == "CONCURRENCY_LIMITED", info
            await asyncio.sleep(0.02)
    raise AssertionError("the slot of a cancelled stream was never released")


async def test_channels_present_the_service_key(health: AuthedHealth) -> None:
    chan = make_channel(health.address, security=PeerSecurity(api_key=SERVICE_KEY))
    try:
        stub = health_service_pb2_grpc.HealthServiceStub(chan)
        await stub.ListNodes(hpb.ListNodesRequest(), timeout=5)
        stream = stub.WatchScores(hpb.WatchScoresRequest(subscriber="svc"), timeout=5)
        first = await stream.read()
        assert first is not grpc.aio.EOF
        stream.cancel()
    finally:
        await chan.close()


def test_access_table() -> None:
    assert access_of("/corral.v1.RouterService/Generate") is Access.TENANT
    assert access_of("/corral.v1.CacheService/Lookup") is Access.SERVICE
    assert access_of("/corral.v1.CacheService/RunMaintenance") is Access.SERVICE
    assert access_of("/corral.v1.CacheService/Invalidate") is Access.ADMIN
    assert access_of("/corral.v1.HealthService/RemoveNode") is Access.ADMIN
    assert access_of("/corral.v1.PrewarmService/StartRun") is Access.ADMIN
    assert access_of("/corral.v1.PrewarmService/GetStatus") is Access.SERVICE
    assert access_of("/grpc.health.v1.Health/Check") is Access.OPEN
    assert access_of("/corral.v1.NewService/Anything") is Access.ADMIN
