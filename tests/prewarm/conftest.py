"""Fixtures of the prewarm tests: simulated nodes, a score view built from them, progress collection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from services.prewarm.planner import ModelView, NodeView
from services.prewarm.runs import ProgressEvent, Run
from sim.node import SimNode

WAIT_S = 10.0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for checks against the nodes."""
    async with aiohttp.ClientSession() as session:
        yield session


async def loaded_models(http: aiohttp.ClientSession, node: SimNode) -> set[str]:
    """The model names a node lists in /api/ps."""
    async with http.get(node.url + "/api/ps") as response:
        body = await response.json()
    return {m["name"] for m in body["models"]}


def view_of(node: SimNode, **state: Any) -> NodeView:
    """A NodeView of a simulated node as a fresh health probe would report it."""
    models = {}
    for spec in node.config.models:
        runner = node.engine.runners.get(spec.key)
        models[spec.key] = ModelView(
            name=spec.name,
            loaded=runner is not None,
            expires_at_s=runner.expires_at if runner is not None else None,
            capabilities=spec.capabilities,
        )
    return NodeView(node_id=node.name, address=node.url, models=models, **state)


class StaticScores:
    """A ScoreSource over a fixed view (None: health unavailable)."""

    address = "health.test:1"

    def __init__(self, view: Mapping[str, NodeView] | None) -> None:
        self.view = view

    async def current(self, wait_s: float) -> Mapping[str, NodeView] | None:
        return self.view


async def collect(run: Run) -> list[ProgressEvent]:
    """Every event of a run, bounded in time."""
    async with asyncio.timeout(WAIT_S):
        return [event async for event in run.events()]
