"""The active-probe adapter: cheap Ollama calls over one pooled aiohttp session, each under a deadline."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import aiohttp

from services.health.registry import InstalledModel, LoadedModel, ProbeResult, normalize_model_name


class ProbeError(Exception):
    """A probe call failed; the message is for operators."""


def _parse_time(text: object) -> float:
    if not isinstance(text, str) or not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return 0.0


def _models(body: Any, path: str) -> list[dict[str, Any]]:
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise ProbeError(f"{path}: no 'models' list in the answer")
    return [m for m in models if isinstance(m, dict) and isinstance(m.get("name") or m.get("model"), str)]


def parse_ps(body: Any) -> tuple[LoadedModel, ...]:
    """Loaded models from an /api/ps answer."""
    return tuple(
        LoadedModel(
            name=normalize_model_name(str(m.get("name") or m.get("model"))),
            size_bytes=int(m.get("size") or 0),
            expires_at=_parse_time(m.get("expires_at")),
        )
        for m in _models(body, "/api/ps")
    )


def parse_tags(body: Any) -> tuple[InstalledModel, ...]:
    """Installed models from an /api/tags answer (capabilities when the node sends them)."""
    result = []
    for m in _models(body, "/api/tags"):
        caps = m.get("capabilities")
        result.append(
            InstalledModel(
                name=normalize_model_name(str(m.get("name") or m.get("model"))),
                size_bytes=int(m.get("size") or 0),
                capabilities=tuple(str(c) for c in caps) if isinstance(caps, list) else (),
            )
        )
    return tuple(result)


class Prober:
    """Probes Ollama nodes with GET /api/version and /api/ps (and /api/tags when asked).

    Never a generate: an embedding-only node must not look unhealthy, and a probe must not load a
    model or take a slot from real traffic.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # NOTE: a small per-host pool; probes are sequential per node. No proxies from the env.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=2, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def close(self) -> None:
        """Closes the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_json(self, base_url: str, path: str) -> Any:
        session = self._get_session()
        async with session.get(base_url + path) as response:
            if response.status != 200:
                text = (await response.text())[:200]
                raise ProbeError(f"{path}: HTTP {response.status} {text}".strip())
            try:
                return await response.json(content_type=None)
            except ValueError as exc:
                raise ProbeError(f"{path}: not JSON") from exc

    async def probe(self, base_url: str, want_tags: bool) -> ProbeResult:
        """Runs one probe; the whole probe shares one deadline of `timeout_s`."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                version_body = await self._get_json(base_url, "/api/version")
                version = version_body.get("version", "") if isinstance(version_body, dict) else ""
                loaded = parse_ps(await self._get_json(base_url, "/api/ps"))
                installed = parse_tags(await self._get_json(base_url, "/api/tags")) if want_tags else None
        except TimeoutError:
            return self._failed(started, f"probe timed out after {self.timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:
            return self._failed(started, f"connection failed: {exc.os_error or exc}")
        except (aiohttp.ClientError, ProbeError, ValueError, TypeError) as exc:
            return self._failed(started, f"{type(exc).__name__}: {exc}")
        return ProbeResult(
            ok=True,
            latency_ms=(time.perf_counter() - started) * 1000,
            version=str(version),
            loaded=loaded,
            installed=installed,
        )

    @staticmethod
    def _failed(started: float, error: str) -> ProbeResult:
        return ProbeResult(ok=False, latency_ms=(time.perf_counter() - started) * 1000, error=error)
