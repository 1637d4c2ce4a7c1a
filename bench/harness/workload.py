"""Request contents of the benchmark workloads: unique questions, scripted lists and chat sessions."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

TOPICS = (
    "rotate an API key without downtime",
    "restore a deleted project from a backup",
    "move a workspace to another region",
    "read the audit log of last week",
    "invite a contractor with read-only access",
    "lower the bill of an idle cluster",
    "export every ticket as CSV",
    "connect the agent through a proxy",
    "renew the TLS certificate before it expires",
    "limit the requests of one tenant",
)

# NOTE: a long, shared system prompt is what makes a conversation's prefix expensive to re-evaluate:
# the multi-turn scenario measures exactly that cost (Ollama's per-slot KV cache).
SUPPORT_MANUAL = " ".join(
    f"Section {i}: when a customer asks how to {topic}, check the plan, confirm the account owner, "
    f"explain the steps in order, link the guide, and offer to follow up within one business day."
    for i, topic in enumerate(TOPICS * 3, start=1)
)


def unique_question(i: int, tag: str) -> str:
    """A short question that no earlier request asked (cache misses, no prompt-cache reuse)."""
    return f"[{tag} {i}] How do I {TOPICS[i % len(TOPICS)]}?"


ModelMix = Sequence[tuple[str, float]]
"""Models and their shares of the requests, e.g. (("llama3.2:1b", 0.8), ("mistral:7b", 0.2))."""


def model_of(i: int, key: str, mix: ModelMix) -> str:
    """The model of request `i` in a mixed workload: a draw from the shares, fixed by (key, i), so
    that the load generator and bench/oracle.py give every request the same model (both key it by
    the arrival trace's seed)."""
    u = int.from_bytes(hashlib.blake2b(f"{key}\x00{i}".encode(), digest_size=8).digest(), "big") / 2**64
    total = sum(share for _, share in mix)
    for name, share in mix:
        u -= share / total
        if u < 0:
            return name
    return mix[-1][0]


@dataclass
class Item:
    """One request of a scripted workload: the messages and a label for the summary."""

    messages: list[dict[str, str]]
    label: str = ""


@dataclass
class Session:
    """A chat session: turns are sent one after the other, each with the whole history so far."""

    session_id: str
    system: str
    questions: list[str]
    history: list[dict[str, str]] = field(default_factory=list)

    def next_messages(self, turn: int) -> list[dict[str, str]]:
        """The messages of turn `turn` (0-based): system, the history so far and the new question."""
        return [
            {"role": "system", "content": self.system},
            *self.history,
            {"role": "user", "content": self.questions[turn]},
        ]

    def record_answer(self, turn: int, answer: str) -> None:
        """Appends the turn's question and the answer the gateway returned to the history."""
        self.history += [
            {"role": "user", "content": self.questions[turn]},
            {"role": "assistant", "content": answer},
        ]


def make_session(index: int, turns: int, tag: str) -> Session:
    """Session `index` with `turns` questions; its first question is unique (its own affinity key)."""
    rng = random.Random(index)
    questions = [f"[{tag} session {index}] Hello, I need help with my account."]
    questions += [f"And how do I {rng.choice(TOPICS)}? (follow-up {t})" for t in range(1, turns)]
    # NOTE: the system prompt starts with the customer's own record, as a support bot's would, so
    # two sessions share only a few tokens of prefix and only the session's node holds its history.
    account = (
        f"Customer record: account {index:05d} ({tag}), plan {rng.choice(['free', 'team', 'enterprise'])}."
    )
    return Session(session_id=f"{tag}-{index}", system=f"{account} {SUPPORT_MANUAL}", questions=questions)


def paraphrases(question: str) -> list[str]:
    """Surface variants of a question (case, punctuation, filler words) that mean the same thing."""
    base = question.rstrip("?")
    return [
        question,
        question.lower(),
        f"{base} ?",
        f"Please, {base[0].lower()}{base[1:]}?",
        f"{base}? Thanks!",
    ]


def cache_script(count: int, questions: int, seed: int) -> list[Item]:
    """`count` requests drawn from `questions` distinct questions: repeats and paraphrases."""
    rng = random.Random(seed)
    pool = [f"How do I {TOPICS[i % len(TOPICS)]} (case {i})?" for i in range(questions)]
    seen: set[int] = set()
    items: list[Item] = []
    for _ in range(count):
        q = rng.randrange(questions)
        if q not in seen:
            seen.add(q)
            items.append(Item([{"role": "user", "content": pool[q]}], "first"))
            continue
        if rng.random() < 0.5:
            items.append(Item([{"role": "user", "content": pool[q]}], "repeat"))
        else:
            variant = rng.choice(paraphrases(pool[q])[1:])
            items.append(Item([{"role": "user", "content": variant}], "paraphrase"))
    return items


def poisson_gaps(rate_rps: float, seed: int) -> Iterator[float]:
    """Exponential inter-arrival gaps in seconds (a Poisson process of `rate_rps`)."""
    rng = random.Random(seed)
    while True:
        yield rng.expovariate(rate_rps)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One arrival of an open-loop trace.

    Attributes:
        at_s: Seconds after the start of the run.
        phase: "warmup" or "measure".
    """

    at_s: float
    phase: str


RateProfile = Sequence[tuple[float, float]]
"""(from s, factor) steps of a time-varying rate: from each step's time on, the rate is the base
rate times its factor (1 before the first step; 0 is an off period)."""


def poisson_arrivals(
    rate_rps: float, duration_s: float, warmup_s: float, seed: int, profile: RateProfile = ()
) -> Iterator[Arrival]:
    """The arrivals of one load run: Poisson at `rate_rps` for `warmup_s` + `duration_s` seconds.

    With a `profile`, a Poisson process whose rate follows it (bursts, off periods, an overload):
    each arrival consumes one unit-rate exponential draw of the seed's stream, spent at the rate in
    force. The load generator sends these; bench/oracle.py replays the same trace offline, so both
    see the same arrival times for a seed.
    """
    end = warmup_s + duration_s
    if not profile:
        at_s = 0.0
        for gap in poisson_gaps(rate_rps, seed):
            at_s += gap
            if at_s >= end:
                return
            yield Arrival(at_s, "warmup" if at_s < warmup_s else "measure")
        return
    steps = sorted((float(t), float(f)) for t, f in profile)
    if any(f < 0 for _, f in steps):
        raise ValueError("rate profile: factors must be >= 0")
    # NOTE: (start, factor) of each stretch; steps at or before 0 set the first stretch's factor.
    first = next((f for t, f in reversed(steps) if t <= 0), 1.0)
    bounds = [(0.0, first), *((t, f) for t, f in steps if t > 0)]
    rng = random.Random(seed)
    at_s, i = 0.0, 0
    while True:
        need = rng.expovariate(1.0)
        while True:
            rate = rate_rps * bounds[i][1]
            until = bounds[i + 1][0] if i + 1 < len(bounds) else math.inf
            if rate > 0 and at_s + need / rate < until:
                at_s += need / rate
                break
            if until == math.inf:
                return
            need -= (until - at_s) * rate
            at_s, i = until, i + 1
        if at_s >= end:
            return
        yield Arrival(at_s, "warmup" if at_s < warmup_s else "measure")


def as_jsonable(items: list[Item]) -> list[dict[str, Any]]:
    """Scripted items for the load generator's JSON spec."""
    return [{"messages": it.messages, "label": it.label} for it in items]
