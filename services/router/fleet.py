"""The fleet's model view: ListModels, /api/show forwarding and the /api/ps view from the score copy."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from corral.v1 import router_service_pb2
from google.protobuf import timestamp_pb2

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.router.discovery import parse_time_s
from services.router.scores import ScoreBoard, normalize_model
from services.router.transport import NodeError, NodeTransport, gather_json


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    whole = int(seconds)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _details(entry: dict[str, Any]) -> router_service_pb2.ModelDetails:
    raw = entry.get("details") if isinstance(entry.get("details"), dict) else {}
    assert isinstance(raw, dict)
    caps = entry.get("capabilities")
    details = router_service_pb2.ModelDetails(
        digest=str(entry.get("digest") or ""),
        size_bytes=int(entry.get("size") or 0),
        format=str(raw.get("format") or ""),
        family=str(raw.get("family") or ""),
        parameter_size=str(raw.get("parameter_size") or ""),
        quantization_level=str(raw.get("quantization_level") or ""),
        capabilities=[str(c) for c in caps] if isinstance(caps, list) else [],
    )
    modified = parse_time_s(entry.get("modified_at"))
    if modified:
        details.modified_at.CopyFrom(_timestamp(modified))
    return details


class Fleet:
    """Answers questions about the models across the nodes."""

    def __init__(self, board: ScoreBoard, transport: NodeTransport) -> None:
        self._board = board
        self._transport = transport

    async def list_models(self, loaded_only: bool, timeout_s: float) -> router_service_pb2.ListModelsResponse:
        """The union of the nodes' /api/tags, with placements from /api/ps.

        Nodes are read live (ListModels is not on the hot path) so that details are complete; a node
        that does not answer in time is described from the score copy instead.
        """
        nodes = sorted(self._board.nodes.values(), key=lambda n: n.node_id)
        replies = await gather_json(
            self._transport, [(n.address, p) for n in nodes for p in ("/api/tags", "/api/ps")], timeout_s
        )
        models: dict[str, router_service_pb2.FleetModel] = {}
        for index, node in enumerate(nodes):
            tags, ps = replies[2 * index], replies[2 * index + 1]
            loaded: dict[str, dict[str, Any]] = {}
            if isinstance(ps, dict) and isinstance(ps.get("models"), list):
                for entry in ps["models"]:
                    if isinstance(entry, dict):
                        loaded[normalize_model(str(entry.get("name") or entry.get("model") or ""))] = entry
            if isinstance(tags, dict) and isinstance(tags.get("models"), list):
                for entry in tags["models"]:
                    if not isinstance(entry, dict) or not (entry.get("name") or entry.get("model")):
                        continue
                    name = str(entry.get("name") or entry.get("model"))
                    fleet_model = models.get(normalize_model(name))
                    if fleet_model is None:
                        fleet_model = models[normalize_model(name)] = router_service_pb2.FleetModel(
                            name=name, details=_details(entry)
                        )
                    placement = fleet_model.placements.add(node_id=node.node_id)
                    running = loaded.get(normalize_model(name))
                    if running is not None:
                        placement.loaded = True
                        expires = parse_time_s(running.get("expires_at"))
                        if expires:
                            placement.expires_at.CopyFrom(_timestamp(expires))
                        placement.size_loaded_bytes = int(running.get("size") or 0)
                        placement.size_vram_bytes = int(running.get("size_vram") or 0)
                        placement.context_length = int(running.get("context_length") or 0)
            elif node.models is not None:
                for key, view in node.models.items():
                    if not view.installed:
                        continue
                    fleet_model = models.get(key)
                    if fleet_model is None:
                        fleet_model = models[key] = router_service_pb2.FleetModel(
                            name=view.name,
                            details=router_service_pb2.ModelDetails(
                                size_bytes=view.size_bytes, capabilities=list(view.capabilities)
                            ),
                        )
                    placement = fleet_model.placements.add(node_id=node.node_id, loaded=view.loaded)
                    if view.loaded and view.expires_at_s:
                        placement.expires_at.CopyFrom(_timestamp(view.expires_at_s))
        result = router_service_pb2.ListModelsResponse()
        for key in sorted(models):
            fleet_model = models[key]
            if loaded_only and not any(p.loaded for p in fleet_model.placements):
                continue
            fleet_model.pin.update(self._board.pin_of(key))
            result.models.append(fleet_model)
        return result

    async def show(self, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Forwards an /api/show body to a node that has the model and returns its reply.

        Raises:
            InvalidArgument: no model named.
            NotFound: no node has the model.
            Unavailable: the nodes that have it did not answer.
        """
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("model", "model is required")
        model = normalize_model(name)
        candidates = self._board.candidates(model)
        known = self._board.known_models()
        if not candidates:
            if known is not None and model not in known:
                raise NotFound(f"model '{name}' not found", reason="MODEL_NOT_FOUND")
            raise Unavailable(f"no node that has model '{name}' is reachable")
        candidates.sort(key=lambda c: (not c.loaded, c.load))
        deadline = time.monotonic() + timeout_s
        last = ""
        for cand in candidates[:3]:
            try:
                reply = await self._transport.call_json(
                    cand.address, "/api/show", body, timeout_s=max(0.05, deadline - time.monotonic())
                )
                if isinstance(reply, dict):
                    return reply
            except NodeError as err:
                if err.model_missing:
                    self._board.mark_missing(cand.node_id, model)
                    continue
                last = err.message
        if last:
            raise Unavailable(f"no node answered /api/show for '{name}': {last}")
        raise NotFound(f"model '{name}' not found", reason="MODEL_NOT_FOUND")

    def ps(self) -> dict[str, Any]:
        """Loaded models in /api/ps form, one entry per (node, model), from the score copy."""
        entries: list[dict[str, Any]] = []
        for node in sorted(self._board.nodes.values(), key=lambda n: n.node_id):
            for view in (node.models or {}).values():
                if not view.loaded:
                    continue
                entries.append(
                    {
                        "name": view.name,
                        "model": view.name,
                        "size": view.size_loaded_bytes or view.size_bytes,
                        "size_vram": view.size_vram_bytes,
                        "digest": "",
                        "details": {},
                        "expires_at": _rfc3339(view.expires_at_s) if view.expires_at_s else "",
                        "context_length": view.context_length,
                        "node_id": node.node_id,
                    }
                )
        entries.sort(key=lambda e: e["expires_at"], reverse=True)
        return {"models": entries}
