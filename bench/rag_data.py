"""The rag scenario's content: the corpus, its ingestion calls and the question trace (seeded).

The corpus and the questions come from bench/data/rag/ (written for this scenario; nothing there is
derived from bench/data/cache_pairs*.jsonl or bench/data/guard_eval/).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "rag"
SYSTEM_PROMPT = (
    "You are the technical service assistant of a hardware vendor. Answer the customer's question "
    "from the service documents below only. Name the error code or procedure you rely on, give the "
    "steps in order, and say so when the documents do not cover the question."
)
# NOTE: the products of a smoke run (its corpus and its questions), the first three of the catalog.
SMOKE_PRODUCTS = 3


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, embedded on its own."""

    chunk_id: str
    text: str


@dataclass(frozen=True)
class Document:
    """A document of the corpus: the chunks ingested together."""

    doc_id: str
    chunks: tuple[Chunk, ...]


@dataclass
class Turn:
    """One user turn: its text, label, and the group it belongs to."""

    text: str
    label: str  # first, repeat, paraphrase, near-miss, follow-up
    group: str
    kind: str = ""  # near-miss kind: number, negation, product
    retrieve: bool = True  # follow-ups reuse the first turn's retrieved context


@dataclass
class Conversation:
    """A conversation: its model, arrival time and turns (sent one after the other)."""

    conv_id: int
    model: str
    at_s: float
    turns: list[Turn] = field(default_factory=list)


def catalog() -> dict[str, Any]:
    """The product catalog (bench/data/rag/catalog.json)."""
    doc: dict[str, Any] = json.loads((DATA / "catalog.json").read_text())
    return doc


def question_groups() -> list[dict[str, Any]]:
    """The question groups (bench/data/rag/questions.jsonl)."""
    lines = (DATA / "questions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _product_documents(product: dict[str, Any]) -> list[Document]:
    name = product["name"]
    slug = name.lower().replace(" ", "-")
    manual = [
        Chunk(
            f"{slug}/overview",
            f"{name} ({product['kind']}), current firmware {product['firmware']}. Specifications: "
            f"{product['specs']}.",
        )
    ]
    for title, steps in product["procedures"]:
        manual.append(Chunk(f"{slug}/proc/{title.replace(' ', '-')}", f"{name}, {title}: {steps}."))
    errors = [
        Chunk(f"{slug}/error/{code}", f"{name} error {code}, {title}. Cause: {cause}. What to do: {fix}.")
        for code, title, cause, fix in product["errors"]
    ]
    return [Document(f"{slug}/manual", tuple(manual)), Document(f"{slug}/errors", tuple(errors))]


def _bulk_documents(bulk: dict[str, Any], versions: int, rng: random.Random) -> list[Document]:
    """Release notes of the products only named in bulk: one document per product, a chunk a version."""
    docs = []
    for family, kind in zip(bulk["families"], bulk["kinds"], strict=True):
        model = f"{family} {rng.randint(2, 9)}{rng.choice('05')}"
        slug = model.lower().replace(" ", "-")
        chunks = []
        for v in range(1, versions + 1):
            topic, other = rng.sample(bulk["topics"], 2)
            issue = rng.randint(100, 999)
            chunks.append(
                Chunk(
                    f"{slug}/notes/{v}",
                    f"{model} {kind}, firmware {v // 10 + 1}.{v % 10} release notes: reworked the {topic}; "
                    f"fixed issue {issue} in the {other}, which could stop the device after "
                    f"{rng.randint(2, 48)} hours; upgrade with the web interface, settings are kept.",
                )
            )
        docs.append(Document(f"{slug}/notes", tuple(chunks)))
    return docs


def corpus(smoke: bool, seed: int) -> list[Document]:
    """The documents: the catalog's products (the first three in a smoke run), plus release notes of
    eight more products in a full run."""
    cat = catalog()
    products = cat["products"][:SMOKE_PRODUCTS] if smoke else cat["products"]
    docs = [d for p in products for d in _product_documents(p)]
    if not smoke:
        docs += _bulk_documents(cat["bulk"], 30, random.Random(seed))
    return docs


def ingest_calls(docs: list[Document], seed: int, batch: int = 5) -> tuple[list[list[Chunk]], int]:
    """The embedding calls of the ingestion, `batch` chunks each (a document's last call may be
    smaller): every document once, then a third of them (seeded) again, as a re-index would.

    Returns the calls and how many of them are the re-ingestion (at the end).
    """

    def calls_of(selected: list[Document]) -> list[list[Chunk]]:
        out = []
        for doc in selected:
            for i in range(0, len(doc.chunks), batch):
                out.append(list(doc.chunks[i : i + batch]))
        return out

    rng = random.Random(seed)
    again = rng.sample(docs, max(1, len(docs) // 3))
    first, second = calls_of(docs), calls_of(again)
    return first + second, len(second)


def products_in(smoke: bool) -> list[str]:
    """Product names of the corpus (for choosing the question groups)."""
    products = catalog()["products"]
    return [p["name"] for p in (products[:SMOKE_PRODUCTS] if smoke else products)]


def trace(
    smoke: bool, seed: int, rate_rps: float, models: tuple[str, str], repeats: int
) -> list[Conversation]:
    """The question trace: conversations with Poisson arrival times at `rate_rps`.

    Per question group: its first ask, `repeats` byte-identical repeats, each paraphrase once, each
    labelled near-miss once (after the first ask, so that a cache could wrongly answer it), and on the
    first ask and the first repeat the group's follow-up turns. A group's model is `models[1]` (the
    larger one) when the group is marked hard, else `models[0]`. In a smoke run: the groups of the
    smoke corpus's products, one paraphrase each.
    """
    rng = random.Random(seed)
    names = products_in(smoke)
    groups = [g for g in question_groups() if any(n in g["question"] for n in names)]
    if smoke:
        groups = groups[:5]
    events: list[tuple[str, list[Turn]]] = []
    for g in groups:
        gid = g["id"]
        follow = [Turn(t, "follow-up", gid, retrieve=False) for t in g["follow_ups"]]
        events.append((gid, [Turn(g["question"], "first", gid), *follow]))
        for r in range(repeats):
            events.append((gid, [Turn(g["question"], "repeat", gid), *(follow if r == 0 else [])]))
        for text in g["paraphrases"][: 1 if smoke else None]:
            events.append((gid, [Turn(text, "paraphrase", gid)]))
        for nm in g["near_misses"]:
            events.append((gid, [Turn(nm["text"], "near-miss", gid, kind=nm["kind"])]))
    rng.shuffle(events)
    # NOTE: a group's first ask takes the earliest of its positions, so every repeat, paraphrase and
    # near-miss comes after an answer a cache could (wrongly, for a near-miss) serve.
    for g in groups:
        positions = [i for i, (gid, _) in enumerate(events) if gid == g["id"]]
        first = next(i for i in positions if events[i][1][0].label == "first")
        events[positions[0]], events[first] = events[first], events[positions[0]]
    hard = {g["id"] for g in groups if g["hard"]}
    t = 0.0
    out = []
    for i, (gid, turns) in enumerate(events):
        t += rng.expovariate(rate_rps)
        out.append(Conversation(i, models[1] if gid in hard else models[0], round(t, 3), turns))
    return out


def anchors() -> dict[str, str]:
    """Each group's first question, by group id (a near-miss's anchor)."""
    return {g["id"]: g["question"] for g in question_groups()}
