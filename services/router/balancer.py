"""Load balancers: `pick(ctx, candidates) -> candidate`, fed by the score copy; pure Python, no I/O.

Vocabulary follows Envoy and Finagle (STYLE 27): a balancer only chooses among the candidates the
score board has already filtered (healthy, not ejected, not draining, model installed, not saturated,
not yet tried by this request). Strategies are selected by `RouterConfig.strategy` so that benchmarks
can compare them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from services.router.config import BalancerConfig, Strategy
from services.router.learning import Clock, Estimate, Learner, Outcome, add_penalty

logger = logging.getLogger(__name__)

# NOTE: affinity keys are "s:<session id>" for a client's session and "p:<digest>" for a
# conversation's prefix (services/router/core.py `affinity_key`).
SESSION_PREFIX = "s:"


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
        size_bytes: The model's size on disk (its load cost when not loaded), 0 when unknown.
        displaced_bytes: When the model is not loaded: the sizes of the other models loaded on the
            node, which its load may evict (`ect` charges their reload).
        full: The node has as many requests from this router as it takes at once (offered only to
            a balancer that weighs waiting for it, `ect`; picking it means: wait for a slot).
        priority: The node's registry label `priority` (lower first; see `ScoreBoard.candidates`).
        estimate: Set by the `ect` balancer on the node it picks: why, term by term.
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
    size_bytes: int = 0
    displaced_bytes: int = 0
    full: bool = False
    priority: int = 0
    estimate: Estimate | None = None

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
        prompt_chars: Characters of the prompt (0 when not measured; only `ect` uses it).
        num_predict: The request's limit on the answer length, if any (only `ect` uses it).
        follow_up: The request continues a conversation (a chat with an earlier answer in it, or a
            keyed generate); False for a conversation's first turn, which no node holds yet
            (only `ect` uses it).
        waiting_ahead: Requests for the model waiting ahead of this one in the router's admission
            queue: they take the full nodes' next slots first (only `ect` uses it).
    """

    model: str
    affinity_key: str | None = None
    background: bool = False
    prompt_chars: int = 0
    num_predict: int | None = None
    follow_up: bool = True
    waiting_ahead: int = 0


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


@runtime_checkable
class Learning(Protocol):
    """A balancer that learns from the outcomes of the attempts it routed."""

    def observe(self, outcome: Outcome) -> None:
        """Learns from one finished attempt."""


