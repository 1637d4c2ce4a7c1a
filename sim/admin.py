"""Admin API of a node on its own port: faults, stats, requests, config and reset under `/_sim/`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

if TYPE_CHECKING:
    from sim.node import SimNode


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def build_admin_app(node: SimNode) -> web.Application:
    """Routes controlling `node`; they keep working while the API port refuses or hangs."""

    async def get_faults(request: web.Request) -> web.Response:
        return _json(node.faults.current.model_dump())

    async def post_faults(request: web.Request) -> web.Response:
        try:
            changes = await request.json()
        except ValueError as exc:
            return _json({"error": f"invalid JSON: {exc}"}, status=400)
        if not isinstance(changes, dict):
            return _json({"error": "expected a JSON object of fault fields"}, status=400)
        try:
            current = node.set_fault(**changes)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            return _json({"error": f"{field}: {first['msg']}"}, status=400)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(current.model_dump())

    async def delete_faults(request: web.Request) -> web.Response:
        return _json(node.clear_faults().model_dump())

    async def get_stats(request: web.Request) -> web.Response:
        return _json(node.stats())

    async def get_requests(request: web.Request) -> web.Response:
        return _json({"requests": node.transcripts()})

    async def get_config(request: web.Request) -> web.Response:
        return _json(node.config.model_dump(mode="json"))

    async def post_reset(request: web.Request) -> web.Response:
        node.engine.unload_all()
        return _json(node.stats())

    app = web.Application()
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_post("/_sim/faults", post_faults)
    app.router.add_delete("/_sim/faults", delete_faults)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_get("/_sim/requests", get_requests)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/reset", post_reset)
    return app
