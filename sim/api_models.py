"""Ollama model-management endpoints: /, /api/version, /api/tags, /api/ps, /api/show, pull, delete, copy."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from aiohttp import web

from sim.config import ModelSpec, normalize_model_name
from sim.engine import Engine
from sim.wire import ApiError, Fields, json_response, read_body, rfc3339, send_line, start_ndjson

# NOTE: Go's time.Time for "forever" (MaxInt64 duration from now) lands in year 2318.
_FOREVER_AT = "2318-01-01T00:00:00.000000Z"
_PULL_CHUNKS_PER_LAYER = 8
_PULL_CHUNK_S = 0.06


def details(spec: ModelSpec) -> dict[str, Any]:
    """The `details` object of tags, ps and show."""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": spec.parameter_size,
        "quantization_level": spec.quantization_level,
    }


def _layers(spec: ModelSpec) -> list[tuple[str, int]]:
    def digest(part: str) -> str:
        return "sha256:" + hashlib.sha256(f"{spec.digest}:{part}".encode()).hexdigest()

    small = [("template", 1_429), ("license", 7_711), ("params", 96)]
    model_bytes = max(1, spec.size_bytes - sum(n for _, n in small))
    return [(digest("model"), model_bytes)] + [(digest(part), n) for part, n in small]


class ModelsApi:
    """Handlers bound to one node's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def root(self, request: web.Request) -> web.Response:
        """GET and HEAD /."""
        return web.Response(text="Ollama is running", content_type="text/plain")

    async def version(self, request: web.Request) -> web.Response:
        """GET /api/version."""
        return json_response({"version": self.engine.cfg.version})

    async def tags(self, request: web.Request) -> web.Response:
        """GET /api/tags: installed models, never null."""
        models = [
            {
                "name": spec.name,
                "model": spec.name,
                "modified_at": spec.modified_at,
                "size": spec.size_bytes,
                "digest": spec.digest,
                "details": details(spec),
            }
            for spec in self.engine.installed.values()
        ]
        return json_response({"models": models})

    async def ps(self, request: web.Request) -> web.Response:
        """GET /api/ps: loaded models, latest expiry first."""
        cfg = self.engine.cfg
        entries: list[dict[str, Any]] = []
        for runner in self.engine.runners.values():
            spec = runner.spec
            kv_bytes = min(cfg.num_ctx, spec.context_length) * len(runner.slots) * 32 * 1024
            size = spec.size_bytes + kv_bytes // 16
            expires = _FOREVER_AT if math.isinf(runner.expires_at) else rfc3339(runner.expires_at)
            entries.append(
                {
                    "name": spec.name,
                    "model": spec.name,
                    "size": size,
                    "digest": spec.digest,
                    "details": details(spec),
                    "expires_at": expires,
                    "size_vram": size if cfg.gpu else 0,
                    "context_length": min(cfg.num_ctx, spec.context_length),
                }
            )
        entries.sort(key=lambda e: str(e["expires_at"]), reverse=True)
        return json_response({"models": entries})

    def _name(self, f: Fields) -> str:
        # NOTE: older clients send "name" instead of "model".
        return f.string("model") or f.string("name")

    async def show(self, request: web.Request) -> web.Response:
        """POST /api/show."""
        f = Fields(await read_body(request, "ShowRequest"), "ShowRequest")
        name = self._name(f)
        if not name:
            raise ApiError(400, "model is required")
        spec = self.engine.resolve(name)
        if spec is None:
            raise ApiError(404, f"model '{name}' not found")
        arch = spec.family.replace("-", "")
        model_info: dict[str, Any] = {
            "general.architecture": arch,
            "general.basename": spec.name.split(":")[0],
            "general.file_type": 7,
            "general.parameter_count": _parameter_count(spec.parameter_size),
            f"{arch}.context_length": spec.context_length,
            f"{arch}.embedding_length": spec.embedding_length,
        }
        template = "{{ .Prompt }}" if spec.is_embedding else "{{- range .Messages }}{{ .Content }}{{ end }}"
        parameters = "num_ctx 8192" if spec.is_embedding else 'stop "<|eot_id|>"'
        return json_response(
            {
                "license": "Simulated model licence text.",
                "modelfile": f'# Modelfile by corral-sim\nFROM {spec.name}\nTEMPLATE """{template}"""\n',
                "parameters": parameters,
                "template": template,
                "details": details(spec),
                "model_info": model_info,
                "capabilities": list(spec.capabilities),
                "modified_at": spec.modified_at,
            }
        )

    async def pull(self, request: web.Request) -> web.StreamResponse:
        """POST /api/pull: streamed progress, then `success`; the model becomes installed."""
        f = Fields(await read_body(request, "PullRequest"), "PullRequest")
        name = self._name(f)
        stream = f.boolean("stream", True)
        spec = self.engine.catalog.get(normalize_model_name(name)) if name else None
        if not stream:
            if spec is None:
                raise ApiError(500, "pull model manifest: file does not exist")
            await self._download(spec, None)
            return json_response({"status": "success"})
        response = await start_ndjson(request)
        await send_line(response, {"status": "pulling manifest"})
        if spec is None:
            await send_line(response, {"error": "pull model manifest: file does not exist"})
        else:
            await self._download(spec, response)
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                await send_line(response, {"status": status})
        await response.write_eof()
        return response

    async def _download(self, spec: ModelSpec, response: web.StreamResponse | None) -> None:
        present = spec.key in self.engine.installed
        for digest, total in _layers(spec):
            line = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
            if present:
                if response is not None:
                    await send_line(response, {**line, "completed": total})
                continue
            chunk_s = max(_PULL_CHUNK_S, total / self.engine.cfg.pull_bytes_per_s / _PULL_CHUNKS_PER_LAYER)
            chunks = max(
                1, min(_PULL_CHUNKS_PER_LAYER, math.ceil(total / self.engine.cfg.pull_bytes_per_s / chunk_s))
            )
            for i in range(1, chunks + 1):
                await self.engine.sleep(chunk_s)
                if response is not None:
                    await send_line(response, {**line, "completed": total * i // chunks})
        if not present:
            self.engine.installed[spec.key] = spec.model_copy(update={"modified_at": rfc3339(time.time())})

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/delete: 200 with an empty body."""
        f = Fields(await read_body(request, "DeleteRequest"), "DeleteRequest")
        name = self._name(f)
        spec = self.engine.resolve(name) if name else None
        if spec is None:
            raise ApiError(404, f"model '{name}' not found")
        runner = self.engine.runners.get(spec.key)
        if runner is not None:
            self.engine.request_unload(spec)
        del self.engine.installed[spec.key]
        return web.Response(status=200)

    async def copy(self, request: web.Request) -> web.Response:
        """POST /api/copy: 200 with an empty body."""
        f = Fields(await read_body(request, "CopyRequest"), "CopyRequest")
        source, destination = f.string("source"), f.string("destination")
        spec = self.engine.resolve(source) if source else None
        if spec is None:
            raise ApiError(404, f'model "{source}" not found')
        if not destination:
            raise ApiError(400, "destination is required")
        copy = ModelSpec.model_validate({**spec.model_dump(), "name": destination})
        self.engine.installed[copy.key] = copy
        return web.Response(status=200)


def _parameter_count(size: str) -> int:
    units = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
    try:
        return int(float(size[:-1]) * units[size[-1].upper()])
    except (KeyError, ValueError, IndexError):
        return 0
