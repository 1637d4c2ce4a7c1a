"""The PrewarmService over gRPC: progress streams, joining, refusal, status, bad input, peers down."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from corral.v1 import (
    common_pb2,
    prewarm_service_pb2,
    prewarm_service_pb2_grpc,
    router_service_pb2,
    router_service_pb2_grpc,
)
from grpc_status import rpc_status

from services.common.errors import error_info
from services.common.server import build_server
from services.common.settings import ServiceConfig
from services.prewarm.app import PrewarmApp
from services.prewarm.config import PrewarmConfig
from services.prewarm.server import SERVICE_NAMES
from services.prewarm.servicer import PrewarmServicer
from tests.helpers.procs import ServiceProcess, free_port

WAIT_S = 10.0
pb = prewarm_service_pb2


class GatedRouter(router_service_pb2_grpc.RouterServiceServicer):
    """A router peer that holds every Generate until released and records the requests."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()
        self.requests: list[router_service_pb2.GenerateRequest] = []

    async def Generate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.requests.append(request)
        self.arrived.set()
        await self.gate.wait()
        return router_service_pb2.GenerateResponse(
            model=request.spec.model,
            response="ok",
            routing=common_pb2.RoutingInfo(node_id="n1", cache_outcome=common_pb2.CACHE_OUTCOME_MISS),
        )


@pytest.fixture
async def router() -> AsyncIterator[tuple[GatedRouter, str]]:
    server = grpc.aio.server()
    # NOTE: only Generate is implemented; the other RPCs keep the generated UNIMPLEMENTED bodies.
    servicer = GatedRouter()  # type: ignore[abstract]
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    servicer.gate.set()
    await server.stop(None)


