"""The floor of an exact cache hit: the cheapest HTTP server that can answer one.

One aiohttp handler on `POST /api/chat`: it reads the body, hashes it into a key, does one Redis
`GET` and returns the value as the answer (404 in Ollama's error shape when the key is absent). No
validation, no routing, no tenants, no metrics: what any server answering an exact hit over HTTP from
Redis has to do at least. bench/router_overhead.py prepares the value with `key_for` and measures
this server with the same client and concurrency as the router's hit rows (`floor_hit_http`).

    python -m bench.floor_hit --redis-url redis://127.0.0.1:6379/0 [--password-file FILE]

Prints `serving on 127.0.0.1:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from pathlib import Path

PREFIX = "floor:"


def key_for(body: bytes) -> str:
    """The Redis key of the answer to a request body (the body's bytes, as sent)."""
    return PREFIX + hashlib.sha256(body).hexdigest()


def serve(redis_url: str, password: str | None, port: int) -> None:
    import uvloop
    from aiohttp import web

    from services.cache.exact_store import connect

    not_found = b'{"error":"not in the cache"}'

    async def main() -> None:
        # NOTE: the client the cache service builds: no retries, no CLIENT SETINFO, the password set on
        # the pool.
        client = connect(redis_url, password, max_connections=256)

        async def chat(request: web.Request) -> web.Response:
            value = await client.get(key_for(await request.read()))
            if value is None:
                return web.Response(status=404, body=not_found, content_type="application/json")
            return web.Response(body=value, content_type="application/json")

        app = web.Application()
        app.router.add_post("/api/chat", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = runner.addresses[0][1]
        print(f"serving on 127.0.0.1:{bound}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await client.aclose()

    uvloop.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--password-file", default="", help="a file holding Redis's password")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    secret = Path(args.password_file).read_text().strip() if args.password_file else None
    serve(args.redis_url, secret, args.port)
