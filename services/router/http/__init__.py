"""Ollama- and OpenAI-compatible HTTP API of the router (aiohttp, in the router process)."""

from services.router.http.app import build_http_app, start_http_server
from services.router.http.protocol import RouterCoreProtocol

__all__ = ["RouterCoreProtocol", "build_http_app", "start_http_server"]
