"""The near-miss guard's evaluation set (bench/data/guard_eval/pairs.jsonl): loader and validator.

Each row is a pair of questions, `a` stored and `b` looked up, labelled "paraphrase" (the same
answer serves both) or "near_miss" (an answer to `a` would be wrong for `b`), with the kind of
difference, the domain and the split. "tune" may be used to study and change the guard; "test" is
only for reporting numbers, never for changing it. bench/data/guard_eval/README.md describes the
set; bench/data/guard_eval/build.py writes it.

Run: `PYTHONPATH=. .venv/bin/python bench/guard_eval.py` (validates and prints the counts).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "guard_eval" / "pairs.jsonl"
# NOTE: the sets the guard was tuned on; no question of this set may occur in them.
TUNED_ON = sorted((ROOT / "bench" / "data").glob("cache_pairs*.jsonl"))

NEAR_MISS_KINDS = (
    "number_unit",
    "scalar",
    "role_direction",
    "polarity_verb",
    "negation",
    "entity_attribute",
    "version_time",
)
PARAPHRASE_KINDS = (
    "lexical",
    "syntactic",
    "verb_synonym",
    "idiom_adverb",
    "article_determiner",
    "verbose_terse",
    "typo_casing",
)
KINDS = NEAR_MISS_KINDS + PARAPHRASE_KINDS
KIND_LABEL = {kind: "near_miss" for kind in NEAR_MISS_KINDS} | {
    kind: "paraphrase" for kind in PARAPHRASE_KINDS
}
LABELS = ("paraphrase", "near_miss")
DOMAINS = ("ops_support", "programming", "general_knowledge", "rag_documents")
SPLITS = ("tune", "test")
FIELDS = ("id", "label", "kind", "domain", "split", "a", "b")

MIN_PER_KIND = 30
MIN_PER_DOMAIN = 100
MIN_TOTAL = 500

_ID = re.compile(r"g\d{4}")
_SPACE = re.compile(r"\s+")
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """Case, Unicode forms, curly quotes, runs of spaces and final punctuation folded."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    return _SPACE.sub(" ", text.lower()).strip().rstrip("?.!").strip()


def duplicate_key(text: str) -> str:
    """A looser form for finding the same question twice: punctuation dropped as well."""
    # NOTE: too loose to tell `items[::2]` from `items[::-2]`, so it only compares questions of
    # different pairs; the two sides of a near-miss are compared with normalise().
    return _SPACE.sub(" ", _PUNCTUATION.sub(" ", normalise(text))).strip()


