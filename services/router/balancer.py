"""Load balancers: `pick(ctx, candidates) -> candidate`, fed by the score copy; pure Python, no I/O.

Vocabulary follows Envoy and Finagle (STYLE 27): a balancer only chooses among the candidates the
score board has already filtered (healthy, not ejected, not draining, model installed, not saturated,
not yet tried by this request). Strategies are selected by `RouterConfig.strategy` so that benchmarks
can compare them.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.router.config import BalancerConfig, Strategy


@dataclass(slots=True)
class Candidate:
    """A node that may take the request, with what the balancer needs to rank it.

    Attributes:
        node_id: The node id.
        address: The node's base URL.
        loaded: The model is loaded on the node (no cold load).
        local_inflight: Requests this router has in flight on the node.
        reported_inflight: Requests in flight on the node as health reports them (all routers).
        service_ms: EWMA service time of the model on the node, in milliseconds.
        error_rate: Recent error rate on the node (0..1).
        busy_rate: Recent share of 503 answers (0..1).
        interactive_inflight: Interactive requests this router has in flight on the node.
    """

    node_id: str
    address: str
    loaded: bool = True
    local_inflight: int = 0
    reported_inflight: int = 0
    service_ms: float = 1000.0
    error_rate: float = 0.0
    busy_rate: float = 0.0
    interactive_inflight: int = 0

    @property
    def load(self) -> int:
        """Requests in flight on the node.

        Health's count includes this router's own (reported) requests, so the larger of the two
        counts is used rather than their sum, which would count this router's requests twice.
        """
        return max(self.local_inflight, self.reported_inflight)


@dataclass(frozen=True, slots=True)
class PickContext:
    """What the balancer knows about the request.

    Attributes:
        model: The normalised model name.
        affinity_key: Requests with the same key prefer the same node (a session or conversation prefix).
        background: A background (prewarm) request.
    """

    model: str
    affinity_key: str | None = None
    background: bool = False


class Balancer(Protocol):
    """Chooses one node among the filtered candidates."""

    name: str

    def pick(self, ctx: PickContext, candidates: Sequence[Candidate]) -> Candidate | None:
        """Returns the chosen candidate, or None when the sequence is empty."""


class RoundRobin:
    """Cycles through the candidates (Envoy ROUND_ROBIN without weights)."""

    name = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, ctx: PickContext, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        ordered = sorted(candidates, key=lambda c: c.node_id)
        return ordered[next(self._counter) % len(ordered)]


class RandomPick:
    """Uniformly random choice (Envoy RANDOM)."""

    name = "random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, ctx: PickContext, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        return self._rng.choice(list(candidates))


class LeastInflight:
    """Fewest requests in flight, ties broken at random (Envoy LEAST_REQUEST with full scan)."""

    name = "least_inflight"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, ctx: PickContext, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        least = min(c.load for c in candidates)
        return self._rng.choice([c for c in candidates if c.load == least])


def expected_completion_ms(c: Candidate, cfg: BalancerConfig) -> float:
    """Expected completion time of one more request on the node, in milliseconds.

    The queue (requests in flight plus this one) times the EWMA service time, plus a cold-load
    penalty when the model is not loaded and penalties for recent errors and 503s. This is the
    "expected latency" score of Finagle's Aperture/P2C-EWMA and of Linkerd's balancer, with
    Ollama's model load as an explicit term.
    """
    score = (c.load + 1) * c.service_ms
    if not c.loaded:
        score += cfg.not_loaded_penalty_ms
    return score + c.error_rate * cfg.error_penalty_ms + c.busy_rate * cfg.busy_penalty_ms


def rendezvous_weight(key: str, node_id: str) -> int:
    """Highest-random-weight (rendezvous) hash of a key on a node (Thaler & Ravishankar, 1996)."""
    digest = hashlib.blake2b(f"{key}\x00{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def bounded_load_pick(key: str, candidates: Sequence[Candidate], c: float) -> Candidate:
    """The highest-weight node for the key whose load stays within c x mean load.

    "Consistent Hashing with Bounded Loads" (Mirrokni, Thorup, Zadimoghaddam, 2016; used by
    HAProxy and Vimeo): with the new request counted, a node may hold at most ceil(c x mean)
    requests; the key walks down its rendezvous order to the first node under that bound. The
    least-loaded node is always under it, so a pick always exists. c = 1.25 is the value Vimeo
    reported as a good balance between cache reuse and load spread.
    """
    total = sum(x.load for x in candidates) + 1
    bound = math.ceil(c * total / len(candidates))
    ranked = sorted(candidates, key=lambda x: rendezvous_weight(key, x.node_id), reverse=True)
    for cand in ranked:
        if cand.load + 1 <= bound:
            return cand
    return min(ranked, key=lambda x: x.load)  # pragma: no cover - the bound always admits one


class P2cEct:
    """The default: prefer loaded nodes, bounded-load affinity for keyed requests, else P2C on ECT.

    1. Pool: the nodes where the model is loaded, unless even the best of them is expected to take
       longer than a cold load elsewhere (then every candidate).
    2. With an affinity key: bounded-load rendezvous hashing over the pool, so a chat session (or a
       shared conversation prefix) returns to the node whose KV cache holds it.
    3. Otherwise power of two choices (Mitzenmacher, 2001; Finagle's P2C, Envoy LEAST_REQUEST with
       choice_count 2): two random candidates, the lower expected completion time wins. Two random
       choices stay good when scores are stale and when several routers share the nodes.
    """

    name = "p2c_ect"

    def __init__(self, cfg: BalancerConfig | None = None, rng: random.Random | None = None) -> None:
        self._cfg = cfg or BalancerConfig()
        self._rng = rng or random.Random()

    def pool(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """The candidates worth considering (see step 1)."""
        loaded = [c for c in candidates if c.loaded]
        if not loaded or len(loaded) == len(candidates):
            return list(candidates)
        best_loaded = min(expected_completion_ms(c, self._cfg) for c in loaded)
        best_cold = min(expected_completion_ms(c, self._cfg) for c in candidates if not c.loaded)
        return loaded if best_loaded <= best_cold else list(candidates)

    def pick(self, ctx: PickContext, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        pool = self.pool(candidates)
        if len(pool) == 1:
            return pool[0]
        if ctx.affinity_key:
            return bounded_load_pick(ctx.affinity_key, pool, self._cfg.load_bound_c)
        first, second = self._rng.sample(pool, 2)
        return (
            first
            if expected_completion_ms(first, self._cfg) <= expected_completion_ms(second, self._cfg)
            else second
        )


def make_balancer(strategy: Strategy, cfg: BalancerConfig | None = None, seed: int | None = None) -> Balancer:
    """Builds the balancer named by the configuration."""
    rng = random.Random(seed)
    if strategy == "round_robin":
        return RoundRobin()
    if strategy == "random":
        return RandomPick(rng)
    if strategy == "least_inflight":
        return LeastInflight(rng)
    return P2cEct(cfg, rng)
