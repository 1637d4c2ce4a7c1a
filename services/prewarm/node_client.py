"""Loads models on Ollama nodes over HTTP: an empty generate (or embed) with a keep-alive."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from services.prewarm.ports import PeerError


def keep_alive_value(keep_alive_s: float) -> int | float:
    """Ollama's keep_alive as a number of seconds (negative keeps the model loaded forever)."""
    if keep_alive_s < 0:
        return -1
    return int(keep_alive_s) if float(keep_alive_s).is_integer() else keep_alive_s


class OllamaNodeClient:
    """Sends warm-up requests to nodes with one pooled aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owned = session is None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # NOTE: aiohttp rather than httpx: DESIGN.md measured plain httpx collapsing under concurrency.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
            self._owned = True
        return self._session

    async def close(self) -> None:
        """Closes the session if this client created it."""
        if self._owned and self._session is not None:
            await self._session.close()

    async def warm(
        self, address: str, model: str, *, embedding: bool, keep_alive_s: float, timeout_s: float
    ) -> None:
        """Loads a model (POST /api/generate with an empty prompt, or /api/embed with no input).

        A node that does not report capabilities makes an embedding model look like a completion
        model; its 400 "does not support generate" answer makes the load go through /api/embed.

        Raises:
            PeerError: connection failure (unreachable), timeout, or an error status from the node.
        """
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    await self._load(address, model, embedding=embedding, keep_alive_s=keep_alive_s)
                except _NotGenerative:
                    await self._load(address, model, embedding=True, keep_alive_s=keep_alive_s)
        except TimeoutError:
            raise PeerError(f"no answer from {address} within {timeout_s:g} s") from None

    async def _load(self, address: str, model: str, *, embedding: bool, keep_alive_s: float) -> None:
        keep_alive = keep_alive_value(keep_alive_s)
        body: dict[str, object] = {"model": model, "keep_alive": keep_alive}
        if embedding:
            path = "/api/embed"
            body["input"] = []
        else:
            path = "/api/generate"
            body.update(prompt="", stream=False)
        url = address.rstrip("/") + path
        try:
            try:
                async with self._client().post(url, json=body) as response:
                    text = await response.text()
            except aiohttp.ClientConnectionError as exc:
                if isinstance(exc, aiohttp.ClientConnectorError):
                    raise
                # NOTE: a pooled keep-alive connection to a node that restarted is dead; a load is
                # idempotent, so try once more on a fresh connection before calling the node down.
                async with self._client().post(url, json=body) as response:
                    text = await response.text()
        except TimeoutError:
            raise PeerError(f"no answer from {address} in time") from None
        except aiohttp.ClientConnectionError as exc:
            raise PeerError(f"cannot reach {address}: {exc}", unreachable=True) from None
        except aiohttp.ClientError as exc:
            raise PeerError(f"HTTP error from {address}: {exc}") from None
        reply = _parse(text)
        error = reply.get("error") if isinstance(reply, dict) else None
        if response.status == 400 and not embedding and "does not support" in str(error):
            raise _NotGenerative(str(error))
        if response.status != 200:
            raise PeerError(f"{address} answered {response.status}: {error or text[:200]}")
        if not isinstance(reply, dict):
            raise PeerError(f"{address} sent a reply that is not a JSON object")
        if error:
            raise PeerError(f"{address}: {error}")


class _NotGenerative(Exception):
    """The node says the model cannot generate (an embedding model)."""


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
