"""Word-level judgement for the near-miss guard: are two replaced words interchangeable?

The guard refuses a candidate whose topic words equal the query's but for one or two words replaced
by other ones ("swap"): install numpy / install pandas. Word lists cannot know every synonym
(purpose / role, penalty / fine), so the guard can ask a judge. `EmbeddingWordJudge` asks the
cache's own embedder: it embeds each replaced word or short phrase on its own (context-free),
keeps the vectors in an LRU, and calls two spans interchangeable when their cosine reaches
`threshold`. The guard asks only after its rules have ruled out the hard cases (numbers, units,
scales, negations, opposites, names, two distinct operations, two members of a distinct class), so
the judge never overrides them.

A judge only helps when the embedder's vectors carry meaning: an embedder declares it with a
`semantic` attribute (True for MiniLM and Ollama models, False for the hashing embedder used in
tests). With a non-semantic embedder the judge answers None and the guard's word rules decide.

The guard is synchronous and does no I/O, so the vectors must be in the LRU before `check` runs:
`prepare(query, candidate)` embeds the spans `guard.check` will ask about (only when the two prompts
differ in a replaced span, a few short texts in one batch).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import numpy as np

from services.cache import guard
from services.cache.embedders import Embedder, Vector

# NOTE: chosen on the tune split of bench/data/guard_eval: with MiniLM, paraphrase spans reach
# 0.71-0.74 (alter/change, veggie/vegetable) while the closest near-miss span that the rules leave to
# the judge is 0.68 (acetic acid / acetone).
DEFAULT_THRESHOLD = 0.70
DEFAULT_SIZE = 4096


class EmbeddingWordJudge:
    """Interchangeable words by the cosine of their context-free vectors from a semantic embedder."""

    def __init__(
        self,
        embedder: Embedder,
        threshold: float = DEFAULT_THRESHOLD,
        size: int = DEFAULT_SIZE,
        timeout_s: float = 1.0,
    ) -> None:
        self._embedder = embedder
        self._threshold = threshold
        self._size = size
        self._timeout_s = timeout_s
        self._vectors: OrderedDict[str, Vector] = OrderedDict()
        self.embed_calls = 0

    @property
    def semantic(self) -> bool:
        """Whether the embedder's vectors carry meaning (its `semantic` attribute; False if absent)."""
        return bool(getattr(self._embedder, "semantic", False))

    def _get(self, text: str) -> Vector | None:
        vector = self._vectors.get(text)
        if vector is not None:
            self._vectors.move_to_end(text)
        return vector

    def _put(self, text: str, vector: Vector) -> None:
        self._vectors[text] = vector
        self._vectors.move_to_end(text)
        while len(self._vectors) > self._size:
            self._vectors.popitem(last=False)

    def missing(self, query: str, candidate: str) -> list[str]:
        """The replaced spans `check(query, candidate)` may ask about that the LRU lacks (none when
        the embedder is not semantic)."""
        if not self.semantic:
            return []
        spans = {text for pair in guard.replaced_spans(query, candidate) for text in pair}
        return sorted(spans - self._vectors.keys())

    def remember(self, texts: list[str], vectors: list[Vector]) -> None:
        """Stores vectors computed elsewhere (an evaluation embedding many spans in one batch)."""
        for text, vector in zip(texts, vectors, strict=True):
            self._put(text, vector)

    async def prepare(self, query: str, candidate: str) -> None:
        """Embeds the replaced spans `check(query, candidate)` may ask about and that the LRU lacks.

        Nothing is embedded when the embedder is not semantic or the prompts differ in no replaced
        span. An embedder error leaves the spans out, and the word rules decide.
        """
        missing = self.missing(query, candidate)
        if not missing:
            return
        self.embed_calls += len(missing)
        results = await asyncio.gather(
            *(self._embedder.embed(text, self._timeout_s) for text in missing), return_exceptions=True
        )
        for text, result in zip(missing, results, strict=True):
            if isinstance(result, np.ndarray):
                self._put(text, result)

    def similarity(self, x: str, y: str) -> float | None:
        """The cosine of the two spans' vectors, or None when either is not embedded."""
        vx, vy = self._get(x), self._get(y)
        if vx is None or vy is None:
            return None
        return float(np.dot(vx, vy))

    def interchangeable(self, x: str, y: str) -> bool | None:
        """True when the spans are close enough to be read as synonyms, None when unknown."""
        if not self.semantic:
            return None
        score = self.similarity(x, y)
        return None if score is None else score >= self._threshold
