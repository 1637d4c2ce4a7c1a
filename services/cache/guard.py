"""Near-miss guard: refuses a semantic candidate that asks a different question (no I/O).

Embeddings place "how do I enable TLS" and "how do I disable TLS" side by side, so a cosine
threshold alone serves the wrong answer. The guard reads both prompts' structure (the order of their
content words and role prepositions, quantities with their units, negations, scales and the verb
slot) and refuses the candidate when they differ in:

- number: the quantities are not the same: numbers (digits, versions, ports, IPs, hex codes, number
  words, ordinals) and quantities with units in a base unit ("2 hours" = "120 minutes"). Words that
  only look like numbers are not numbers: "once" as a conjunction or adverb, "first of all", "one"
  as an article ("in one line" = "in a single line");
- negation: one prompt is negated (not, no, never, without, except, n't, non-, "fails to") and the
  other is not; idioms that are not a negation of the question ("no longer", "not only", "I have no
  idea how") are removed first;
- antonym: one prompt has a word and the other its opposite (the polarity lexicon, plus negating
  prefixes such as un-/dis-, plus reversed particles: power on/off, round up/down);
- scalar: one prompt places its subject on a scale (a superlative such as most, least, fewest,
  oldest, northernmost) that the other lacks or places differently;
- direction: the same content words in swapped roles: two of them trade places around a third word or
  a role preposition (from X to Y / from Y to X, A than B, X eat Y), or "who did X teach" against
  "who taught X";
- entity: a named thing (a capitalised word that does not start a sentence, an acronym, an
  identifier such as max_connections or node.js, a quoted or `code` span) that the other lacks
  (a one-letter typo or an abbreviation such as js/JavaScript still matches);
- swap: the topic words are identical but for one or two words replaced by unrelated ones
  (install numpy / install pandas, CPU / memory usage). A replaced verb in the verb slot ("how do I
  *move*" / "how do I *migrate*", "how did the ancient Egyptians *build*") and a one-letter typo are
  read as the same word. An optional word judge (guard_words.py) may read a replaced span as a
  synonym; it is asked last, so it never overrides the rules above.

docs/cache.md describes the rules and their measured effect on the labelled sets in bench/data/.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import snowballstemmer  # type: ignore[import-untyped]

from services.cache.guard_lexicon import (
    ANTONYM_PAIRS,
    BARE_CONTRACTIONS,
    DETERMINERS,
    DISTINCT_ACTIONS,
    DISTINCT_CLASSES,
    DO_SUPPORT,
    GENERIC_VERBS,
    IDIOMS,
    MIN_PREFIXED_STEM,
    NEGATING_PREFIXES,
    NEGATIONS,
    NOT_SUPERLATIVE,
    NUMBER_WORDS,
    PARTICLE_PAIRS,
    PHRASES,
    POLARITY_PAIRS,
    ROLE_WORDS,
    SCALAR_WORDS,
    SCALE_MARKERS,
    STOPWORDS,
    SYMMETRIC_WORDS,
    SYNONYM_GROUPS,
    UNITS,
    VERB_SLOT_BEFORE,
    WH_WORDS,
)

_STEMMER = snowballstemmer.stemmer("english")

_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|(?<![\w])'([^']+)'(?![\w])")
_WORD = re.compile(r"[A-Za-z0-9_%][A-Za-z0-9_+#%]*(?:[.\-/][A-Za-z0-9_+#%]+)*")
_NUMBER = re.compile(r"0x[0-9a-f]+|\d+(?:\.\d+)*")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)([a-z%]+)?$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_SENTENCE_END = re.compile(r"[.?!:;]\s*$")
_CONTRACTIONS = (
    (re.compile(r"\b(can)not\b", re.I), r"\1 not"),
    (re.compile(r"\bwon't\b", re.I), "will not"),
    (re.compile(r"\bcan't\b", re.I), "can not"),
    (re.compile(r"\bshan't\b", re.I), "shall not"),
    (re.compile(r"(\w)n't\b", re.I), r"\1 not"),
    (re.compile(r"(\w)'(s|re|ve|ll|d|m)\b", re.I), r"\1"),
    (
        re.compile(r"\b(wo|ca)nt\b", re.I),
        lambda m: ("will" if m.group(1).lower() == "wo" else "can") + " not",
    ),
    (
        re.compile(
            r"\b(" + "|".join(w[:-2] for w in BARE_CONTRACTIONS if w not in {"wont", "cant"}) + r")nt\b", re.I
        ),
        r"\1 not",
    ),
)
# NOTE: "once" counts as a number only as a frequency ("once a day", "once per week").
_ONCE_NOT_A_COUNT = re.compile(
    r"\bonce\b(?!\s+(?:a|an|per|every|each)\s+(?:second|minute|hour|day|week|fortnight|month|quarter|year|"
    r"night|morning|evening|decade|lifetime|session|run|build|release))",
    re.I,
)
# NOTE: "First, …" / "Firstly …" opening a sentence orders the speaker's questions, not a quantity.
_OPENING_ORDINAL = re.compile(r"(^|[.?!;:]\s*)(first|firstly|secondly|second|first off)\s*,?\s+", re.I)
# NOTE: "the first 5 rows" / "the top 5 rows": the count is the number, the ordinal a position word.
_ORDINAL_BEFORE_COUNT = re.compile(r"\b(first|top)\s+(?=\d)", re.I)
_UPPER = re.compile(r"[A-Z]")
_IDENTIFIER_MARK = re.compile(r"[_.#+]")
_DIGIT = re.compile(r"\d")
_ALPHA = re.compile(r"[A-Za-z]")
# NOTE: "one" is an article as often as a count ("in one line" = "in a single line"); "two" vs "one"
# still differs, since "two" is a number and the set {2} is not empty.
_NOT_COUNTS = frozenset({"one", "single"})


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


def _phrase_pattern(pairs: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    ordered = sorted((a for a, _ in pairs), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(a) for a in ordered) + r")\b", re.I)


_SYNONYMS = _build_synonyms()
_ANTONYMS = tuple((_stem(a), _stem(b)) for a, b in (*ANTONYM_PAIRS, *POLARITY_PAIRS))
_OPPOSITES: dict[str, frozenset[str]] = {
    stem: frozenset(right for left, right in _ANTONYMS if left == stem) for stem, _ in _ANTONYMS
}
_STOP_STEMS = frozenset(_stem(word) for word in STOPWORDS) | STOPWORDS
_GENERIC_VERBS = frozenset(_SYNONYMS.get(_stem(word), _stem(word)) for word in GENERIC_VERBS)
_PHRASE_MAP = {a: b for a, b in PHRASES}
_PHRASES_ANY_CASE = _phrase_pattern(PHRASES)
_IDIOM_MAP = {a: b for a, b in IDIOMS}
_IDIOMS_ANY_CASE = _phrase_pattern(IDIOMS)
_SCALAR_STEMS = frozenset(_stem(word) for word in SCALAR_WORDS)
_UNIT_STEMS = frozenset(_stem(word) for word in UNITS if word.isalpha())
_ROLE_MARK = "@"
_DISTINCT_ACTIONS = frozenset(_SYNONYMS.get(_stem(word), _stem(word)) for word in DISTINCT_ACTIONS)
# NOTE: "the best way to", "the simplest way to": a politeness, not a scale on the question.
_WAY_TO = re.compile(
    r"\b(?:the\s+)?(?:best|easiest|simplest|quickest|fastest|cleanest|recommended|proper|right|correct|"
    r"preferred|most\s+\w+|least\s+\w+)\s+(ways?)\s+(to|of)\b",
    re.I,
)
# NOTE: "does not connect anymore" says the same as "no longer connects" ("stopped connecting").
_NOT_ANYMORE = re.compile(r"\bnot\s+((?:\w+\s+){0,3}?\w+)\s+(?:anymore|any more|any longer)\b", re.I)
_PARTICLES = frozenset("on up out off down in over away during at for with from by".split())
_BE = frozenset("be is are was were been being".split())
# NOTE: what may follow a particle that ends its clause ("switch it off *after* a fault"), and how far
# back its verb may be ("switch *the Helio S4 back* on": five words between them).
_AFTER_SPLIT_PARTICLE = _PARTICLES | frozenset(
    "after before when whenever while if again then and or so because until unless first now later "
    "safely remotely automatically properly correctly completely manually".split()
)
_PARTICLE_REACH = 7
# NOTE: every word of PARTICLE_PAIRS ("on", "off", "in", …), for the lookups of each word of a prompt.
_PARTICLE_WORDS = frozenset(word for pair in PARTICLE_PAIRS for word in pair)
# NOTE: "the ancient Egyptians", "cat owners", "chameleons": longer subjects are rare in questions.
_MAX_SUBJECT = 3
_IRREGULAR_PARTICIPLES = frozenset(
    "done made taken written given known seen shown built sent kept held found".split()
)


def _after_subject(words: list[str], at: int) -> bool:
    """The verb after a question's subject: "how do chameleons *alter* their colour", "how did the
    ancient Egyptians *build* the pyramids", "when did Britain *join* the EU": a do-auxiliary opens
    the question, a subject of one to three words follows (not a pronoun, which VERB_SLOT_BEFORE
    covers; a determiner may open it, no other function word occurs in it), then the verb, then a
    determiner, a particle or a preposition ("feed *on*"), or the end after a one-word subject. The
    word after the verb decides where the subject ends: "how do cat owners *feed* their cats"."""
    aux = next((i for i, w in enumerate(words[:5]) if w in ("do", "does", "did")), None)
    if aux is None or aux + 2 >= len(words) or words[aux + 1] in VERB_SLOT_BEFORE:
        return False
    head = aux + 2 if words[aux + 1] in DETERMINERS else aux + 1
    if not head < at <= head + _MAX_SUBJECT:
        return False
    if any(w in DETERMINERS or w in STOPWORDS or w in ROLE_WORDS or w in NEGATIONS for w in words[head:at]):
        return False
    if at + 1 == len(words):
        # NOTE: a question ending after two words may end on the object ("how do cats see *colours*").
        return at == head + 1
    return words[at + 1] in DETERMINERS or words[at + 1] in _PARTICLES


def _separated_particles(
    words: list[str], stems: list[str], verbs_at: list[int]
) -> frozenset[tuple[str, str]]:
    """(verb stem, particle) of a particle verb split by its object: "switch the Helio S4 *off*",
    "turn the heating back *on* after a fault". The particle must end its clause (the last word, or
    followed by a preposition or a clause word such as "after"), so a preposition with its own
    object ("install Python *on* Ubuntu") is not read as one; its verb is the nearest word in a verb
    slot at most _PARTICLE_REACH words before it."""
    found: set[tuple[str, str]] = set()
    for index, word in enumerate(words):
        if word not in _PARTICLE_WORDS:
            continue
        if index + 1 < len(words) and words[index + 1] not in _AFTER_SPLIT_PARTICLE:
            continue
        verb = next((at for at in reversed(verbs_at) if index - _PARTICLE_REACH <= at < index - 1), None)
        if verb is not None:
            found.add((stems[verb], word))
    return frozenset(found)


def _passive(words: list[str], entities: set[str]) -> bool:
    """A form of "be" followed within four words by a participle ("are the logs stored"); a name
    ("the United States") is not a participle."""
    for index, word in enumerate(words):
        if word not in _BE:
            continue
        for later in words[index + 1 : index + 5]:
            if later in entities:
                continue
            if later in _IRREGULAR_PARTICIPLES or (len(later) > 4 and later.endswith("ed")):
                return True
    return False


def _is_scalar(word: str) -> bool:
    """A superlative or a word of SCALAR_WORDS (most, fewest, oldest, northernmost)."""
    if word in SCALAR_WORDS or word in SCALE_MARKERS:
        return True
    if word in NOT_SUPERLATIVE or word in STOPWORDS or not word.isalpha():
        return False
    return (len(word) >= 6 and word.endswith("est")) or (len(word) >= 7 and word.endswith("most"))


@dataclass(frozen=True, slots=True)
class Analysis:
    """The hard tokens of one prompt.

    Attributes:
        words: Lower-case word tokens (contractions expanded, idioms and phrases rewritten).
        stems: Their stems.
        numbers: Normalised numbers and quantities (value in a base unit, e.g. "7200s", "1024B").
        negated: True when a negation word occurs.
        entities: Named things, lower-case.
        topic: Topic stems in order (no stopwords, negations or numbers; synonyms merged).
        directions: (from, to) topic pairs around "to"/"into".
        sequence: Topic stems, numbers and role prepositions ("@from", "@to", "@than") in order.
        scalars: Scale words (superlatives, most/least, min/max), stemmed.
        particles: (verb stem, particle) of particle verbs ("power on" → ("power", "on")), also split
            by their object ("switch the S4 off" → ("switch", "off")).
        verb_slots: Indexes into topic of the words in a verb slot ("how do I *move*").
        wh_do: The first wh-word and whether an auxiliary follows it ("who did X teach"), else None.
        topic_words: The words behind topic, in the same order.
        passive: A form of "be" followed within four words by a participle ("are … stored").
    """

    words: frozenset[str]
    stems: frozenset[str]
    numbers: frozenset[str]
    negated: bool
    entities: frozenset[str]
    topic: tuple[str, ...]
    directions: frozenset[tuple[str, str]]
    sequence: tuple[str, ...] = ()
    scalars: frozenset[str] = frozenset()
    particles: frozenset[tuple[str, str]] = frozenset()
    verb_slots: frozenset[int] = frozenset()
    wh_do: tuple[str, bool] | None = None
    topic_words: tuple[str, ...] = ()
    passive: bool = False


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
        # NOTE: units (GB, MB, KM) and number words are compared as quantities, not as names.
        if (inner_caps or identifier or capitalised) and lower not in NUMBER_WORDS and lower not in UNITS:
            found.add(lower)
        sentence_start = False
    return found


def _is_number(word: str) -> bool:
    return word[0].isdigit() or word in NUMBER_WORDS


def _format(value: float) -> str:
    return f"{value:.10g}"


def _quantities(words: list[str]) -> tuple[list[str], set[int]]:
    """Numbers in order, each with its unit in a base unit when one follows; and the indexes of
    the unit words consumed."""
    found: list[str] = []
    units_at: set[int] = set()
    for index, word in enumerate(words):
        value: str | None = None
        unit = ""
        glued = _QUANTITY.match(word)
        if glued:
            value, unit = glued.group(1), glued.group(2) or ""
        elif word in NUMBER_WORDS and word not in _NOT_COUNTS:
            value = NUMBER_WORDS[word]
        if value is None:
            continue
        if not unit and index + 1 < len(words) and words[index + 1] in UNITS:
            unit = words[index + 1]
            units_at.add(index + 1)
        if unit in UNITS:
            base, factor = UNITS[unit]
            found.append(_format(float(value) * factor) + base)
        else:
            found.append(value if not unit else value + unit)
    return found, units_at


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("%", " percent")
    return text


@functools.lru_cache(maxsize=8192)
def analyse(text: str) -> Analysis:
    """Extracts the hard tokens of a prompt (cached: stored prompts come back as candidates)."""
    text = _normalise(text)
    entities: set[str] = set()
    for match in _QUOTED.finditer(text):
        span = next(group for group in match.groups() if group is not None)
        entities.add("quote:" + " ".join(span.lower().split()))
    text = _QUOTED.sub(lambda m: " " + next(g for g in m.groups() if g is not None) + " ", text)
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    text = _NOT_ANYMORE.sub(r"stopped \1", text)
    text = _IDIOMS_ANY_CASE.sub(lambda m: _IDIOM_MAP[m.group(0).lower()], text)
    text = _WAY_TO.sub(r"\1 \2", text)
    text = _ONCE_NOT_A_COUNT.sub("", text)
    text = _OPENING_ORDINAL.sub(lambda m: m.group(1), text)
    text = _ORDINAL_BEFORE_COUNT.sub("", text)
    text = _PHRASES_ANY_CASE.sub(lambda m: _PHRASE_MAP[m.group(0).lower()], text)
    entities |= _entities(text)
    lower = _THOUSANDS.sub("", text.lower())
    words = [m.group(0) for m in _WORD.finditer(lower)]
    ordered_numbers, unit_at = _quantities(words)
    numbers = set(ordered_numbers)
    for word in words:
        if not _QUANTITY.match(word) and word not in NUMBER_WORDS:
            numbers.update(_NUMBER.findall(word))
    negated = any(w in NEGATIONS or w.startswith("non-") or w == "except" for w in words)
    stems = [w if w[0].isdigit() else _stem(w) for w in words]
    topic: list[str] = []
    topic_at: list[int] = []
    sequence: list[str] = []
    for index, (word, stem) in enumerate(zip(words, stems, strict=True)):
        if word in ROLE_WORDS:
            sequence.append(_ROLE_MARK + word)
            continue
        if _is_number(word):
            sequence.append(word if word not in NUMBER_WORDS else NUMBER_WORDS[word])
            continue
        if word in STOPWORDS or stem in _STOP_STEMS or word in NEGATIONS or index in unit_at:
            continue
        topic.append(_SYNONYMS.get(stem, stem))
        topic_at.append(index)
        sequence.append(topic[-1])
    directions: set[tuple[str, str]] = set()
    for index, word in enumerate(words):
        if word not in ("to", "into"):
            continue
        before = [t for t, at in zip(topic, topic_at, strict=True) if at < index]
        after = [t for t, at in zip(topic, topic_at, strict=True) if at > index]
        if before and after and before[-1] != after[0]:
            directions.add((before[-1], after[0]))
    verb_slots = frozenset(
        slot
        for slot, at in enumerate(topic_at)
        if at == 0
        or words[at - 1] in VERB_SLOT_BEFORE
        or (words[at - 1] in WH_WORDS and at - 1 == 0)
        or _after_subject(words, at)
    )
    particles = frozenset(
        (stems[index - 1], word) for index, word in enumerate(words) if index and word in _PARTICLE_WORDS
    ) | _separated_particles(words, stems, sorted(topic_at[slot] for slot in verb_slots))
    wh_do: tuple[str, bool] | None = None
    for index, word in enumerate(words):
        if word in WH_WORDS or word == "whom":
            wh_do = (word, index + 1 < len(words) and words[index + 1] in DO_SUPPORT)
            break
    return Analysis(
        words=frozenset(words),
        stems=frozenset(stems),
        numbers=frozenset(numbers),
        negated=negated,
        entities=frozenset(entities),
        topic=tuple(topic),
        directions=frozenset(directions),
        sequence=tuple(sequence),
        scalars=frozenset(_stem(w) for w in words if _is_scalar(w)),
        particles=particles,
        verb_slots=verb_slots,
        wh_do=wh_do,
        topic_words=tuple(words[at] for at in topic_at),
        passive=_passive(words, entities),
    )


def _opposed(a: Analysis, b: Analysis) -> bool:
    """True when a has a word whose opposite is in b (and not the other way round as well)."""
    for left in a.stems - b.stems:
        for right in _OPPOSITES.get(left, ()):
            if right in b.stems and right not in a.stems:
                return True
    only_a = a.stems - b.stems
    only_b = b.stems - a.stems
    for stem in only_a:
        if len(stem) >= MIN_PREFIXED_STEM and any(p + stem in only_b for p in NEGATING_PREFIXES):
            return True
    words_b = b.words - a.words
    for word in a.words - b.words:
        # NOTE: short verbs negated by "un-" ("tie"/"untie", "pin"/"unpin") are compared as words.
        if len(word) >= 3 and word.isalpha() and "un" + word in words_b:
            return True
    for left, right in PARTICLE_PAIRS:
        for verb, particle in a.particles:
            if particle == left and (verb, right) in b.particles and (verb, left) not in b.particles:
                return True
    return False


def _near(x: str, y: str) -> bool:
    """One edit apart and long enough that the edit is a typo: a letter dropped, added or swapped
    (words of 4+ letters) or changed (7+)."""
    if x == y:
        return True
    if not (x.isalpha() and y.isalpha()):
        return False
    short, long_ = sorted((x, y), key=len)
    if len(long_) - len(short) > 1 or len(short) < 4:
        return False
    if len(short) == len(long_):
        diff = [i for i in range(len(x)) if x[i] != y[i]]
        if (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and x[diff[0]] == y[diff[1]]
            and x[diff[1]] == y[diff[0]]
        ):
            return True
        return len(diff) == 1 and len(short) >= 7
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _abbreviates(short: str, long_: str) -> bool:
    """An abbreviation: "js" of "javascript" (same first letter, the short letters in order)."""
    if not (2 <= len(short) <= 4 and len(long_) > len(short) + 2 and short[0] == long_[0]):
        return False
    rest = iter(long_[1:])
    return all(char in rest for char in short[1:])


def _missing_entity(a: Analysis, b: Analysis) -> bool:
    """True when a names something that b does not mention at all."""
    for entity in a.entities:
        if entity.startswith("quote:"):
            if entity not in b.entities:
                return True
            continue
        if entity in b.words or entity in b.entities or _stem(entity) in b.stems:
            continue
        if any(
            _near(entity, word) or _abbreviates(word, entity) or _abbreviates(entity, word)
            for word in b.words
        ):
            continue
        return True
    return False


def _related(x: str, y: str) -> bool:
    """Same stem family (summar/summari), or two generic verbs (make/send); synonyms are merged earlier."""
    if x in _GENERIC_VERBS and y in _GENERIC_VERBS:
        return True
    shorter, longer = sorted((x, y), key=len)
    return len(shorter) >= 5 and longer.startswith(shorter[:5])


def _hard(stem: str, word: str) -> bool:
    """A word whose replacement always changes the question: a scale or a unit."""
    return stem in _SCALAR_STEMS or _is_scalar(word) or stem in _UNIT_STEMS or word in UNITS


def _synonym_slot(a: Analysis, b: Analysis, i: int, j: int) -> bool:
    """Both replaced words open a verb slot, and they are not two distinct operations."""
    if i not in a.verb_slots or j not in b.verb_slots:
        return False
    return not (a.topic[i] in _DISTINCT_ACTIONS and b.topic[j] in _DISTINCT_ACTIONS)


class WordJudge(Protocol):
    """Judges whether two replaced words or short phrases are interchangeable (guard_words.py)."""

    def interchangeable(self, x: str, y: str) -> bool | None:
        """True for synonyms, False for distinct words, None when it cannot tell."""
        ...


def _replacement(a: Analysis, b: Analysis) -> tuple[int, int, int, int] | None:
    """The one replaced span of one or two topic words each (i1, i2, j1, j2), else None."""
    matcher = difflib.SequenceMatcher(a=a.topic, b=b.topic, autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if len(changes) != 1 or len(a.topic) < 2:
        return None
    tag, i1, i2, j1, j2 = changes[0]
    if tag != "replace" or i2 - i1 > 2 or j2 - j1 > 2:
        return None
    return i1, i2, j1, j2


def replaced_spans(query: str, candidate: str) -> list[tuple[str, str]]:
    """The (query, candidate) word spans a judge may be asked about by `check`: the replaced span when
    the prompts' topic words differ in one span of one or two words, else nothing."""
    if query == candidate:
        return []
    a, b = analyse(query), analyse(candidate)
    span = _replacement(a, b)
    if span is None:
        return []
    i1, i2, j1, j2 = span
    return [(" ".join(a.topic_words[i1:i2]), " ".join(b.topic_words[j1:j2]))]


