"""Integration harness: a score-stream watcher and a router-like traffic driver that reports outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import grpc
from corral.v1 import common_pb2, health_service_pb2, health_service_pb2_grpc

Nodes = dict[str, health_service_pb2.NodeScore]


@dataclass
class Received:
    """One message as the watcher saw it."""

    kind: int
    version: int
    at: float
    node_ids: tuple[str, ...]


class Watcher:
    """Follows WatchScores like a router: a local copy of every node, merged from snapshots and updates."""

    def __init__(self, stub: health_service_pb2_grpc.HealthServiceStub, name: str = "test-watcher") -> None:
        self._stub = stub
        self._name = name
        self.nodes: Nodes = {}
        self.messages: list[Received] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def start(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        await self.wait_for(lambda nodes: bool(self.messages), timeout_s=10)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._task

    async def _run(self) -> None:
        try:
            async for msg in self._stub.WatchScores(
                health_service_pb2.WatchScoresRequest(subscriber=self._name)
            ):
                if msg.kind == health_service_pb2.SCORE_UPDATE_KIND_SNAPSHOT:
                    self.nodes = {n.node_id: n for n in msg.nodes}
                elif msg.kind == health_service_pb2.SCORE_UPDATE_KIND_UPDATE:
                    for node in msg.nodes:
                        self.nodes[node.node_id] = node
                    for node_id in msg.removed_node_ids:
                        self.nodes.pop(node_id, None)
                self.messages.append(
                    Received(msg.kind, msg.version, time.monotonic(), tuple(n.node_id for n in msg.nodes))
                )
                async with self._changed:
                    self._changed.notify_all()
        except BaseException as exc:
            self.error = exc
            async with self._changed:
                self._changed.notify_all()
            raise

    async def wait_for(self, predicate: Callable[[Nodes], bool], timeout_s: float) -> float:
        """Waits until the predicate holds on the local copy; returns the monotonic time it did."""

        async def check() -> float:
            async with self._changed:
                while not predicate(self.nodes):
                    if self.error is not None:
                        raise AssertionError(f"watch stream failed: {self.error!r}")
                    await self._changed.wait()
                return time.monotonic()

        try:
            return await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            summary = {
                k: (v.state, v.healthy, v.ejected, round(v.error_rate, 2)) for k, v in self.nodes.items()
            }
            raise AssertionError(f"condition not met within {timeout_s} s; nodes: {summary}") from None


def state_of(nodes: Nodes, node_id: str) -> int:
    node = nodes.get(node_id)
    return node.state if node is not None else -1


def expected_ms(nodes: Nodes, node_id: str, model: str) -> float:
    node = nodes.get(node_id)
    if node is None:
        return float("nan")
    for m in node.models:
        if m.model == model:
            return m.expected_ms
    return float("nan")


@dataclass
class Driver:
    """Sends generate requests to simulator nodes and reports each outcome over ReportOutcomes."""

    stub: health_service_pb2_grpc.HealthServiceStub
    model: str = "llama3.2:1b"
    reporter: str = "test-router"
    sent: int = 0
    kinds: dict[int, int] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None
    _call: grpc.aio.StreamUnaryCall | None = None

    async def __aenter__(self) -> Driver:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        self._call = self.stub.ReportOutcomes()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None and self._call is not None
        await self._session.close()
        await self._call.done_writing()
        await asyncio.wait_for(self._call, 5)

    async def attempt(self, node_id: str, url: str) -> int:
        """One request to the node; the outcome is reported at once. Returns the ErrorKind."""
        assert self._session is not None and self._call is not None
        started = time.perf_counter()
        body = {"model": self.model, "prompt": "hello", "stream": False, "options": {"num_predict": 8}}
        tokens_per_s = 0.0
        try:
            async with self._session.post(url + "/api/generate", json=body) as response:
                payload = await response.json(content_type=None)
                if response.status == 200:
                    kind = common_pb2.ERROR_KIND_NONE
                    if payload.get("eval_duration"):
                        tokens_per_s = payload["eval_count"] / payload["eval_duration"] * 1e9
                elif response.status == 503:
                    kind = common_pb2.ERROR_KIND_BUSY
                elif response.status >= 500:
                    kind = common_pb2.ERROR_KIND_SERVER
                else:
                    kind = common_pb2.ERROR_KIND_CLIENT
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError):
            kind = common_pb2.ERROR_KIND_CONNECTION
        except TimeoutError:
            kind = common_pb2.ERROR_KIND_TIMEOUT
        latency_ms = (time.perf_counter() - started) * 1000
        outcome = health_service_pb2.Outcome(
            node_id=node_id,
            model=self.model,
            request_kind=common_pb2.REQUEST_KIND_GENERATE,
            error_kind=kind,
            latency_ms=latency_ms,
            ttft_ms=latency_ms if kind == common_pb2.ERROR_KIND_NONE else 0.0,
            tokens_per_s=tokens_per_s,
        )
        await self._call.write(
            health_service_pb2.ReportOutcomesRequest(reporter=self.reporter, outcomes=[outcome])
        )
        self.sent += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return kind

    async def run_until(
        self,
        targets: dict[str, str],
        done: asyncio.Event,
        timeout_s: float,
        routable: Callable[[str], bool] = lambda node_id: True,
    ) -> None:
        """Round-robins over the routable targets until `done` is set (bounded by `timeout_s`).

        Like a router, it skips nodes the score stream says are ejected, unhealthy or draining.
        """
        deadline = time.monotonic() + timeout_s
        while not done.is_set():
            if time.monotonic() > deadline:
                raise AssertionError(f"traffic ran for {timeout_s} s without the expected effect")
            sent = 0
            for node_id, url in targets.items():
                if routable(node_id):
                    await self.attempt(node_id, url)
                    sent += 1
            if not sent:
                # NOTE: pacing while every target is out of rotation, not synchronisation.
                await asyncio.sleep(0.02)


def routable_by(watcher: Watcher) -> Callable[[str], bool]:
    """A router's filter over a watcher's local copy."""

    def check(node_id: str) -> bool:
        node = watcher.nodes.get(node_id)
        return node is not None and node.healthy and not node.ejected and not node.draining

    return check