async def serve_app(cfg: PrewarmConfig) -> tuple[grpc.aio.Server, PrewarmApp, grpc.aio.Channel]:
    app = PrewarmApp(cfg)
    server, port, _ = build_server(ServiceConfig(), SERVICE_NAMES, domain="prewarm.corral", access_log=False)
    servicer = PrewarmServicer(app.manager, lambda: app.triggers.next_scheduled_at_s)
    prewarm_service_pb2_grpc.add_PrewarmServiceServicer_to_server(servicer, server)
    await app.start()
    await server.start()
    return server, app, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: `await service(**config fields)` serves a prewarm app; every peer is down by default."""
    started: list[tuple[grpc.aio.Server, PrewarmApp, grpc.aio.Channel]] = []

    async def factory(**fields: Any) -> prewarm_service_pb2_grpc.PrewarmServiceStub:
        seeds = tmp_path / "seeds.yaml"
        seeds.write_text("models:\n  llama3.2:1b:\n    - How do I reset my password?\n    - What is a 503?\n")
        dead = f"127.0.0.1:{free_port()}"
        base = {
            "health_addr": dead,
            "router_addr": dead,
            "cache_addr": dead,
            "run_on_start": False,
            "health_wait_s": 0.2,
            "seed_file": str(seeds),
            "concurrency": 1,
        }
        cfg = PrewarmConfig.model_validate({**base, **fields})
        trio = await serve_app(cfg)
        started.append(trio)
        return prewarm_service_pb2_grpc.PrewarmServiceStub(trio[2])

    yield factory
    for server, app, channel in started:
        await channel.close()
        await server.stop(None)
        await app.close()


async def events_of(call: Any) -> list[pb.ProgressEvent]:
    async with asyncio.timeout(WAIT_S):
        return [reply.event async for reply in call]


async def test_peers_down_the_service_serves_and_every_step_fails_clearly(service) -> None:
    stub = await service()
    events = await events_of(stub.StartRun(pb.StartRunRequest()))
    failed = [e for e in events if e.outcome == pb.STEP_OUTCOME_FAILED and not e.run_finished]
    steps = [e.step for e in failed]
    assert steps.count(pb.PREWARM_STEP_WARM_MODELS) == 1 and "health" in failed[0].message
    assert steps.count(pb.PREWARM_STEP_SEED_CACHE) == 2
    assert steps.count(pb.PREWARM_STEP_MAINTENANCE) == 1
    assert events[-1].run_finished and events[-1].outcome == pb.STEP_OUTCOME_FAILED
    status = await stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    [last] = status.recent
    assert last.state == pb.RUN_STATE_FAILED and last.trigger == pb.RUN_TRIGGER_MANUAL
    assert last.failed == 4 and len(last.errors) == 4 and last.HasField("finished_at")
    assert last.maintenance_report.startswith("maintenance failed")
    assert not status.HasField("current") and status.HasField("next_scheduled_at")


async def test_second_run_is_refused_naming_the_first_or_joins_its_stream(service, router) -> None:
    gated, router_addr = router
    stub = await service(router_addr=router_addr)
    first = stub.StartRun(pb.StartRunRequest(steps=[pb.PREWARM_STEP_SEED_CACHE]))
    first_events = asyncio.create_task(events_of(first))
    async with asyncio.timeout(WAIT_S):
        await gated.arrived.wait()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await events_of(stub.StartRun(pb.StartRunRequest()))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = await stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert status.current.state == pb.RUN_STATE_RUNNING
    assert status.current.run_id in refused.value.details()
    info = error_info(rpc_status.from_call(refused.value))
    assert info is not None and info.reason == "RUN_IN_PROGRESS" and info.domain == "prewarm.corral"
    # NOTE: the joiner's first event (the first run's, replayed) shows it has joined; the gate opens only
    # then, or on a busy machine the first run could end before the join arrives and a new run start.
    joined = stub.StartRun(pb.StartRunRequest(join_if_running=True))
    async with asyncio.timeout(WAIT_S):
        theirs = [(await joined.read()).event]
    gated.gate.set()
    ours = await first_events
    async with asyncio.timeout(WAIT_S):
        while (reply := await joined.read()) is not grpc.aio.EOF:
            theirs.append(reply.event)
    assert [e.SerializeToString() for e in ours] == [e.SerializeToString() for e in theirs]
    assert {e.run_id for e in ours} == {status.current.run_id}
    ok = [e for e in ours if e.outcome == pb.STEP_OUTCOME_OK and not e.run_finished]
    assert [e.done for e in ok] == [1, 2] and all(e.total == 2 for e in ok)
    assert ok[0].node_id == "n1" and ok[0].HasField("duration")
    # Seeding went through the router at background priority with the default cache mode.
    assert len(gated.requests) == 2
    for request in gated.requests:
        assert request.priority == common_pb2.PRIORITY_BACKGROUND
        assert request.cache.mode == common_pb2.CACHE_MODE_UNSPECIFIED
    assert {r.spec.prompt for r in gated.requests} == {"How do I reset my password?", "What is a 503?"}


async def test_concurrency_limit_holds_seeding_requests(service, router) -> None:
    gated, router_addr = router
    stub = await service(router_addr=router_addr, concurrency=1)
    call = stub.StartRun(pb.StartRunRequest(steps=[pb.PREWARM_STEP_SEED_CACHE]))
    collector = asyncio.create_task(events_of(call))
    async with asyncio.timeout(WAIT_S):
        await gated.arrived.wait()
    # NOTE: the second query waits for the limit; give it every chance to (wrongly) go out.
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(gated.requests) == 1
    gated.gate.set()
    await collector
    assert len(gated.requests) == 2


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.StartRunRequest(steps=[pb.PREWARM_STEP_UNSPECIFIED]), "steps[0]"),
        (pb.StartRunRequest(steps=[pb.PREWARM_STEP_WARM_MODELS, pb.PrewarmStep.ValueType(9)]), "steps[1]"),
        (pb.StartRunRequest(node_ids=["a", " "]), "node_ids[1]"),
        (pb.StartRunRequest(models=[""]), "models[0]"),
        (pb.StartRunRequest(steps=[pb.PREWARM_STEP_MAINTENANCE], node_ids=["a"]), "node_ids"),
    ],
)
async def test_bad_start_requests_name_the_field(service, request_: pb.StartRunRequest, field: str) -> None:
    stub = await service()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await events_of(stub.StartRun(request_))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")


async def test_status_limit_is_checked(service) -> None:
    stub = await service()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetStatus(pb.GetStatusRequest(limit=-1), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in err.value.details()


async def test_service_process_serves_with_every_peer_down(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = {
        "CORRAL_PREWARM__PORT": "0",
        "CORRAL_PREWARM__HEALTH_ADDR": dead,
        "CORRAL_PREWARM__ROUTER_ADDR": dead,
        "CORRAL_PREWARM__CACHE_ADDR": dead,
        "CORRAL_PREWARM__HEALTH_WAIT_S": "0.2",
    }
    async with ServiceProcess("services.prewarm", env=env) as proc:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
            stub = prewarm_service_pb2_grpc.PrewarmServiceStub(channel)
            # The start-up run is in progress or done: join it (or start one) and follow it to its end.
            events = await events_of(stub.StartRun(pb.StartRunRequest(join_if_running=True)))
            assert events[-1].run_finished
            status = await stub.GetStatus(pb.GetStatusRequest(), timeout=5)
            assert status.recent and status.recent[0].state == pb.RUN_STATE_FAILED
            assert any("health" in e for e in status.recent[-1].errors)
        assert await proc.terminate() == 0


async def test_sigterm_ends_the_run_in_progress_and_its_streams() -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = {
        "CORRAL_PREWARM__PORT": "0",
        "CORRAL_PREWARM__HEALTH_ADDR": dead,
        "CORRAL_PREWARM__ROUTER_ADDR": dead,
        "CORRAL_PREWARM__CACHE_ADDR": dead,
        # NOTE: the start-up run waits this long for health, so it is still running at SIGTERM.
        "CORRAL_PREWARM__HEALTH_WAIT_S": "60",
        "CORRAL_PREWARM__GRACE_S": "30",
    }
    async with ServiceProcess("services.prewarm", env=env) as proc:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
            stub = prewarm_service_pb2_grpc.PrewarmServiceStub(channel)
            call = stub.StartRun(pb.StartRunRequest(join_if_running=True))
            first = await asyncio.wait_for(call.read(), WAIT_S)
            assert first.event.outcome == pb.STEP_OUTCOME_STARTED and "planning" in first.event.message
            started = time.monotonic()
            proc.signal(signal.SIGTERM)
            rest = []
            async with asyncio.timeout(WAIT_S):
                while (reply := await call.read()) != grpc.aio.EOF:
                    rest.append(reply.event)
            assert rest[-1].run_finished and "shutting down" in rest[-1].message
        assert await proc.wait(WAIT_S) == 0
        # The stream did not hold the drain for the grace period.
        assert time.monotonic() - started < 10
