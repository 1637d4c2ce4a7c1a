"""Fleet-wide model management over Ollama's API: /api/pull, /api/delete, /api/copy (admin keys only).

A pull streams ONE progress in Ollama's shape: per layer digest, `total` and `completed` summed over
the selected nodes, then Ollama's closing statuses and `success`. Node failures do not interrupt the
stream (Ollama clients stop at the first `error` line): the stream ends with one error naming every
failed node, and the other nodes keep the model.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.common.auth import Access, require_access
from services.router.http.decode import Fields, read_object
from services.router.http.errors import ApiError, dumps, json_response
from services.router.http.streaming import NDJSON_CONTENT_TYPE
from services.router.model_admin import DONE, FAILED, ModelAdmin, NodeProgress, failure_summary
from services.router.scores import NodeView

# The header (or query parameter `nodes`) that narrows an operation to some nodes: comma-separated
# node ids and `label=value` items.
NODES_HEADER = "X-Corral-Nodes"

_CREATE_REFUSED = (
    "/api/create is not supported by Corral: a model is created from files on one node "
    "(/api/blobs); create it on a node, then /api/copy or /api/pull it through Corral"
)
_PUSH_REFUSED = (
    "/api/push is not supported by Corral: pushing publishes one node's copy to a registry; "
    "push from the node that built the model"
)


def selector_of(request: web.Request) -> list[str]:
    """The node selector of a request: the `nodes` query parameter, else the X-Corral-Nodes header."""
    if "nodes" in request.query:
        return request.query.getall("nodes")
    header = request.headers.get(NODES_HEADER, "")
    return [header] if header else []


def _done_header(results: list[NodeProgress]) -> dict[str, str]:
    return {NODES_HEADER: ",".join(r.node_id for r in results if r.state == DONE)}


def _merged_line(event_digest: str, nodes: list[NodeProgress]) -> dict[str, Any]:
    # NOTE: a digest names the same bytes on every node, so the layer's size times the selected nodes
    # is the summed total from the first line on: the official CLI fixes a bar's total when it first
    # sees the digest, and nodes still queued have not announced their layers yet.
    size = max((n.layers[event_digest][0] for n in nodes if event_digest in n.layers), default=0)
    total = size * len(nodes)
    completed = sum(n.layers[event_digest][1] for n in nodes if event_digest in n.layers)
    return {
        "status": f"pulling {event_digest.removeprefix('sha256:')[:12]}",
        "digest": event_digest,
        "total": total,
        "completed": completed,
    }


class ManageApi:
    """The model-management endpoints over the router's ModelAdmin."""

    def __init__(self, admin: ModelAdmin) -> None:
        self.admin = admin

    def _nodes(self, request: web.Request) -> list[NodeView]:
        return self.admin.select(selector_of(request))

    async def pull(self, request: web.Request) -> web.StreamResponse:
        """POST /api/pull — pulls on every selected node; merged progress unless `stream` is false."""
        require_access(Access.ADMIN, "POST /api/pull")
        fields = Fields(await read_object(request, "PullRequest"), "PullRequest")
        model = fields.string("model") or fields.string("name")
        stream = fields.boolean("stream")
        if not model:
            raise ApiError(400, "model is required")
        nodes = self._nodes(request)
        events = self.admin.pull(model, nodes)
        if stream is False:
            final: list[NodeProgress] = []
            async for event in events:
                final = event.nodes
            if final and all(n.state == FAILED and n.refused for n in final):
                # NOTE: every node said the model does not exist ("pull model manifest: file does
                # not exist"): the name is at fault, not the fleet, so not a 5xx (Ollama answers 500
                # here). Any other error (registry, DNS, disk) is a fleet failure: 502, which clients
                # retry, naming the nodes.
                raise ApiError(404, final[0].error)
            if any(n.state == FAILED for n in final):
                raise ApiError(502, failure_summary("pull", model, final))
            return json_response({"status": "success"}, headers=_done_header(final))
        response = web.StreamResponse(headers={"Content-Type": NDJSON_CONTENT_TYPE})
        await response.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await response.write((dumps(obj) + "\n").encode())

        await send({"status": "pulling manifest"})
        try:
            async for event in events:
                if event.done:
                    if any(n.state == FAILED for n in event.nodes):
                        await send({"error": failure_summary("pull", model, event.nodes)})
                    else:
                        for status in ("verifying sha256 digest", "writing manifest", "success"):
                            await send({"status": status})
                    break
                digest = event.line.get("digest")
                if isinstance(digest, str) and digest:
                    await send(_merged_line(digest, event.nodes))
        finally:
            await events.aclose()
        await response.write_eof()
        return response

    async def delete(self, request: web.Request) -> web.StreamResponse:
        """DELETE /api/delete — deletes on every selected node; 404 when none had the model."""
        require_access(Access.ADMIN, "DELETE /api/delete")
        fields = Fields(await read_object(request, "DeleteRequest"), "DeleteRequest")
        model = fields.string("model") or fields.string("name")
        if not model:
            raise ApiError(400, "model is required")
        results = await self.admin.delete(model, self._nodes(request))
        if any(r.state == FAILED for r in results):
            raise ApiError(502, failure_summary("delete", model, results))
        return web.Response(status=200, headers=_done_header(results))

    async def copy(self, request: web.Request) -> web.StreamResponse:
        """POST /api/copy — copies on every selected node that has the source model."""
        require_access(Access.ADMIN, "POST /api/copy")
        fields = Fields(await read_object(request, "CopyRequest"), "CopyRequest")
        source, destination = fields.string("source"), fields.string("destination")
        if not source:
            raise ApiError(400, "source is required")
        if not destination:
            raise ApiError(400, "destination is required")
        results = await self.admin.copy(source, destination, self._nodes(request))
        if any(r.state == FAILED for r in results):
            raise ApiError(502, failure_summary("copy", source, results))
        return web.Response(status=200, headers=_done_header(results))

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /api/create — refused (see _CREATE_REFUSED)."""
        raise ApiError(501, _CREATE_REFUSED)

    async def push(self, request: web.Request) -> web.StreamResponse:
        """POST /api/push — refused (see _PUSH_REFUSED)."""
        raise ApiError(501, _PUSH_REFUSED)
