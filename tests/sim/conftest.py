"""Fixtures: simulated nodes started in-process on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from sim.config import NodeConfig
from sim.node import SimNode

# NOTE: 1000x faster than real time: a cold llama3.2:1b load takes ~3 ms, the shape stays the same.
FAST: dict[str, Any] = {"time_scale": 0.001}


@pytest.fixture
async def make_node() -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await make_node(num_parallel=1, ...)` starts a node with those NodeConfig fields."""
    nodes: list[SimNode] = []

    async def factory(**fields: Any) -> SimNode:
        node = SimNode(NodeConfig.model_validate({**FAST, **fields}))
        await node.start()
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        await node.stop()


@pytest.fixture
async def node(make_node: Callable[..., Any]) -> SimNode:
    """A default node (the three default models, not loaded) at the fast time scale."""
    started: SimNode = await make_node()
    return started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for wire-level checks."""
    async with aiohttp.ClientSession() as session:
        yield session
