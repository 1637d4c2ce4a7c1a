"""Observation seams: the router calls these hooks; metrics and tracing plug in here later."""

from __future__ import annotations

from dataclasses import dataclass

from services.router.scores import Attempt


@dataclass(slots=True)
class AttemptRecord:
    """One node attempt, as reported to health and to observers.

    Attributes:
        node_id: The node tried.
        model: The model as requested.
        kind: "generate", "chat" or "embed".
        outcome: How the attempt ended.
        latency_ms: Wall time of the attempt.
        ttft_ms: Time to the first chunk (0 when none arrived).
        prompt_tokens: Prompt tokens the node evaluated.
        eval_tokens: Tokens the node generated.
        tokens_per_s: Generation speed (0 when unknown).
        inflight_after: This router's requests in flight on the node after the attempt.
    """

    node_id: str
    model: str
    kind: str
    outcome: Attempt
    latency_ms: float
    ttft_ms: float = 0.0
    prompt_tokens: int = 0
    eval_tokens: int = 0
    tokens_per_s: float = 0.0
    inflight_after: int = 0


class Observer:
    """Hooks called by the router; the default does nothing. Subclass and override what you need."""

    def attempt(self, record: AttemptRecord) -> None:
        """After every node attempt."""

    def request(self, rpc: str, model: str, status: str, latency_ms: float, cache_outcome: int) -> None:
        """After every client request (status is a gRPC status name)."""

    def cache_lookup(self, outcome: int, latency_ms: float) -> None:
        """After every cache lookup."""

    def retry(self, allowed: bool) -> None:
        """When a failover or continuation asks the retry budget."""


class Observers(Observer):
    """Fans every hook out to several observers."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = list(observers)

    def add(self, observer: Observer) -> None:
        """Adds one more observer."""
        self.observers.append(observer)

    def attempt(self, record: AttemptRecord) -> None:
        for o in self.observers:
            o.attempt(record)

    def request(self, rpc: str, model: str, status: str, latency_ms: float, cache_outcome: int) -> None:
        for o in self.observers:
            o.request(rpc, model, status, latency_ms, cache_outcome)

    def cache_lookup(self, outcome: int, latency_ms: float) -> None:
        for o in self.observers:
            o.cache_lookup(outcome, latency_ms)

    def retry(self, allowed: bool) -> None:
        for o in self.observers:
            o.retry(allowed)