def _distinct_kinds(xs: tuple[str, ...], ys: tuple[str, ...]) -> bool:
    """Both spans hold a member of one distinct class (CPU / memory, rows / columns)."""
    return any(any(x in group for x in xs) and any(y in group for y in ys) for group in DISTINCT_CLASSES)


def _judged_synonyms(
    a: Analysis, b: Analysis, span: tuple[int, int, int, int], words: WordJudge | None
) -> bool:
    """The judge reads the replaced spans as interchangeable, and no rule says they are distinct:
    two distinct operations (install / configure) or two members of a distinct class."""
    if words is None:
        return False
    i1, i2, j1, j2 = span
    if any(x in _DISTINCT_ACTIONS for x in a.topic[i1:i2]) and any(
        y in _DISTINCT_ACTIONS for y in b.topic[j1:j2]
    ):
        return False
    xs, ys = a.topic_words[i1:i2], b.topic_words[j1:j2]
    if _distinct_kinds(xs, ys) or any(_DIGIT.search(w) for w in (*xs, *ys)):
        return False
    return words.interchangeable(" ".join(xs), " ".join(ys)) is True


def _swapped(a: Analysis, b: Analysis, words: WordJudge | None = None) -> bool:
    """True when the topics are the same but for one or two words replaced by unrelated ones.

    A replacement of a verb in the verb slot by another verb there, or of a word by a typo of it,
    is not a swap; nor is a replacement the judge `words` reads as a synonym.
    """
    span = _replacement(a, b)
    if span is None:
        return False
    i1, i2, j1, j2 = span
    if i2 - i1 == 1 and j2 - j1 == 1:
        x, y = a.topic[i1], b.topic[j1]
        wx, wy = a.topic_words[i1], b.topic_words[j1]
        if _related(x, y) or _near(wx, wy):
            return False
        if _hard(x, wx) or _hard(y, wy):
            return True
        return not (_synonym_slot(a, b, i1, j1) or _judged_synonyms(a, b, span, words))
    if any(_hard(a.topic[i], a.topic_words[i]) for i in range(i1, i2)):
        return True
    if any(_hard(b.topic[j], b.topic_words[j]) for j in range(j1, j2)):
        return True
    # NOTE: a phrase for a verb ("invented" / "came up with") keeps the verb slot.
    return not (_synonym_slot(a, b, i1, j1) or _judged_synonyms(a, b, span, words))


