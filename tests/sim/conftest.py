"""Fixtures: simulated nodes started in-process on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from sim.node import SimNode


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
