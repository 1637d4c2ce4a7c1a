"""`router.workers`: N router processes on one port, each serving, each draining on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from corral.v1 import common_pb2, router_service_pb2
from corral.v1 import router_service_pb2_grpc as rpc

from services.common.config import CorralConfig
from services.router.config import RouterConfig
from services.router.workers import worker_config
from tests.helpers.polling import wait_for
from tests.helpers.procs import free_port
from tests.router.stack import MODEL, Stack, gen_request, start_stack

pytestmark = pytest.mark.timeout(120)

WORKERS = 2


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return [int(child) for child in text.split()]


def _alive(pids: list[int]) -> list[int]:
    """The processes among `pids` still running (a zombie counts as gone)."""
    running = []
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0] != "Z":
                running.append(pid)
    return running


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp_sockets(port: int, state: str) -> dict[str, str]:
    """Inode -> local address of the IPv4/IPv6 TCP sockets on local `port` in `state` (0A listen, 01
    established)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            local, st, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and st == state:
                found[inode] = local
    return found


def _holding(pids: list[int], port: int, state: str) -> set[int]:
    """The processes among `pids` that own a socket on local `port` in `state`."""
    sockets = _tcp_sockets(port, state)
    return {pid for pid in pids if _socket_inodes(pid) & set(sockets)}


@pytest.fixture
async def workers_stack() -> AsyncIterator[tuple[Stack, list[int]]]:
    # NOTE: time scale 1: a streamed answer of 120 tokens takes about 2 s, still in flight at SIGTERM.
    stack = await start_stack(
        node_count=1,
        time_scale=1.0,
        health=False,
        router_env={"CORRAL_ROUTER__WORKERS": str(WORKERS), "CORRAL_ROUTER__HTTP_PORT": str(free_port())},
    )
    assert stack.router is not None
    supervisor = stack.router.pid
    pids: list[int] = []
    try:
        await wait_for(lambda: len(_children(supervisor)) == WORKERS, 15, 0.05, what="both workers started")
        pids = _children(supervisor)
        await wait_for(
            lambda: _holding(pids, stack.router.port, "0A") == set(pids),  # type: ignore[union-attr]
            20,
            0.05,
            what="both workers listening on the router's port",
        )
        yield stack, pids
    finally:
        await stack.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def _spread(stack: Stack, pids: list[int]) -> AsyncIterator[list[grpc.aio.Channel]]:
    """New connections, each with a call made, until every worker holds one (the kernel picks);
    closed on the way out."""
    assert stack.router is not None
    channels: list[grpc.aio.Channel] = []
    try:
        while _holding(pids, stack.router.port, "01") != set(pids):
            if len(channels) == 64:
                raise AssertionError("64 connections all went to one worker")
            channel = grpc.aio.insecure_channel(
                f"127.0.0.1:{stack.router.port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(channel)
            await rpc.RouterServiceStub(channel).ListModels(
                router_service_pb2.ListModelsRequest(), timeout=10
            )
        yield channels
    finally:
        for channel in channels:
            await channel.close()


async def test_workers_share_the_port_and_each_serves(workers_stack: tuple[Stack, list[int]]) -> None:
    stack, pids = workers_stack
    async with _spread(stack, pids) as channels:
        for channel in channels:
            request = gen_request("hello", options=common_pb2.ModelOptions(num_predict=4))
            reply = await rpc.RouterServiceStub(channel).Generate(request, timeout=30)
            assert reply.response


async def test_each_worker_drains_its_streams_on_sigterm(workers_stack: tuple[Stack, list[int]]) -> None:
    stack, pids = workers_stack
    assert stack.router is not None

    async def stream(channel: grpc.aio.Channel, first: asyncio.Event) -> bool:
        done = False
        spec = common_pb2.GenerateSpec(
            model=MODEL, prompt="a long answer", options=common_pb2.ModelOptions(num_predict=120)
        )
        request = router_service_pb2.GenerateStreamRequest(spec=spec)
        async for chunk in rpc.RouterServiceStub(channel).GenerateStream(request, timeout=60):
            first.set()
            done = done or chunk.done
        return done

    async with _spread(stack, pids) as channels:
        started = [asyncio.Event() for _ in channels]
        streams = [asyncio.create_task(stream(ch, ev)) for ch, ev in zip(channels, started, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), 30)
        assert not any(task.done() for task in streams), "the streams are still running at SIGTERM"
        stack.router.signal(signal.SIGTERM)
        assert all(await asyncio.gather(*streams)), "every stream ends with its final chunk"
        assert await stack.router.wait(30) == 0
        await wait_for(lambda: not _alive(pids), 10, 0.05, what="the workers gone")


async def test_a_worker_that_dies_stops_the_router(workers_stack: tuple[Stack, list[int]]) -> None:
    stack, pids = workers_stack
    assert stack.router is not None
    os.kill(pids[0], signal.SIGKILL)
    assert await stack.router.wait(30) != 0
    await wait_for(lambda: not _alive(pids), 15, 0.05, what="the other worker stopped")
    assert any("stopping the others" in line for line in stack.router.output)


async def test_workers_die_with_a_killed_supervisor(workers_stack: tuple[Stack, list[int]]) -> None:
    stack, pids = workers_stack
    assert stack.router is not None
    await stack.router.kill()
    await wait_for(lambda: not _alive(pids), 15, 0.05, what="the workers gone with their supervisor")


def test_worker_i_serves_its_metrics_on_the_port_plus_i() -> None:
    cfg = CorralConfig(router=RouterConfig(workers=3, metrics_port=9101))
    assert [worker_config(cfg, i).router.metrics_port for i in range(3)] == [9101, 9102, 9103]
    assert all(worker_config(cfg, i).router.workers == 1 for i in range(3))
    off = CorralConfig(router=RouterConfig(workers=3, metrics_port=0))
    assert worker_config(off, 2).router.metrics_port == 0
