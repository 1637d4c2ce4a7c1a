"""Near-miss guard: refuses a semantic candidate that asks a different question (no I/O).

Embeddings place "how do I enable TLS" and "how do I disable TLS" side by side, so a cosine
threshold alone serves the wrong answer. The guard compares the two prompts' hard tokens and
refuses the candidate when they differ in:

- number: the numbers (digits, versions, ports, IPs, hex codes, units' values, number words,
  ordinals) are not the same set;
- negation: one prompt is negated (not, no, never, without, n't, non-…) and the other is not;
- antonym: one prompt has a word and the other its opposite (a table of pairs, plus negating
  prefixes: install/uninstall, valid/invalid), compared after stemming;
- direction: "A to B" against "B to A" (convert Celsius to Fahrenheit and back);
- entity: a named thing (a capitalised word that does not start a sentence, an acronym, an
  identifier such as max_connections or node.js, a quoted or `code` span) that the other lacks;
- swap: the topic words are identical but for one word replaced by an unrelated one
  (install numpy / install pandas), where unrelated means neither synonyms nor the same stem.

docs/cache.md describes the rules and their measured effect on bench/data/cache_pairs.jsonl.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from dataclasses import dataclass

import snowballstemmer  # type: ignore[import-untyped]

from services.cache.guard_lexicon import (
    ANTONYM_PAIRS,
    GENERIC_VERBS,
    MIN_PREFIXED_STEM,
    NEGATING_PREFIXES,
    NEGATIONS,
    NUMBER_WORDS,
    PHRASES,
    STOPWORDS,
    SYNONYM_GROUPS,
)

_STEMMER = snowballstemmer.stemmer("english")

_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|(?<![\w])'([^']+)'(?![\w])")
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+#]*(?:[.\-/][A-Za-z0-9_+#]+)*")
_NUMBER = re.compile(r"0x[0-9a-f]+|\d+(?:\.\d+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_SENTENCE_END = re.compile(r"[.?!:;]\s*$")
_CONTRACTIONS = (
    (re.compile(r"\b(can)not\b", re.I), r"\1 not"),
    (re.compile(r"\bwon't\b", re.I), "will not"),
    (re.compile(r"\bcan't\b", re.I), "can not"),
    (re.compile(r"\bshan't\b", re.I), "shall not"),
    (re.compile(r"(\w)n't\b", re.I), r"\1 not"),
    (re.compile(r"(\w)'(s|re|ve|ll|d|m)\b", re.I), r"\1"),
)
_DIRECTION_WORDS = frozenset({"to", "into"})
_UPPER = re.compile(r"[A-Z]")
_IDENTIFIER_MARK = re.compile(r"[_.#+]")
_DIGIT = re.compile(r"\d")
_ALPHA = re.compile(r"[A-Za-z]")


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    # NOTE: the pure-Python Snowball stemmer takes ~0.2 ms a word; vocabularies repeat, so memoise.
    return str(_STEMMER.stemWord(word))


def _build_synonyms() -> dict[str, str]:
    canon: dict[str, str] = {}
    for group in SYNONYM_GROUPS:
        head = _stem(group[0])
        for word in group:
            canon.setdefault(_stem(word), head)
    return canon


_SYNONYMS = _build_synonyms()
_ANTONYMS = tuple((_stem(a), _stem(b)) for a, b in ANTONYM_PAIRS)
_NUMBER_WORDS = {_stem(word): value for word, value in NUMBER_WORDS.items()} | NUMBER_WORDS
_STOP_STEMS = frozenset(_stem(word) for word in STOPWORDS) | STOPWORDS
_GENERIC_VERBS = frozenset(_SYNONYMS.get(_stem(word), _stem(word)) for word in GENERIC_VERBS)
_PHRASE_MAP = {a: b for a, b in PHRASES}
_PHRASES_ANY_CASE = re.compile(r"\b(" + "|".join(re.escape(a) for a, _ in PHRASES) + r")\b", re.I)


@dataclass(frozen=True, slots=True)
class Analysis:
    """The hard tokens of one prompt.

    Attributes:
        words: Lower-case word tokens (contractions expanded, phrases joined).
        stems: Their stems.
        numbers: Normalised numbers.
        negated: True when a negation word occurs.
        entities: Named things, lower-case.
        topic: Topic stems in order (no stopwords, negations or numbers; synonyms merged).
        directions: (from, to) topic pairs around "to"/"into".
    """

    words: frozenset[str]
    stems: frozenset[str]
    numbers: frozenset[str]
    negated: bool
    entities: frozenset[str]
    topic: tuple[str, ...]
    directions: frozenset[tuple[str, str]]


def _entities(text: str) -> set[str]:
    found: set[str] = set()
    sentence_start = True
    position = 0
    for match in _WORD.finditer(text):
        gap = text[position : match.start()]
        if position and _SENTENCE_END.search(gap):
            sentence_start = True
        token = match.group(0)
        position = match.end()
        lower = token.lower()
        inner_caps = _UPPER.search(token, 1) is not None
        identifier = _IDENTIFIER_MARK.search(token) is not None or (
            _DIGIT.search(token) is not None and _ALPHA.search(token) is not None
        )
        capitalised = token[0].isupper() and not sentence_start and token != "I"
        if inner_caps or identifier or capitalised:
            found.add(lower)
        sentence_start = False
    return found


def _is_number(word: str) -> bool:
    return word[0].isdigit() or word in NUMBER_WORDS


@functools.lru_cache(maxsize=8192)
def analyse(text: str) -> Analysis:
    """Extracts the hard tokens of a prompt (cached: stored prompts come back as candidates)."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    entities: set[str] = set()
    for match in _QUOTED.finditer(text):
        span = next(group for group in match.groups() if group is not None)
        entities.add("quote:" + " ".join(span.lower().split()))
    text = _QUOTED.sub(lambda m: " " + next(g for g in m.groups() if g is not None) + " ", text)
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    text = _PHRASES_ANY_CASE.sub(lambda m: _PHRASE_MAP[m.group(0).lower()], text)
    entities |= _entities(text)
    lower = _THOUSANDS.sub("", text.lower())
    words = [m.group(0) for m in _WORD.finditer(lower)]
    numbers = set(_NUMBER.findall(lower))
    numbers |= {NUMBER_WORDS[w] for w in words if w in NUMBER_WORDS}
    negated = any(w in NEGATIONS or w.startswith("non-") for w in words)
    stems = [w if w[0].isdigit() else _stem(w) for w in words]
    topic: list[str] = []
    topic_at: list[int] = []
    for index, (word, stem) in enumerate(zip(words, stems, strict=True)):
        if word in STOPWORDS or stem in _STOP_STEMS or word in NEGATIONS or _is_number(word):
            continue
        topic.append(_SYNONYMS.get(stem, stem))
        topic_at.append(index)
    directions: set[tuple[str, str]] = set()
    for index, word in enumerate(words):
        if word not in _DIRECTION_WORDS:
            continue
        before = [t for t, at in zip(topic, topic_at, strict=True) if at < index]
        after = [t for t, at in zip(topic, topic_at, strict=True) if at > index]
        if before and after and before[-1] != after[0]:
            directions.add((before[-1], after[0]))
    return Analysis(
        words=frozenset(words),
        stems=frozenset(stems),
        numbers=frozenset(numbers),
        negated=negated,
        entities=frozenset(entities),
        topic=tuple(topic),
        directions=frozenset(directions),
    )


