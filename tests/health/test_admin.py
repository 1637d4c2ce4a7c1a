"""Integration: admin RPCs at run time, bad input mapped to clear status codes, outcome validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from corral.v1 import common_pb2
from corral.v1 import health_service_pb2 as pb
from grpc_status import rpc_status

from services.common.errors import error_info
from sim.config import NodeConfig
from sim.node import SimNode
from tests.health.conftest import MODEL, Cluster


async def _status(call: object) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        info = error_info(rpc_status.from_call(err))
        return err.code(), info.reason if info else "", dict(info.metadata) if info else {}
    raise AssertionError("the call succeeded")


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"node_id": "", "address": "http://127.0.0.1:1"}, "node_id"),
        ({"node_id": "bad id!", "address": "http://127.0.0.1:1"}, "node_id"),
        ({"node_id": "x" * 65, "address": "http://127.0.0.1:1"}, "node_id"),
        ({"node_id": "n9", "address": ""}, "address"),
        ({"node_id": "n9", "address": "127.0.0.1:11434"}, "address"),
        ({"node_id": "n9", "address": "http://127.0.0.1"}, "address"),
        ({"node_id": "n9", "address": "gopher://127.0.0.1:70"}, "address"),
        ({"node_id": "n9", "address": "http://127.0.0.1:11434/api"}, "address"),
        ({"node_id": "n9", "address": "http://127.0.0.1:1", "labels": {"bad key": "v"}}, "labels"),
    ],
)
async def test_add_node_rejects_malformed_input(
    cluster: Cluster, request_fields: dict[str, Any], field: str
) -> None:
    code, reason, metadata = await _status(
        cluster.stub.AddNode(pb.AddNodeRequest(**request_fields), timeout=5)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert reason == "INVALID_ARGUMENT" and metadata["field"] == field


async def test_duplicates_are_already_exists(cluster: Cluster) -> None:
    code, reason, _ = await _status(
        cluster.stub.AddNode(pb.AddNodeRequest(node_id="node-1", address="http://127.0.0.1:1"), timeout=5)
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "NODE_ALREADY_EXISTS")
    code, _, _ = await _status(
        cluster.stub.AddNode(pb.AddNodeRequest(node_id="other", address=cluster.url("node-2")), timeout=5)
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize("rpc", ["DrainNode", "UndrainNode", "RemoveNode"])
async def test_unknown_and_malformed_node_ids(cluster: Cluster, rpc: str) -> None:
    request_type = getattr(pb, f"{rpc}Request")
    method = getattr(cluster.stub, rpc)
    code, reason, _ = await _status(method(request_type(node_id="ghost"), timeout=5))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NODE_NOT_FOUND")
    code, _, metadata = await _status(method(request_type(node_id=""), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and metadata["field"] == "node_id"
    code, _, _ = await _status(method(request_type(node_id="../etc"), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # The service is still fine.
    listed = await cluster.stub.ListNodes(pb.ListNodesRequest(), timeout=5)
    assert [n.node_id for n in listed.nodes] == ["node-1", "node-2", "node-3", "node-4"]


async def test_add_drain_undrain_remove_at_run_time(cluster: Cluster) -> None:
    extra = SimNode(
        NodeConfig.model_validate(
            {"name": "node-5", "time_scale": 0.01, "models": ["nomic-embed-text:v1.5"]}
        ),
        admin_port=None,
    )
    await extra.start()
    try:
        added = await cluster.stub.AddNode(
            pb.AddNodeRequest(node_id="node-5", address=extra.url + "/", labels={"role": "embed"}), timeout=5
        )
        assert added.node.address == extra.url and added.node.state == pb.NODE_STATE_UNSPECIFIED
        # An embedding-only node is healthy: probes never generate.
        await cluster.watcher.wait_for(
            lambda n: (
                "node-5" in n
                and n["node-5"].healthy
                and [m.model for m in n["node-5"].models] == ["nomic-embed-text:v1.5"]
            ),
            timeout_s=5,
        )
        assert cluster.watcher.nodes["node-5"].labels["role"] == "embed"

        drained = await cluster.stub.DrainNode(pb.DrainNodeRequest(node_id="node-5"), timeout=5)
        assert drained.node.draining and drained.node.state == pb.NODE_STATE_DRAINING
        await cluster.watcher.wait_for(lambda n: n["node-5"].draining, timeout_s=5)
        undrained = await cluster.stub.UndrainNode(pb.UndrainNodeRequest(node_id="node-5"), timeout=5)
        assert not undrained.node.draining and undrained.node.state == pb.NODE_STATE_HEALTHY

        removed = await cluster.stub.RemoveNode(pb.RemoveNodeRequest(node_id="node-5"), timeout=5)
        assert removed.node.node_id == "node-5"
        await cluster.watcher.wait_for(lambda n: "node-5" not in n, timeout_s=5)
        listed = await cluster.stub.ListNodes(pb.ListNodesRequest(), timeout=5)
        assert "node-5" not in [n.node_id for n in listed.nodes]
    finally:
        await extra.stop()


async def test_report_outcomes_counts_accepted_and_rejected(cluster: Cluster) -> None:
    def outcome(**fields: Any) -> pb.Outcome:
        base: dict[str, Any] = {
            "node_id": "node-1",
            "model": MODEL,
            "error_kind": common_pb2.ERROR_KIND_NONE,
            "latency_ms": 12.0,
            "ttft_ms": 3.0,
            "tokens_per_s": 40.0,
            "inflight": 2,
        }
        return pb.Outcome(**{**base, **fields})

    batches = [
        pb.ReportOutcomesRequest(reporter="r1", outcomes=[outcome(), outcome(node_id="ghost")]),
        pb.ReportOutcomesRequest(
            outcomes=[
                outcome(error_kind=common_pb2.ERROR_KIND_UNSPECIFIED),
                outcome(latency_ms=-1),
                outcome(latency_ms=float("nan")),
                outcome(model=""),
                outcome(inflight=-3),
                outcome(model="LLAMA3.2:1B"),
            ]
        ),
    ]

    async def requests() -> AsyncIterator[pb.ReportOutcomesRequest]:
        for batch in batches:
            yield batch

    reply = await cluster.stub.ReportOutcomes(requests(), timeout=5)
    assert (reply.accepted, reply.rejected) == (2, 6)
    node = (await cluster.stub.ListNodes(pb.ListNodesRequest(), timeout=5)).nodes[0]
    (model,) = [m for m in node.models if m.model == MODEL]
    assert model.ewma_latency_ms == 12.0 and model.ewma_tokens_per_s == 40.0
    # The stream closed, so the reporter's in-flight count no longer holds.
    assert node.inflight == 0