def _span_swap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """True when b is a with two spans exchanged around a non-empty middle: X M Y against Y M X."""
    if len(a) != len(b) or a == b:
        return False
    start = 0
    while a[start] == b[start]:
        start += 1
    end = len(a)
    while a[end - 1] == b[end - 1]:
        end -= 1
    middle_a, middle_b = a[start:end], b[start:end]
    size = len(middle_a)
    for x in range(1, size - 1):
        for y in range(1, size - x):
            m = size - x - y
            if m < 1:
                continue
            first, last = middle_a[:x], middle_a[size - y :]
            if middle_b != last + middle_a[x : x + m] + first:
                continue
            # NOTE: the exchanged spans must hold content: a copula moving ("what a closure is")
            # reorders a question without swapping its roles.
            if any(not t.startswith(_ROLE_MARK) for t in first) and any(
                not t.startswith(_ROLE_MARK) for t in last
            ):
                return True
    return False


def _role_swap(a: Analysis, b: Analysis) -> bool:
    """True when the same words fill swapped roles: b is a with two spans exchanged around a third
    word or a role preposition (from X to Y / from Y to X, "X eat Y" / "Y eat X", "A larger than B"),
    or one prompt makes the wh-word the object ("who did X teach") and the other its subject ("who
    taught X"). Symmetric relations (A and B, between, vs) are exempt, and so is a passive against an
    active form, which reorders its words without swapping roles."""
    if Counter(a.topic) != Counter(b.topic) or (a.topic == b.topic and a.sequence == b.sequence):
        return False
    if (a.words | b.words) & SYMMETRIC_WORDS or a.passive != b.passive:
        return False
    if a.wh_do and b.wh_do and a.wh_do[0] == b.wh_do[0] and a.wh_do[1] != b.wh_do[1] and a.topic != b.topic:
        return True
    return _span_swap(a.sequence, b.sequence)


def check(query: str, candidate: str, words: WordJudge | None = None) -> str | None:
    """Compares a query with a stored prompt.

    Args:
        query: The prompt looked up.
        candidate: The stored prompt.
        words: Optional judge of replaced words (guard_words.EmbeddingWordJudge); asked only when the
            prompts differ in one replaced span that no rule decides, so it never overrides a number,
            negation, opposite, scale, direction, name or distinct-operation refusal.

    Returns:
        None when the candidate may answer the query, else the reason it may not: "number",
        "negation", "antonym", "scalar", "direction", "entity" or "swap".
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
    if bool(a.scalars) != bool(b.scalars):
        return "scalar"
    if any((y, x) in b.directions for x, y in a.directions) or _role_swap(a, b):
        return "direction"
    if _missing_entity(a, b) or _missing_entity(b, a):
        return "entity"
    if _swapped(a, b, words):
        return "swap"
    return None
