"""The embedder's nodes from health's score stream (`embedder.health_addr`), not a list of its own.

Health's registry is the one list of the fleet: a node added, drained, ejected or removed there
reaches the cache's Ollama embedder within a score update. The embedder sends texts to the nodes
health reports routable that have the embedding model installed; before health's first snapshot,
and whenever no node qualifies, it keeps its configured `node_urls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from corral.v1 import health_service_pb2

from services.cache.embedders import OllamaEmbedder
from services.cache.keys import normalise_model
from services.common.channels import make_channel
from services.common.health_watch import HealthWatcher, routable


@dataclass(frozen=True, slots=True)
class EmbedNode:
    """One node as the embedder sees it: where it is and whether it can embed now."""

    address: str
    usable: bool


def embed_node(model: str) -> Callable[[health_service_pb2.NodeScore, float], EmbedNode]:
    """The conversion of a NodeScore for an embedder of `model`."""
    wanted = normalise_model(model)

    def convert(score: health_service_pb2.NodeScore, now_s: float) -> EmbedNode:
        has_model = any(m.installed and normalise_model(m.model) == wanted for m in score.models)
        return EmbedNode(score.address.rstrip("/"), has_model and routable(score))

    return convert


def usable_urls(view: Mapping[str, EmbedNode]) -> list[str]:
    """The addresses of the nodes that can embed, in node id order."""
    return [view[node_id].address for node_id in sorted(view) if view[node_id].usable]


class NodeFeed:
    """Follows health and keeps the embedder's nodes in step with it."""

    def __init__(self, embedder: OllamaEmbedder, health_addr: str) -> None:
        self._channel = make_channel(health_addr)
        self.watcher: HealthWatcher[EmbedNode] = HealthWatcher(
            self._channel, health_addr, embed_node(embedder.node_model), clock=time.time, subscriber="cache"
        )
        self.watcher.listeners.append(lambda before, after: embedder.use_nodes(usable_urls(after)))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts following (reconnecting on its own while health is away)."""
        self._task = asyncio.create_task(self.watcher.run(), name="cache-embedder-nodes")

    async def stop(self) -> None:
        """Stops following and closes the channel."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._channel.close()
