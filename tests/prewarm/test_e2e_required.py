"""Must-show, end to end with real processes: required models as desired state.

Two simulator nodes, health, router and prewarm with `required_models: [qwen2.5:0.5b]`. The nodes
start without it and prewarm pulls it. Then a node added at run time (slow time scale, so its pull
takes seconds) gets it pulled, is routed none of that model's requests until its /api/tags lists it,
is warmed after that, and then takes that model's traffic.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from corral.v1 import (
    common_pb2,
    health_service_pb2,
    health_service_pb2_grpc,
    prewarm_service_pb2,
    prewarm_service_pb2_grpc,
    router_service_pb2,
)

from tests.helpers.polling import wait_for
from tests.helpers.procs import ServiceProcess, run_cli
from tests.router.stack import Stack, start_sims, start_stack

pytestmark = [pytest.mark.timeout(150), pytest.mark.asyncio(loop_scope="module")]

REQUIRED = "qwen2.5:0.5b"
WARM = "llama3.2:1b"


class Fleet:
    """The stack and the prewarm process."""

    def __init__(self, stack: Stack, prewarm: ServiceProcess) -> None:
        self.stack = stack
        self.prewarm_addr = f"127.0.0.1:{prewarm.port}"
        assert stack.health is not None
        self.health_addr = f"127.0.0.1:{stack.health.port}"

    async def tags(self, node_id: str) -> set[str]:
        assert self.stack.http is not None
        async with self.stack.http.get(self.stack.node(node_id).url + "/api/tags") as resp:
            return {m["name"] for m in (await resp.json())["models"]}

    async def loaded(self, node_id: str) -> set[str]:
        assert self.stack.http is not None
        async with self.stack.http.get(self.stack.node(node_id).url + "/api/ps") as resp:
            return {m["name"] for m in (await resp.json())["models"]}

    async def required_states(self) -> dict[tuple[str, str], prewarm_service_pb2.RequiredModelStatus]:
        async with grpc.aio.insecure_channel(self.prewarm_addr) as channel:
            stub = prewarm_service_pb2_grpc.PrewarmServiceStub(channel)
            reply = await stub.GetStatus(prewarm_service_pb2.GetStatusRequest(), timeout=5)
        return {(s.node_id, s.model): s for s in reply.required_models}

    async def health(self, call: str, request: object) -> None:
        async with grpc.aio.insecure_channel(self.health_addr) as channel:
            stub = health_service_pb2_grpc.HealthServiceStub(channel)
            await getattr(stub, call)(request, timeout=5)

    async def ask(self, prompt: str) -> str:
        """Generates with the required model through the router; returns the node that answered."""
        spec = common_pb2.GenerateSpec(
            model=REQUIRED, prompt=prompt, options=common_pb2.ModelOptions(num_predict=2)
        )
        reply = await self.stack.stub.Generate(router_service_pb2.GenerateRequest(spec=spec), timeout=30)
        return str(reply.routing.node_id)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet() -> AsyncIterator[Fleet]:
    stack = await start_stack(node_count=2)
    try:
        assert stack.health is not None and stack.router is not None
        prewarm = ServiceProcess(
            "services.prewarm",
            env={
                "CORRAL_PREWARM__PORT": "0",
                "CORRAL_PREWARM__HEALTH_ADDR": f"127.0.0.1:{stack.health.port}",
                "CORRAL_PREWARM__ROUTER_ADDR": f"127.0.0.1:{stack.router.port}",
                "CORRAL_PREWARM__CACHE_ADDR": "127.0.0.1:1",
                "CORRAL_PREWARM__RUN_ON_START": "false",
                "CORRAL_PREWARM__SCHEDULE_INTERVAL_S": "0",
                "CORRAL_PREWARM__MODELS": json.dumps([{"name": WARM, "keep_alive_s": 600}]),
                "CORRAL_PREWARM__REQUIRED_MODELS": json.dumps([{"name": REQUIRED}]),
                "CORRAL_PREWARM__PULL_RETRY_S": "2",
            },
        )
        stack.extra.append(prewarm)
        await prewarm.start()
        yield Fleet(stack, prewarm)
    finally:
        await stack.close()


async def wait_for_required_everywhere(fleet: Fleet) -> None:
    """Waits until every node of the fleet (node-9 too once added) has the model and prewarm says so."""

    async def everywhere() -> bool:
        return all([REQUIRED in await fleet.tags(n.node_id) for n in fleet.stack.nodes])

    await wait_for(everywhere, timeout_s=30, what="the required model on every node")

    async def reported() -> bool:
        states = await fleet.required_states()
        return all(
            states.get((n.node_id, REQUIRED)) is not None
            and states[(n.node_id, REQUIRED)].state == prewarm_service_pb2.REQUIRED_MODEL_STATE_PRESENT
            for n in fleet.stack.nodes
        )

    await wait_for(reported, timeout_s=15, what="prewarm reporting the model present")


async def test_the_fleet_is_brought_to_its_required_models(fleet: Fleet) -> None:
    await wait_for_required_everywhere(fleet)


async def test_a_node_added_at_run_time_gets_them_then_traffic_and_none_before(fleet: Fleet) -> None:
    stack = fleet.stack
    # NOTE: node-1 and node-2 must hold the model first, or nothing could answer the asks below.
    await wait_for_required_everywhere(fleet)
    (joining,) = await start_sims(1, 1.0, 9, 9)
    stack.nodes.append(joining)
    assert REQUIRED not in await fleet.tags("node-9")
    await fleet.health("AddNode", health_service_pb2.AddNodeRequest(node_id="node-9", address=joining.url))

    seen_pulling = False
    asked = 0
    # NOTE: bounded by time, not by a count of asks: the asks are quick, and the pull takes what it
    # takes on a busy machine.
    deadline = time.monotonic() + 60
    while REQUIRED not in await fleet.tags("node-9"):
        asked += 1
        answered_by = await fleet.ask(f"question {asked}")
        if REQUIRED not in await fleet.tags("node-9"):
            assert answered_by != "node-9", "node-9 was routed the model before it had it"
        status = (await fleet.required_states()).get(("node-9", REQUIRED))
        if status is not None and status.state == prewarm_service_pb2.REQUIRED_MODEL_STATE_PULLING:
            seen_pulling = seen_pulling or status.total > 0
        assert time.monotonic() < deadline, (
            f"node-9 did not get the required model within 60 s ({asked} asks)"
        )
    assert asked >= 3 and seen_pulling

    async def warmed() -> bool:
        return WARM in await fleet.loaded("node-9")

    # NOTE: the node-joined warm-up waited for the required model; it follows once health lists it.
    await wait_for(warmed, timeout_s=30, what="node-9 warmed after its required model")

    for node_id in ("node-1", "node-2"):
        await fleet.health("DrainNode", health_service_pb2.DrainNodeRequest(node_id=node_id))
    try:

        async def served_by_new_node() -> bool:
            try:
                return await fleet.ask("now who answers?") == "node-9"
            except grpc.aio.AioRpcError:
                return False

        await wait_for(served_by_new_node, timeout_s=30, what="node-9 taking the model's traffic")
    finally:
        for node_id in ("node-1", "node-2"):
            await fleet.health("UndrainNode", health_service_pb2.UndrainNodeRequest(node_id=node_id))


async def test_corral_status_and_models_show_the_required_models(fleet: Fleet) -> None:
    assert fleet.stack.router is not None
    # NOTE: node-9 is listed too when the run-time node test ran first; the nodes are the fleet's.
    await wait_for_required_everywhere(fleet)
    nodes = [n.node_id for n in fleet.stack.nodes]
    assert nodes[:2] == ["node-1", "node-2"]
    env = {
        "CORRAL_HEALTH_ADDR": fleet.health_addr,
        "CORRAL_PREWARM_ADDR": fleet.prewarm_addr,
        "CORRAL_ROUTER_ADDR": f"127.0.0.1:{fleet.stack.router.port}",
    }
    for command in ("status", "models"):
        code, text, err = await run_cli(env, command)
        assert code == 0, err
        assert "required models" in text
        row = next(line for line in text.splitlines() if line.split()[:2] == [REQUIRED, "present"])
        assert all(node in row for node in nodes)
