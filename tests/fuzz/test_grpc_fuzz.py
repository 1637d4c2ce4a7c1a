"""Fuzzing every gRPC RPC (hypothesis): no input yields INTERNAL/UNKNOWN or a hang; every refusal says why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from corral.v1 import (
    cache_service_pb2,
    cache_service_pb2_grpc,
    health_service_pb2,
    prewarm_service_pb2,
    router_service_pb2,
)
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import error_info
from tests.fuzz.conftest import examples
from tests.fuzz.protostrategies import requests_of
from tests.fuzz.servers import MAX_MESSAGE_BYTES, Servers

pytestmark = [pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]

SERVICES = {
    "router": router_service_pb2.DESCRIPTOR.services_by_name["RouterService"],
    "cache": cache_service_pb2.DESCRIPTOR.services_by_name["CacheService"],
    "health": health_service_pb2.DESCRIPTOR.services_by_name["HealthService"],
    "prewarm": prewarm_service_pb2.DESCRIPTOR.services_by_name["PrewarmService"],
}
METHODS = [(name, m) for name, service in SERVICES.items() for m in service.methods]
# NOTE: codes that mean "the server broke", never an answer to bad input.
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
# NOTE: codes that mean the call got no answer in time: a server that hangs on its input. Every call
# here is answered promptly, bad input included: the node is a no-delay simulator and nothing else
# loads the servers (the slowest call of a run, a prewarm StartRun, took ~0.4 s), so no input has a
# legitimate reason to run into the 5 s deadline, which only a hang reaches.
HANGS = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
CALL_TIMEOUT_S = 5.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def channels(servers: Servers) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {name: grpc.aio.insecure_channel(servers.address(name)) for name in SERVICES}
    yield opened
    for channel in opened.values():
        await channel.close()


def _path(service: str, method: MethodDescriptor) -> str:
    return f"/{SERVICES[service].full_name}/{method.name}"


async def invoke(
    channel: grpc.aio.Channel, path: str, method: MethodDescriptor, payloads: list[bytes]
) -> None:
    """Calls a method with serialized request(s); reads a bounded part of a response stream."""
    output = GetMessageClass(method.output_type)
    if not method.client_streaming and not method.server_streaming:
        call = channel.unary_unary(path, response_deserializer=output.FromString)
        await _release_flights(channel, await call(payloads[0], timeout=CALL_TIMEOUT_S))
    elif method.client_streaming and not method.server_streaming:
        client_stream = channel.stream_unary(path, response_deserializer=output.FromString)
        await client_stream(iter(payloads), timeout=CALL_TIMEOUT_S)
    else:
        stream = channel.unary_stream(path, response_deserializer=output.FromString)(
            payloads[0], timeout=CALL_TIMEOUT_S
        )
        try:
            for _ in range(200):
                item = await stream.read()
                if item is grpc.aio.EOF:
                    break
                # NOTE: WatchScores never ends by itself; its first snapshot is enough.
                if method.name == "WatchScores":
                    break
        finally:
            stream.cancel()


async def _release_flights(channel: grpc.aio.Channel, reply: object) -> None:
    """Gives back the single-flight leases a lookup handed out, as a well-behaved client does.

    A client that becomes a key's leader must Store or AbandonFlight. Without this, an identical
    lookup drawn later (hypothesis repeats examples) waits for a leader that never answers: up to its
    deadline, by design, which is no hang but which this suite could not tell from one.
    """
    if isinstance(reply, cache_service_pb2.LookupBatchResponse):
        tokens = [r.flight_token for r in reply.results if r.flight_token]
    elif isinstance(reply, cache_service_pb2.LookupResponse):
        tokens = [reply.flight_token] if reply.flight_token else []
    else:
        return
    cache = cache_service_pb2_grpc.CacheServiceStub(channel)
    for token in tokens:
        await cache.AbandonFlight(
            cache_service_pb2.AbandonFlightRequest(flight_token=token), timeout=CALL_TIMEOUT_S
        )


def check_status(exc: grpc.aio.AioRpcError, path: str) -> None:
    """The property: a refusal is a client-side code with a message that names the problem."""
    code = exc.code()
    assert code not in SERVER_FAULTS, f"{path}: {code.name}: {exc.details()}"
    assert code not in HANGS, (
        f"{path}: no answer within {CALL_TIMEOUT_S} s ({code.name}): it hangs on this input"
    )
    assert exc.details(), f"{path}: {code.name} without a message"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        info = error_info(rpc_status.from_call(exc))
        assert info is not None, f"{path}: INVALID_ARGUMENT without ErrorInfo: {exc.details()}"
        assert info.metadata.get("field") or info.reason != "INVALID_ARGUMENT", exc.details()


async def _call_checked(
    channel: grpc.aio.Channel, path: str, method: MethodDescriptor, payloads: list[bytes]
) -> None:
    try:
        await invoke(channel, path, method, payloads)
    except grpc.aio.AioRpcError as exc:
        check_status(exc, path)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
@settings(max_examples=examples(0.6, 10))
@given(data=st.data())
async def test_structured_requests(
    channels: dict[str, grpc.aio.Channel], service: str, method: MethodDescriptor, data: st.DataObject
) -> None:
    request_type = GetMessageClass(method.input_type)
    count = data.draw(st.integers(min_value=0, max_value=3)) if method.client_streaming else 1
    messages = [data.draw(requests_of(request_type)) for _ in range(count)]
    payloads = [m.SerializeToString() for m in messages]
    if sum(len(p) for p in payloads) > MAX_MESSAGE_BYTES:
        return
    await _call_checked(channels[service], _path(service, method), method, payloads)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
@settings(max_examples=examples(0.25, 5))
@given(raw=st.lists(st.binary(max_size=120), min_size=1, max_size=3))
async def test_wire_garbage(
    channels: dict[str, grpc.aio.Channel], service: str, method: MethodDescriptor, raw: list[bytes]
) -> None:
    payloads = raw if method.client_streaming else raw[:1]
    await _call_checked(channels[service], _path(service, method), method, payloads)


@pytest.mark.parametrize("service", list(SERVICES))
async def test_oversized_messages_are_refused_by_size(
    channels: dict[str, grpc.aio.Channel], service: str
) -> None:
    method = SERVICES[service].methods[0]
    huge = b"\x0a" + b"\xff\xff\xff\x02" + b"x" * (MAX_MESSAGE_BYTES + 10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await invoke(channels[service], _path(service, method), method, [huge])
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (caught.value.details() or "")


async def test_servers_still_serve_afterwards(
    servers: Servers, channels: dict[str, grpc.aio.Channel]
) -> None:
    for name, channel in channels.items():
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    assert servers.node.stats()["requests_total"] > 0