class Ect:
    """Lowest expected completion time of this request, from what the router learned; every node compared.

    For each candidate (services/router/learning.py has the terms and what is learned):
    queue wait (requests beyond the node's learned slots x its typical service time / slots,
    weighted by `ect.queue_weight`) + the model's load time when it is not loaded + this request's
    prompt tokens at the node's learned prompt speed + the model's expected answer length at the
    node's learned generation speed + the learned attempt overhead + error rate x (time to fail +
    the best other node's time) + busy rate x `busy_penalty_ms`. With a handful of nodes every
    candidate is scored (power of two choices pays off with large fleets or stale data, DESIGN.md).
    Affinity keeps a keyed request on its node while that node's expected completion is within
    `ect.affinity_slack` x the best (Ollama's KV cache then saves the prompt evaluation). A session
    (the client's `session_id`) keeps to its bounded-load rendezvous node, the same on every router.
    A conversation keyed by its prefix: its first turn goes to the best node like any request (no
    node holds it yet) and the router remembers where (the latest `ect.affinity_memory`
    conversations); a follow-up keeps to that node, or to its rendezvous node when the conversation
    is not remembered (another router served it, or it was forgotten). Ties go to the node with
    fewer requests in flight, then the lower node id. The chosen candidate carries its `Estimate`,
    and the debug log has the breakdown.
    """

    name = "ect"
    # NOTE: full nodes are scored too: when one of them is still the best place for the request
    # (its queue is worth waiting for rather than a slower free node), the request waits in the
    # router's admission queue and is placed again when a slot frees (docs/router.md).
    weighs_full = True

    def __init__(self, cfg: BalancerConfig | None = None, clock: Clock = time.monotonic) -> None:
        self._cfg = cfg or BalancerConfig()
        self.learner = Learner(self._cfg.ect, clock)
        # Conversation key to the node that served its latest turn, least recently used first.
        self.placed: OrderedDict[str, str] = OrderedDict()

    def observe(self, outcome: Outcome) -> None:
        """Learns from one finished attempt."""
        self.learner.observe(outcome)

    def estimates(self, ctx: PickContext, candidates: Sequence[Candidate]) -> list[Estimate]:
        """The expected completion of the request on each candidate, penalties included."""
        learner = self.learner
        cfg = self._cfg
        names = [c.node_id for c in candidates]
        prior = learner.prior(ctx.model, names) if learner.needs_prior(ctx.model, names) else None
        out = [
            learner.estimate(
                c.node_id,
                ctx.model,
                inflight=c.load,
                loaded=c.loaded,
                size_bytes=c.size_bytes,
                prompt_chars=ctx.prompt_chars,
                num_predict=ctx.num_predict,
                prior=prior,
                not_loaded_penalty_ms=cfg.not_loaded_penalty_ms,
                displaced_bytes=c.displaced_bytes,
            )
            for c in candidates
        ]
        if ctx.waiting_ahead:
            add_router_queue(out, candidates, ctx.waiting_ahead, cfg.ect.queue_weight)
        # NOTE: a failed attempt is retried on the best other node: the two lowest base times suffice.
        ranked = sorted(range(len(out)), key=lambda i: out[i].base_ms)
        for i, (cand, est) in enumerate(zip(candidates, out, strict=True)):
            other = ranked[1] if ranked[0] == i and len(ranked) > 1 else ranked[0]
            add_penalty(
                est,
                error_rate=cand.error_rate,
                busy_rate=cand.busy_rate,
                failure_ms=learner.failure_ms(cand.node_id),
                retry_ms=out[other].base_ms,
                busy_penalty_ms=cfg.busy_penalty_ms,
            )
        return out

    def pick(self, ctx: PickContext, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        ests = self.estimates(ctx, candidates)
        best = min(
            range(len(candidates)),
            key=lambda i: (ests[i].total_ms, candidates[i].load, candidates[i].node_id),
        )
        chosen = best
        key = ctx.affinity_key
        if len(candidates) == 1:
            ests[0].reason = "only candidate"
        elif key and (ctx.follow_up or key.startswith(SESSION_PREFIX)):
            index = self._affinity_node(key, candidates)
            slack = self._cfg.ect.affinity_slack
            if index != best and ests[index].total_ms <= slack * ests[best].total_ms:
                chosen = index
                ests[index].reason = f"affinity (within {slack:g}x of the best, {ests[best].node_id})"
            elif index == best:
                ests[index].reason = "affinity and lowest expected completion"
        elif key:
            ests[best].reason = "first turn: lowest expected completion"
        picked = candidates[chosen]
        picked.estimate = ests[chosen]
        if key and not key.startswith(SESSION_PREFIX):
            self._remember(key, picked.node_id)
        if logger.isEnabledFor(logging.DEBUG):
            others = ", ".join(f"{e.node_id} {e.total_ms:.0f} ms" for e in ests if e is not ests[chosen])
            logger.debug("ect %s: %s; others: %s", ctx.model, ests[chosen].explain(), others or "none")
        return picked

    def _affinity_node(self, key: str, candidates: Sequence[Candidate]) -> int:
        """The index of the candidate a follow-up prefers: where its conversation was last served,
        else its bounded-load rendezvous node."""
        placed = None if key.startswith(SESSION_PREFIX) else self.placed.get(key)
        for i, cand in enumerate(candidates):
            if cand.node_id == placed:
                return i
        preferred = bounded_load_pick(key, candidates, self._cfg.load_bound_c)
        return next(i for i, c in enumerate(candidates) if c is preferred)

    def _remember(self, key: str, node_id: str) -> None:
        placed = self.placed
        placed[key] = node_id
        placed.move_to_end(key)
        while len(placed) > self._cfg.ect.affinity_memory:
            placed.popitem(last=False)


def add_router_queue(
    estimates: Sequence[Estimate], candidates: Sequence[Candidate], ahead: int, queue_weight: float
) -> None:
    """Adds the wait behind the router's own admission queue to every full candidate's queue term.

    The requests waiting ahead take the next slots that free on the full nodes, which together
    serve sum(slots / typical service time) requests per millisecond, so a request behind `ahead`
    of them waits about ahead / that rate longer for any full node. A free node does not wait
    behind them: the waiters passed it over. Without this term every waiter in an overload counts
    only the node's own queue, waits for the fastest node and leaves the slower ones idle
    (docs/router.md, "Full nodes").
    """
    rate = sum(
        est.slots / est.typical_service_ms
        for est, cand in zip(estimates, candidates, strict=True)
        if cand.full and est.typical_service_ms > 0
    )
    if rate <= 0:
        return
    extra_ms = queue_weight * ahead / rate
    for est, cand in zip(estimates, candidates, strict=True):
        if cand.full:
            est.queue_ms += extra_ms
            est.waiting_ahead = ahead


def make_balancer(strategy: Strategy, cfg: BalancerConfig | None = None, seed: int | None = None) -> Balancer:
    """Builds the balancer named by the configuration."""
    rng = random.Random(seed)
    if strategy == "ect":
        return Ect(cfg)
    if strategy == "round_robin":
        return RoundRobin()
    if strategy == "random":
        return RandomPick(rng)
    if strategy == "least_inflight":
        return LeastInflight(rng)
    return P2cEct(cfg, rng)