def load(split: str | None = None, path: Path = DATA) -> list[dict[str, str]]:
    """The pairs in file order, all of them or one split's."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, not {split!r}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if split is None or row["split"] == split]


def _tuned_on_questions() -> set[str]:
    questions: set[str] = set()
    for path in TUNED_ON:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                questions |= {duplicate_key(row["a"]), duplicate_key(row["b"])}
    return questions


def _schema_problems(index: int, row: Any) -> list[str]:
    where = f"line {index + 1}"
    if not isinstance(row, dict):
        return [f"{where}: not an object"]
    problems: list[str] = []
    if set(row) != set(FIELDS):
        problems.append(f"{where}: fields {sorted(row)} are not {sorted(FIELDS)}")
    for field in FIELDS:
        if not isinstance(row.get(field), str) or not row.get(field, "").strip():
            problems.append(f"{where}: {field} is missing or not a non-empty string")
    if problems:
        return problems
    where = f"{where} ({row['id']})"
    if not _ID.fullmatch(row["id"]):
        problems.append(f"{where}: id is not g + 4 digits")
    if row["label"] not in LABELS:
        problems.append(f"{where}: unknown label {row['label']!r}")
    if row["kind"] not in KINDS:
        problems.append(f"{where}: unknown kind {row['kind']!r}")
    elif KIND_LABEL[row["kind"]] != row["label"]:
        problems.append(f"{where}: kind {row['kind']} belongs to label {KIND_LABEL[row['kind']]}")
    if row["domain"] not in DOMAINS:
        problems.append(f"{where}: unknown domain {row['domain']!r}")
    if row["split"] not in SPLITS:
        problems.append(f"{where}: unknown split {row['split']!r}")
    if row["a"] == row["b"]:
        problems.append(f"{where}: a and b are the same text")
    elif row["label"] == "near_miss" and normalise(row["a"]) == normalise(row["b"]):
        problems.append(f"{where}: a near-miss whose sides differ only in case or punctuation")
    return problems


def validate(path: Path = DATA) -> dict[str, Any]:
    """Checks the set and returns its counts.

    Checks: the schema and the allowed labels, kinds, domains and splits; unique ids; no pair and no
    question twice (after normalising); no question from bench/data/cache_pairs*.jsonl; at least
    MIN_PER_KIND pairs per kind, MIN_PER_DOMAIN per domain and MIN_TOTAL in all; every label x kind
    in both splits, and each label x kind x domain cell split within one pair of half and half.

    Raises:
        ValueError: listing every problem found.
    """
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    problems: list[str] = []
    for index, row in enumerate(rows):
        problems += _schema_problems(index, row)
    if problems:
        raise ValueError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(problems))

    ids = Counter(row["id"] for row in rows)
    problems += [f"id {i} occurs {n} times" for i, n in sorted(ids.items()) if n > 1]
    pairs = Counter(frozenset((duplicate_key(row["a"]), duplicate_key(row["b"]))) for row in rows)
    problems += [f"pair {sorted(p)} occurs {n} times" for p, n in pairs.items() if n > 1]
    # NOTE: a question may appear in one pair only: otherwise a paraphrase could be served
    # another pair's identical question in retrieval, and a text could sit in both splits.
    seen: dict[str, str] = {}
    for row in rows:
        for side in ("a", "b"):
            key = duplicate_key(row[side])
            if key in seen and seen[key] != row["id"]:
                problems.append(f"{row['id']}.{side} repeats a question of {seen[key]}: {row[side]!r}")
            seen.setdefault(key, row["id"])
    tuned = _tuned_on_questions()
    for row in rows:
        for side in ("a", "b"):
            if duplicate_key(row[side]) in tuned:
                problems.append(f"{row['id']}.{side} occurs in bench/data/cache_pairs*.jsonl: {row[side]!r}")

    kinds = Counter(row["kind"] for row in rows)
    domains = Counter(row["domain"] for row in rows)
    problems += [
        f"kind {k} has {kinds[k]} pairs (< {MIN_PER_KIND})" for k in KINDS if kinds[k] < MIN_PER_KIND
    ]
    problems += [
        f"domain {d} has {domains[d]} pairs (< {MIN_PER_DOMAIN})"
        for d in DOMAINS
        if domains[d] < MIN_PER_DOMAIN
    ]
    if len(rows) < MIN_TOTAL:
        problems.append(f"{len(rows)} pairs (< {MIN_TOTAL})")
    cells = Counter((row["kind"], row["domain"], row["split"]) for row in rows)
    for kind in KINDS:
        for split in SPLITS:
            if not any(cells[kind, domain, split] for domain in DOMAINS):
                problems.append(f"{KIND_LABEL[kind]} x {kind} is missing from the {split} split")
        for domain in DOMAINS:
            tune, test = cells[kind, domain, "tune"], cells[kind, domain, "test"]
            if abs(tune - test) > 1:
                problems.append(f"{kind} x {domain}: {tune} tune against {test} test (not stratified)")
    if problems:
        raise ValueError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(problems))

    return {
        "pairs": len(rows),
        "labels": {label: sum(row["label"] == label for row in rows) for label in LABELS},
        "splits": {split: sum(row["split"] == split for row in rows) for split in SPLITS},
        "kinds": {kind: kinds[kind] for kind in KINDS},
        "domains": {domain: domains[domain] for domain in DOMAINS},
        "kind_by_split": {
            kind: {split: sum(cells[kind, d, split] for d in DOMAINS) for split in SPLITS} for kind in KINDS
        },
        "domain_by_split": {
            domain: {split: sum(cells[k, domain, split] for k in KINDS) for split in SPLITS}
            for domain in DOMAINS
        },
    }


if __name__ == "__main__":
    print(json.dumps(validate(), indent=2))
