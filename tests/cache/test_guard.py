"""The near-miss guard's rules, one by one, and paraphrases it must let through."""

from __future__ import annotations

import pytest

from services.cache import guard


@pytest.mark.parametrize(
    ("query", "candidate", "reason"),
    [
        ("How do I install Python 3.11?", "How do I install Python 3.12?", "number"),
        ("Open port 8080 on the firewall", "Open port 443 on the firewall", "number"),
        ("Set a timer for 5 minutes", "Set a timer for fifteen minutes", "number"),
        ("Range of 10.0.0.0/8", "Range of 10.0.0.0/16", "number"),
        ("Which foods are safe for dogs?", "Which foods are not safe for dogs?", "negation"),
        ("Why does my code work?", "Why doesn't my code work?", "negation"),
        ("Build it with Docker", "Build it without Docker", "negation"),
        ("Which animals can swim?", "Which animals cannot swim?", "negation"),
        ("How do I enable TLS?", "How do I disable TLS?", "antonym"),
        ("How do I turn on TLS?", "How do I disable TLS?", "antonym"),
        ("How do I install a package with apt?", "How do I uninstall a package with apt?", "antonym"),
        ("Sort ascending", "Sort descending", "antonym"),
        ("How do I zoom in on a PDF?", "How do I zoom out on a PDF?", "antonym"),
        ("Is this input valid?", "Is this input invalid?", "antonym"),
        ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?", "direction"),
        ("What is the capital of France?", "What is the capital of Germany?", "entity"),
        ("Configure `max_connections`", "Configure `shared_buffers`", "entity"),
        ("How do I deploy to AWS?", "How do I deploy to GCP?", "entity"),
        ("How do I install numpy?", "How do I install pandas?", "swap"),
        ("Write a poem about cats.", "Write a poem about dogs.", "swap"),
        ("How do I delete a branch in git?", "How do I rename a branch in git?", "swap"),
    ],
)
def test_near_misses_are_refused_with_their_reason(query: str, candidate: str, reason: str) -> None:
    assert guard.check(query, candidate) == reason
    assert guard.check(candidate, query) == reason


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("How do I enable TLS on nginx?", "How can I turn on TLS in nginx?"),
        ("What is the capital of France?", "What's the capital city of France?"),
        ("How do I delete a branch in git?", "How can I remove a git branch?"),
        ("How do I make a POST request with curl?", "How can I send a POST request using curl?"),
        (
            "Explain the difference between a process and a thread.",
            "What is the difference between a thread and a process?",
        ),
        ("How many bytes are in a kilobyte?", "A kilobyte contains how many bytes?"),
        ("Summarize the plot of Hamlet.", "Give me a summary of Hamlet's plot."),
        ("Set a timer for 5 minutes", "Set a timer for five minutes"),
        ("Count to 1,000", "Count to 1000"),
        ("same text", "same text"),
    ],
)
def test_paraphrases_pass(query: str, candidate: str) -> None:
    assert guard.check(query, candidate) is None
    assert guard.check(candidate, query) is None


def test_sentence_initial_capitals_are_not_entities() -> None:
    assert "explain" not in guard.analyse("Explain recursion.").entities
    assert "python" in guard.analyse("How do I learn Python?").entities
    assert "tls" in guard.analyse("TLS setup").entities


def test_quoted_spans_must_match() -> None:
    assert guard.check("Translate 'good morning'", "Translate 'good night'") == "entity"
