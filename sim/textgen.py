"""Deterministic text, tokens and embeddings for the simulator (no model weights needed)."""

from __future__ import annotations

import hashlib
import re
import zlib
from array import array
from dataclasses import dataclass

import numpy as np

VOCAB_SIZE = 128_000
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have not which but "
    "they you one all their has more can will there about when been other some into its these would "
    "model node answer question system data time first also two may then any new used each only what "
    "cluster request cache token memory network server result value simple order well small large "
    "fast slow light water river mountain city house garden window morning evening story music color "
    "number reason method example process language energy market history science nature people "
    "friend family school work place world country state point group problem fact hand part case "
    "week company program government night area money book idea level office door health person art "
    "war party result change morning minute moment teacher force focus clear quiet simple bright warm "
    "cold early late often always never perhaps usually together between through during without "
    "because although however therefore meanwhile instead likely easily quickly carefully"
).split()


_CAPITALIZED = tuple(w.capitalize() for w in _WORDS)


def tokenize(text: str) -> list[str]:
    """Split text into tokens: runs of word characters, and each other non-space character."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Number of tokens in text, consistent with `tokenize`."""
    return len(_TOKEN_RE.findall(text))


def token_ids(text: str) -> list[int]:
    """Stable token ids (the same text gives the same ids in every process)."""
    return [zlib.crc32(t.encode()) % VOCAB_SIZE for t in _TOKEN_RE.findall(text)]


def marker_id(marker: str) -> int:
    """Id of a template marker such as a role header."""
    return zlib.crc32(marker.encode()) % VOCAB_SIZE


@dataclass(frozen=True, slots=True)
class Generation:
    """Generated pieces (one per token, leading space included) and why generation stopped."""

    pieces: list[str]
    done_reason: str

    @property
    def text(self) -> str:
        """Concatenated output."""
        return "".join(self.pieces)


def generate(
    key: str,
    seed: int,
    min_tokens: int,
    max_tokens: int,
    num_predict: int | None,
    stop: list[str] | None = None,
) -> Generation:
    """Generate plausible words deterministically from (seed, key).

    Args:
        key: what the output depends on (model and rendered prompt).
        seed: node seed, or the request's `options.seed` when given.
        min_tokens: shortest natural answer.
        max_tokens: longest natural answer.
        num_predict: Ollama's limit; None or negative means no limit.
        stop: stop sequences; the output ends before the first one.
    """
    # NOTE: all the randomness comes from one SHAKE-128 call over (seed, key): deterministic in every
    # process, and much cheaper than seeding a Mersenne Twister per request.
    draws = array("I", hashlib.shake_128(f"{seed}\x00{key}".encode()).digest(4 * (2 * max_tokens + 4)))
    position = iter(draws)
    bits = position.__next__
    natural = min_tokens + bits() % (max_tokens - min_tokens + 1)
    limited = num_predict is not None and 0 <= num_predict <= natural
    count = num_predict if limited and num_predict is not None else natural
    pieces: list[str] = []
    append = pieces.append
    vocab = len(_WORDS)
    sentence_left = 6 + bits() % 9
    start_of_sentence = True
    n = 0
    while n < count:
        if sentence_left == 0 and not start_of_sentence:
            append(".")
            n += 1
            sentence_left = 6 + bits() % 9
            start_of_sentence = True
            continue
        draw = bits()
        word = _WORDS[draw % vocab]
        if start_of_sentence:
            word = _CAPITALIZED[draw % vocab]
            start_of_sentence = False
        append(" " + word if n else word)
        n += 1
        sentence_left -= 1
        # NOTE: one draw decides both the word and (from its high bits) a following comma, 8% of the time.
        if sentence_left > 1 and (draw >> 24) < 20 and n < count:
            append(",")
            n += 1
    done_reason = "length" if limited else "stop"
    if stop:
        pieces, hit = _apply_stop(pieces, stop)
        if hit:
            done_reason = "stop"
    return Generation(pieces=pieces, done_reason=done_reason)


def _apply_stop(pieces: list[str], stop: list[str]) -> tuple[list[str], bool]:
    text = ""
    for index, piece in enumerate(pieces):
        text += piece
        if any(s and s in text for s in stop):
            return pieces[:index], True
    return pieces, False


def _embedding_features(text: str) -> list[tuple[str, float]]:
    lowered = text.lower()
    words = re.findall(r"\w+", lowered)
    features = [(w, 1.0) for w in words]
    padded = " " + " ".join(words) + " "
    features.extend((padded[i : i + 3], 0.5) for i in range(len(padded) - 2))
    return features


def hashed_embedding(text: str, dimensions: int, salt: str) -> np.ndarray:
    """L2-normalised hashed bag of words and character trigrams, projected to `dimensions`.

    Texts sharing most words and trigrams get close vectors; unrelated texts are nearly orthogonal.
    """
    vector = np.zeros(dimensions, dtype=np.float64)
    salt_crc = zlib.crc32(salt.encode())
    features = _embedding_features(text) or [("<empty>", 1.0)]
    indices = np.empty(len(features) * 2, dtype=np.int64)
    weights = np.empty(len(features) * 2, dtype=np.float64)
    for i, (feature, weight) in enumerate(features):
        h = zlib.crc32(feature.encode(), salt_crc)
        # NOTE: two buckets per feature with independent signs reduce collision bias.
        indices[2 * i] = h % dimensions
        weights[2 * i] = weight if h & 0x80000000 else -weight
        h2 = zlib.crc32(b"#" + feature.encode(), salt_crc)
        indices[2 * i + 1] = h2 % dimensions
        weights[2 * i + 1] = weight if h2 & 0x80000000 else -weight
    np.add.at(vector, indices, weights)
    norm = float(np.linalg.norm(vector))
    if norm > 0:
        vector /= norm
    return vector


def truncate_normalize(vector: np.ndarray, dimensions: int | None) -> list[float]:
    """Cut a vector to `dimensions` (when given), normalise it again and round like float32."""
    if dimensions is not None and dimensions < vector.shape[0]:
        vector = vector[:dimensions]
        norm = float(np.linalg.norm(vector))
        if norm > 0:
            vector = vector / norm
    result: list[float] = np.round(vector.astype(np.float32).astype(np.float64), 8).tolist()
    return result
