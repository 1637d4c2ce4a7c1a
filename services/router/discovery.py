"""The static node list: used, and kept current by reading the nodes, while health has never answered."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from services.router.config import StaticNode
from services.router.scores import ModelView, NodeView, ScoreBoard, normalize_model
from services.router.transport import NodeTransport, gather_json

logger = logging.getLogger(__name__)


def parse_time_s(text: Any) -> float:
    """Seconds since the epoch from an RFC 3339 string (0 when unreadable)."""
    if not isinstance(text, str) or not text:
        return 0.0
    try:
        # NOTE: fromisoformat handles at most microseconds; Ollama sends nanoseconds.
        head, dot, tail = text.partition(".")
        if dot:
            digits = "".join(ch for ch in tail if ch.isdigit())
            zone = tail[len(digits) :]
            text = f"{head}.{digits[:6]}{zone}"
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def models_from(tags: Any, ps: Any) -> dict[str, ModelView] | None:
    """Model views from a node's /api/tags and /api/ps replies (None when tags is missing)."""
    if not isinstance(tags, dict) or not isinstance(tags.get("models"), list):
        return None
    models: dict[str, ModelView] = {}
    for entry in tags["models"]:
        if isinstance(entry, dict) and isinstance(entry.get("name") or entry.get("model"), str):
            name = entry.get("name") or entry["model"]
            caps = entry.get("capabilities")
            models[normalize_model(name)] = ModelView(
                name=name,
                size_bytes=int(entry.get("size") or 0),
                capabilities=tuple(caps) if isinstance(caps, list) else (),
            )
    if isinstance(ps, dict) and isinstance(ps.get("models"), list):
        for entry in ps["models"]:
            if not isinstance(entry, dict):
                continue
            key = normalize_model(str(entry.get("name") or entry.get("model") or ""))
            view = models.get(key)
            if view is None:
                continue
            view.loaded = True
            view.expires_at_s = parse_time_s(entry.get("expires_at"))
            view.size_loaded_bytes = int(entry.get("size") or 0)
            view.size_vram_bytes = int(entry.get("size_vram") or 0)
            view.context_length = int(entry.get("context_length") or 0)
    return models


class StaticDiscovery:
    """Installs the configured nodes on the board and refreshes their models from the nodes.

    Only while health has never answered: once a snapshot arrives the board ignores the static
    list, and this task stops reading the nodes.
    """

    def __init__(
        self, board: ScoreBoard, transport: NodeTransport, nodes: list[StaticNode], refresh_s: float
    ) -> None:
        self._board = board
        self._transport = transport
        self._nodes = [(n.node_id, n.address.rstrip("/")) for n in nodes]
        self._refresh_s = refresh_s
        self.refreshed = asyncio.Event()
        board.use_static(NodeView(node_id=i, address=a, models=None) for i, a in self._nodes)

    async def refresh(self) -> None:
        """Reads /api/tags and /api/ps of every static node once."""
        requests = [(a, p) for _, a in self._nodes for p in ("/api/tags", "/api/ps")]
        replies = await gather_json(self._transport, requests, timeout_s=min(2.0, self._refresh_s))
        views: list[NodeView] = []
        for index, (node_id, address) in enumerate(self._nodes):
            tags, ps = replies[2 * index], replies[2 * index + 1]
            previous = self._board.nodes.get(node_id)
            models = models_from(tags, ps)
            if models is None and previous is not None:
                models = previous.models
            views.append(NodeView(node_id=node_id, address=address, routable=tags is not None, models=models))
        self._board.use_static(views)
        self.refreshed.set()

    async def run(self) -> None:
        """Refreshes until health takes over."""
        while self._board.source != "health":
            try:
                await self.refresh()
            except Exception:
                logger.warning("reading the static nodes failed", exc_info=True)
            await asyncio.sleep(self._refresh_s)