def _opposed(a: Analysis, b: Analysis) -> bool:
    """True when a has a word whose opposite is in b (and not the other way round as well)."""
    for left, right in _ANTONYMS:
        if left in a.stems and right in b.stems and right not in a.stems and left not in b.stems:
            return True
    only_a = a.stems - b.stems
    only_b = b.stems - a.stems
    for stem in only_a:
        if len(stem) >= MIN_PREFIXED_STEM and any(p + stem in only_b for p in NEGATING_PREFIXES):
            return True
    return False


def _missing_entity(a: Analysis, b: Analysis) -> bool:
    """True when a names something that b does not mention at all."""
    for entity in a.entities:
        if entity.startswith("quote:"):
            if entity not in b.entities:
                return True
            continue
        if entity not in b.words and entity not in b.entities and _stem(entity) not in b.stems:
            return True
    return False


def _related(x: str, y: str) -> bool:
    """Same stem family (summar/summari), or two generic verbs (make/send); synonyms are merged earlier."""
    if x in _GENERIC_VERBS and y in _GENERIC_VERBS:
        return True
    shorter, longer = sorted((x, y), key=len)
    return len(shorter) >= 5 and longer.startswith(shorter[:5])


def _swapped(a: Analysis, b: Analysis) -> bool:
    """True when the topics are the same but for one word replaced by an unrelated one."""
    matcher = difflib.SequenceMatcher(a=a.topic, b=b.topic, autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if len(changes) != 1:
        return False
    tag, i1, i2, j1, j2 = changes[0]
    if tag != "replace" or i2 - i1 != 1 or j2 - j1 != 1:
        return False
    if len(a.topic) < 2:
        return False
    return not _related(a.topic[i1], b.topic[j1])


def check(query: str, candidate: str) -> str | None:
    """Compares a query with a stored prompt.

    Returns:
        None when the candidate may answer the query, else the reason it may not: "number",
        "negation", "antonym", "direction", "entity" or "swap".
    """
    if query == candidate:
        return None
    a = analyse(query)
    b = analyse(candidate)
    if a.numbers != b.numbers:
        return "number"
    if a.negated != b.negated:
        return "negation"
    if _opposed(a, b) or _opposed(b, a):
        return "antonym"
    if any((y, x) in b.directions for x, y in a.directions):
        return "direction"
    if _missing_entity(a, b) or _missing_entity(b, a):
        return "entity"
    if _swapped(a, b):
        return "swap"
    return None
