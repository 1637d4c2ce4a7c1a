"""The guard's word judge by behaviour: a replaced word the embedder reads as a synonym passes, the
rules still refuse what they know to differ, and a non-semantic embedder leaves the decision to them.

`TableEmbedder` is a small semantic embedder: each known word or phrase has a fixed vector, words of
one meaning share a direction, any other text gets its own.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from services.cache import guard
from services.cache.embedders import MINILM_DIMS, EmbedderError, HashingEmbedder, Vector, normalise
from services.cache.guard_words import EmbeddingWordJudge


class TableEmbedder:
    """Vectors from a table of meanings: texts in one group are near-identical (cosine ~0.99)."""

    semantic = True

    def __init__(self, groups: list[list[str]], failing: frozenset[str] = frozenset()) -> None:
        self._meaning = {text: index for index, group in enumerate(groups) for text in group}
        self._failing = failing
        self.embedded: list[str] = []

    @property
    def name(self) -> str:
        return "table:8"

    @property
    def dims(self) -> int:
        return MINILM_DIMS

    def _direction(self, key: str) -> Vector:
        seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")
        return normalise(np.random.default_rng(seed).standard_normal(MINILM_DIMS))

    async def embed(self, text: str, timeout_s: float) -> Vector:
        self.embedded.append(text)
        if text in self._failing:
            raise EmbedderError("down")
        if text not in self._meaning:
            return self._direction("text:" + text)
        # NOTE: a group's shared direction plus a little of the text's own: close, not identical.
        return normalise(
            self._direction(f"group:{self._meaning[text]}") + 0.1 * self._direction("text:" + text)
        )

    async def close(self) -> None:
        return None


SYNONYMS = [
    ["purpose", "role"],
    ["penalty", "fine"],
    ["enable", "disable"],
    ["install", "configure"],
    ["cpu", "memory"],
    ["numpy", "pandas"],
]


async def judged(a: str, b: str, embedder: object, **kwargs: float) -> tuple[str | None, str | None]:
    """guard.check both ways round with a judge prepared for both."""
    judge = EmbeddingWordJudge(embedder, **kwargs)  # type: ignore[arg-type]
    await judge.prepare(a, b)
    await judge.prepare(b, a)
    return guard.check(a, b, judge), guard.check(b, a, judge)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "What is the purpose of the __init__ method in Python?",
            "What is the role of the __init__ method in Python?",
        ),
        (
            "According to the contract, what is the penalty for late delivery?",
            "According to the contract, what is the fine for late delivery?",
        ),
    ],
)
async def test_a_synonym_swap_judged_interchangeable_by_the_embedder_passes(a: str, b: str) -> None:
    assert (guard.check(a, b), guard.check(b, a)) == ("swap", "swap")
    assert await judged(a, b, TableEmbedder(SYNONYMS)) == (None, None)


async def test_an_unrelated_replacement_is_still_a_swap_with_a_semantic_embedder() -> None:
    a, b = "What is the purpose of the __init__ method?", "What is the cost of the __init__ method?"
    assert await judged(a, b, TableEmbedder(SYNONYMS)) == ("swap", "swap")


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("How do I enable TLS in nginx?", "How do I disable TLS in nginx?", "antonym"),
        ("How do I install Redis on Ubuntu?", "How do I configure Redis on Ubuntu?", "swap"),
        (
            "How do I check the cpu usage of a container?",
            "How do I check the memory usage of a container?",
            "swap",
        ),
        ("How do I install NumPy?", "How do I install Pandas?", "entity"),
        ("How many seconds are in a day?", "How many seconds are in a week?", "swap"),
    ],
)
async def test_a_known_distinct_pair_is_refused_even_when_the_embedder_says_similar(
    a: str, b: str, reason: str
) -> None:
    groups = [*SYNONYMS, ["day", "week"]]
    assert await judged(a, b, TableEmbedder(groups)) == (reason, reason)


async def test_with_a_non_semantic_embedder_the_word_rules_decide_and_nothing_is_embedded() -> None:
    a, b = "What is the purpose of the __init__ method?", "What is the role of the __init__ method?"
    judge = EmbeddingWordJudge(HashingEmbedder())
    await judge.prepare(a, b)
    assert judge.embed_calls == 0
    assert guard.check(a, b, judge) == "swap"


async def test_spans_not_prepared_or_not_embedded_leave_the_decision_to_the_rules() -> None:
    a, b = "What is the purpose of the __init__ method?", "What is the role of the __init__ method?"
    unprepared = EmbeddingWordJudge(TableEmbedder(SYNONYMS))
    assert guard.check(a, b, unprepared) == "swap"
    assert await judged(a, b, TableEmbedder(SYNONYMS, failing=frozenset({"role"}))) == ("swap", "swap")


async def test_only_the_replaced_spans_are_embedded_once_and_prompts_without_one_embed_nothing() -> None:
    embedder = TableEmbedder(SYNONYMS)
    judge = EmbeddingWordJudge(embedder)
    a, b = "What is the purpose of the __init__ method?", "What is the role of the __init__ method?"
    await judge.prepare(a, b)
    await judge.prepare(b, a)
    assert sorted(embedder.embedded) == ["purpose", "role"]
    await judge.prepare("How do I enable TLS?", "how do i enable tls")
    assert sorted(embedder.embedded) == ["purpose", "role"]


async def test_the_lru_keeps_the_most_recent_spans() -> None:
    embedder = TableEmbedder(SYNONYMS)
    judge = EmbeddingWordJudge(embedder, size=2)
    a, b = "What is the purpose of the __init__ method?", "What is the role of the __init__ method?"
    await judge.prepare(a, b)
    await judge.prepare("What is the penalty for late delivery?", "What is the fine for late delivery?")
    assert judge.similarity("purpose", "role") is None
    assert guard.check(a, b, judge) == "swap"
    await judge.prepare(a, b)
    assert guard.check(a, b, judge) is None


async def test_the_threshold_decides_how_close_is_interchangeable() -> None:
    a, b = "What is the purpose of the __init__ method?", "What is the role of the __init__ method?"
    assert await judged(a, b, TableEmbedder(SYNONYMS), threshold=0.999) == ("swap", "swap")
