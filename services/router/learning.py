"""What the `ect` balancer learns from the router's own outcomes, and its score; pure Python, no I/O.

Per node and model the router learns the cost of a prompt token and of a generated token (from
Ollama's final stats: prompt_eval_duration / prompt_eval_count, eval_duration / eval_count), the
cold-load time (load_duration of a request that loaded the model), the time to first token and
the time an attempt takes beyond the node's own accounting (network, HTTP). Per node it learns the
parallel slots (from the concurrency at which requests did or did not wait in the node's queue,
unless configured) and how long a failed attempt takes. Per model it learns the expected answer
length and the prompt tokens per character. The score of a node for a request is the expected
completion time of that request there (`score`), every term kept for the explanation
(`Estimate.explain`).

Whatever the balancer, the router also learns each node's pace on a stream (`StallLearner`): the
wait for the first chunk and between chunks, from which a stalled node is told from a slow one
(`first_chunk_bound`, `gap_bound`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.v1 import common_pb2

from services.router.config import EctConfig, StallConfig

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One node attempt as the router saw it (durations in milliseconds).

    Attributes:
        node_id: The node.
        model: The normalised model name.
        ok: The attempt produced an answer (else a node fault: connection, 5xx, timeout, cut stream).
        concurrency: This router's requests in flight on the node when this one was sent, itself
            included (a lower bound of the node's occupancy).
        fleet_concurrency: The same as health counts it for all routers, when larger (an upper
            bound, late by a report interval); 0 means `concurrency`.
        latency_ms: Wall time of the attempt at the router.
        ttft_ms: Time to the first chunk at the router (0 when unknown).
        prompt_chars: Characters of the request's prompt (0 when unknown).
        num_predict: The request's limit on the answer length, if any.
        prompt_tokens: Ollama's prompt_eval_count (tokens evaluated; a cached prefix is not).
        prompt_ms: Ollama's prompt_eval_duration.
        output_tokens: Ollama's eval_count.
        eval_ms: Ollama's eval_duration.
        load_ms: Ollama's load_duration (a few milliseconds when the model was loaded).
        total_ms: Ollama's total_duration (queue wait, load, prompt evaluation and generation).
    """

    node_id: str
    model: str
    ok: bool = True
    concurrency: int = 1
    fleet_concurrency: int = 0
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    prompt_chars: int = 0
    num_predict: int | None = None
    prompt_tokens: int = 0
    prompt_ms: float = 0.0
    output_tokens: int = 0
    eval_ms: float = 0.0
    load_ms: float = 0.0
    total_ms: float = 0.0


def _ms(value: common_pb2.GenerationStats | None, name: str) -> float:
    if value is None:
        return 0.0
    duration = getattr(value, name)
    return float(duration.seconds * 1000 + duration.nanos / 1e6)


def outcome_of(
    node_id: str,
    model: str,
    ok: bool,
    stats: common_pb2.GenerationStats | None,
    *,
    concurrency: int,
    fleet_concurrency: int = 0,
    latency_ms: float,
    ttft_ms: float,
    prompt_chars: int,
    num_predict: int | None,
) -> Outcome:
    """An Outcome from an attempt and the GenerationStats of its final chunk (None when it had none)."""
    return Outcome(
        node_id=node_id,
        model=model,
        ok=ok,
        concurrency=concurrency,
        fleet_concurrency=fleet_concurrency,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        prompt_chars=prompt_chars,
        num_predict=num_predict,
        prompt_tokens=stats.prompt_eval_count if stats is not None else 0,
        prompt_ms=_ms(stats, "prompt_eval_duration"),
        output_tokens=stats.eval_count if stats is not None else 0,
        eval_ms=_ms(stats, "eval_duration"),
        load_ms=_ms(stats, "load_duration"),
        total_ms=_ms(stats, "total_duration"),
    )


def request_size(spec: common_pb2.GenerateSpec | common_pb2.ChatSpec) -> tuple[int, int | None]:
    """(prompt characters, num_predict or None) of a request: what its expected time depends on."""
    if isinstance(spec, common_pb2.ChatSpec):
        chars = sum(len(m.content) for m in spec.messages)
    else:
        chars = len(spec.prompt) + len(spec.system) + len(spec.suffix)
    limit: int | None = None
    if spec.HasField("options") and spec.options.HasField("num_predict") and spec.options.num_predict >= 0:
        limit = spec.options.num_predict
    return chars, limit


@dataclass(slots=True)
class Signal:
    """A cost learned twice: a fast EWMA of recent outcomes and a slow, time-weighted baseline.

    `value` is the fast EWMA while outcomes keep coming; without outcomes it relaxes geometrically
    toward the baseline, so a node that was briefly slow (and therefore sent little traffic) gets
    traffic back gradually instead of keeping a stale, bad estimate forever, while a node that is
    slow for good (its baseline is slow too) is not tried again and again.
    """

    fast: float = 0.0
    base: float = 0.0
    samples: int = 0
    at: float = 0.0

    def add(self, x: float, now: float, alpha: float, base_half_life_s: float) -> None:
        """Adds one sample taken at `now`."""
        if self.samples == 0:
            self.fast = self.base = x
        else:
            self.fast += alpha * (x - self.fast)
            weight = 1.0 - 0.5 ** (max(0.0, now - self.at) / base_half_life_s)
            self.base += weight * (x - self.base)
        self.samples += 1
        self.at = now

    def value(self, now: float, recover_half_life_s: float) -> float:
        """The current estimate (0 without samples)."""
        if self.samples == 0 or self.fast <= 0 or self.base <= 0:
            return self.fast
        age = now - self.at
        if age <= 0 or self.fast == self.base:
            return self.fast
        keep = 0.5 ** (age / recover_half_life_s)
        return self.base * math.pow(self.fast / self.base, keep)


@dataclass(slots=True)
class Mean:
    """A plain EWMA (answer lengths, tokens per character)."""

    value: float = 0.0
    samples: int = 0

    def add(self, x: float, alpha: float) -> None:
        """Adds one sample."""
        self.value = x if self.samples == 0 else self.value + alpha * (x - self.value)
        self.samples += 1


@dataclass(slots=True)
class NodeModelCosts:
    """What the router learned about one model on one node (milliseconds)."""

    prompt_ms_per_token: Signal = field(default_factory=Signal)
    eval_ms_per_token: Signal = field(default_factory=Signal)
    load_ms: Mean = field(default_factory=Mean)
    ttft_ms: Mean = field(default_factory=Mean)
    overhead_ms: Mean = field(default_factory=Mean)


@dataclass(slots=True)
class NodeLearned:
    """What the router learned about one node, whatever the model."""

    slots: int
    failure_ms: Mean = field(default_factory=Mean)
    raise_votes: int = 0
    full_seen: bool = False


@dataclass(slots=True)
class ModelLearned:
    """What the router learned about one model, whatever the node."""

    output_tokens: Mean = field(default_factory=Mean)
    prompt_tokens: Mean = field(default_factory=Mean)
    tokens_per_char: Mean = field(default_factory=Mean)


@dataclass(slots=True)
class Estimate:
    """The expected completion time of one request on one node, term by term (milliseconds).

    total_ms = queue_ms + load_ms + displace_ms + prompt_ms + generate_ms + overhead_ms + penalty_ms.
    """

    node_id: str
    queue_ms: float
    load_ms: float
    prompt_ms: float
    generate_ms: float
    overhead_ms: float
    penalty_ms: float
    inflight: int
    slots: int
    prompt_tokens: float
    output_tokens: float
    prompt_tok_s: float
    eval_tok_s: float
    error_rate: float = 0.0
    busy_rate: float = 0.0
    typical_service_ms: float = 0.0
    waiting_ahead: int = 0
    displace_ms: float = 0.0
    reason: str = "lowest expected completion"

    @property
    def base_ms(self) -> float:
        """The expected completion without the error and busy penalty."""
        waits = self.queue_ms + self.load_ms + self.displace_ms
        return waits + self.prompt_ms + self.generate_ms + self.overhead_ms

    @property
    def total_ms(self) -> float:
        """The score: the expected completion time of this request on this node."""
        return self.base_ms + self.penalty_ms

    def explain(self) -> str:
        """One line naming every term, e.g. for the debug log."""
        return (
            f"{self.node_id}: {self.reason}, {self.total_ms:.0f} ms = "
            f"queue {self.queue_ms:.0f} ms ({self.inflight} in flight, {self.slots} slots"
            f"{f', {self.waiting_ahead} waiting ahead at the router' if self.waiting_ahead else ''})"
            f" + load {self.load_ms:.0f} ms"
            f"{f' + reload of the models it may evict {self.displace_ms:.0f} ms' if self.displace_ms else ''}"
            f" + prompt {self.prompt_ms:.0f} ms"
            f" ({self.prompt_tokens:.0f} tok at {self.prompt_tok_s:.0f} tok/s)"
            f" + generate {self.generate_ms:.0f} ms"
            f" ({self.output_tokens:.0f} tok at {self.eval_tok_s:.1f} tok/s)"
            f" + overhead {self.overhead_ms:.0f} ms"
            f" + penalty {self.penalty_ms:.0f} ms (errors {self.error_rate:.2f}, busy {self.busy_rate:.2f})"
        )


def score(
    node_id: str,
    *,
    inflight: int,
    slots: int,
    prompt_tokens: float,
    output_tokens: float,
    prompt_ms_per_token: float,
    eval_ms_per_token: float,
    typical_service_ms: float,
    queue_weight: float,
    load_ms: float = 0.0,
    overhead_ms: float = 0.0,
) -> Estimate:
    """The expected completion time of a request on a node, before penalties.

    queue: the requests beyond the node's free slots, each holding a slot for the node's typical
    service time, shared by the slots: max(0, inflight - slots + 1) x typical / slots, weighted by
    `queue_weight`. Then the model's load when it is not loaded, this request's prompt evaluation
    and generation at the node's learned speeds, and the learned overhead of an attempt.
    """
    beyond = max(0, inflight - slots + 1)
    return Estimate(
        node_id=node_id,
        queue_ms=queue_weight * beyond * typical_service_ms / slots,
        load_ms=load_ms,
        prompt_ms=prompt_tokens * prompt_ms_per_token,
        generate_ms=output_tokens * eval_ms_per_token,
        overhead_ms=overhead_ms,
        penalty_ms=0.0,
        inflight=inflight,
        slots=slots,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        typical_service_ms=typical_service_ms,
        prompt_tok_s=1000.0 / prompt_ms_per_token if prompt_ms_per_token > 0 else math.inf,
        eval_tok_s=1000.0 / eval_ms_per_token if eval_ms_per_token > 0 else math.inf,
    )


def add_penalty(
    est: Estimate,
    *,
    error_rate: float,
    busy_rate: float,
    failure_ms: float,
    retry_ms: float,
    busy_penalty_ms: float,
) -> None:
    """Adds the penalty: error rate x (time to fail + the retry elsewhere) + busy rate x busy penalty.

    A node that fails fast costs the retry only; one that fails by timing out costs the timeout too.
    """
    est.error_rate = error_rate
    est.busy_rate = busy_rate
    est.penalty_ms = error_rate * (failure_ms + retry_ms) + busy_rate * busy_penalty_ms


@dataclass(frozen=True, slots=True)
class Prior:
    """Per-token costs for a node with no outcome of the model yet: the median of the nodes that have one."""

    prompt_ms_per_token: float
    eval_ms_per_token: float


class Learner:
    """The learned state behind the `ect` balancer, fed with `observe` and read with `estimate`.

    Args:
        cfg: The tuning (alphas, half-lives, defaults).
        clock: Monotonic seconds (tests pass a fake).
    """

    def __init__(self, cfg: EctConfig | None = None, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg or EctConfig()
        self._clock = clock
        self.costs: dict[tuple[str, str], NodeModelCosts] = {}
        self.nodes: dict[str, NodeLearned] = {}
        self.models: dict[str, ModelLearned] = {}

    # --- learning -------------------------------------------------------------------------------
    def node(self, node_id: str) -> NodeLearned:
        """The node's learned state (created with the defaults)."""
        state = self.nodes.get(node_id)
        if state is None:
            slots = self.cfg.node_slots.get(node_id, self.cfg.default_slots)
            state = self.nodes[node_id] = NodeLearned(slots=max(1, slots))
        return state

    def confirmed_slots(self, node_id: str) -> int | None:
        """The node's learned slots once a request has been seen waiting there (an upper bound
        observed, not the default guess); None before that."""
        state = self.nodes.get(node_id)
        return state.slots if state is not None and state.full_seen else None

    def model(self, model: str) -> ModelLearned:
        """The model's learned state."""
        state = self.models.get(model)
        if state is None:
            state = self.models[model] = ModelLearned()
        return state

    def costs_of(self, node_id: str, model: str) -> NodeModelCosts:
        """The learned costs of a model on a node."""
        key = (node_id, model)
        state = self.costs.get(key)
        if state is None:
            state = self.costs[key] = NodeModelCosts()
        return state

    def observe(self, o: Outcome) -> None:
        """Learns from one attempt."""
        cfg = self.cfg
        now = self._clock()
        node = self.node(o.node_id)
        if not o.ok:
            node.failure_ms.add(o.latency_ms, cfg.alpha)
            return
        costs = self.costs_of(o.node_id, o.model)
        model = self.model(o.model)
        if o.prompt_tokens > 0 and o.prompt_ms > 0:
            costs.prompt_ms_per_token.add(
                o.prompt_ms / o.prompt_tokens, now, cfg.alpha, cfg.baseline_half_life_s
            )
            model.prompt_tokens.add(o.prompt_tokens, cfg.length_alpha)
            if o.prompt_chars > 0:
                model.tokens_per_char.add(o.prompt_tokens / o.prompt_chars, cfg.length_alpha)
        if o.output_tokens > 0 and o.eval_ms > 0:
            costs.eval_ms_per_token.add(o.eval_ms / o.output_tokens, now, cfg.alpha, cfg.baseline_half_life_s)
        # NOTE: an answer cut by num_predict says nothing about the model's natural answer length.
        if o.total_ms > 0 and not (o.num_predict is not None and o.output_tokens >= o.num_predict):
            model.output_tokens.add(o.output_tokens, cfg.length_alpha)
        service_ms = o.prompt_ms + o.eval_ms
        if o.load_ms > max(cfg.wait_tolerance_ms, 0.1 * service_ms):
            costs.load_ms.add(o.load_ms, cfg.alpha)
        if o.ttft_ms > 0:
            costs.ttft_ms.add(o.ttft_ms, cfg.alpha)
        if o.total_ms > 0 and o.latency_ms > 0:
            # NOTE: a simulator at time scale s reports nominal durations while the router measures
            # real ones; the difference is then meaningless and clipped at 0.
            costs.overhead_ms.add(max(0.0, o.latency_ms - o.total_ms), cfg.alpha)
        if o.total_ms > 0 and o.node_id not in cfg.node_slots:
            self._learn_slots(node, o, service_ms)

    def _learn_slots(self, node: NodeLearned, o: Outcome, service_ms: float) -> None:
        """A request that found a free slot at concurrency c shows c slots; one that waited shows fewer.

        The node-side wait is what Ollama's total_duration holds beyond load, prompt evaluation and
        generation: the time in the scheduler's and the runner's queue.
        """
        waited_ms = o.total_ms - o.load_ms - o.prompt_ms - o.eval_ms
        if waited_ms <= max(self.cfg.wait_tolerance_ms, 0.1 * service_ms):
            # NOTE: the lower bound of the occupancy (this router's own count) for "at least c slots".
            # That count can run ahead of the node's: a request the node has finished stays in it
            # until the router reads the answer, so on a busy router a request can find a free slot
            # at a count above the slots. One such outcome is weak evidence; a raise needs
            # `slot_evidence` of them with no wait in between.
            if o.concurrency > node.slots:
                node.raise_votes += 1
                if node.raise_votes >= self.cfg.slot_evidence:
                    node.slots = min(self.cfg.max_slots, o.concurrency)
                    node.raise_votes = 0
            return
        # The upper bound (every router's, per health) for "fewer than c slots": a wait is sure.
        node.raise_votes = 0
        node.full_seen = True
        busy = max(o.concurrency, o.fleet_concurrency)
        if busy <= node.slots:
            node.slots = max(1, busy - 1)

    # --- reading --------------------------------------------------------------------------------
    def needs_prior(self, model: str, node_ids: list[str]) -> bool:
        """True when one of the nodes has no outcome of the model yet (then `prior` is needed)."""
        for node_id in node_ids:
            costs = self.costs.get((node_id, model))
            if costs is None or not costs.prompt_ms_per_token.samples or not costs.eval_ms_per_token.samples:
                return True
        return False

    def prior(self, model: str, node_ids: list[str]) -> Prior:
        """Per-token costs for the nodes without an outcome of the model: the median of those with one.

        A pessimistic default would keep a new node out of every choice, so it would never be
        measured; the median lets it compete (Linkerd gives new endpoints a neutral latency too).
        """
        cfg = self.cfg
        now = self._clock()
        prompt, generate = [], []
        for node_id in node_ids:
            costs = self.costs.get((node_id, model))
            if costs is None:
                continue
            if costs.prompt_ms_per_token.samples:
                prompt.append(costs.prompt_ms_per_token.value(now, cfg.recover_half_life_s))
            if costs.eval_ms_per_token.samples:
                generate.append(costs.eval_ms_per_token.value(now, cfg.recover_half_life_s))
        return Prior(
            statistics.median(prompt) if prompt else 1000.0 / cfg.default_prompt_tok_s,
            statistics.median(generate) if generate else 1000.0 / cfg.default_eval_tok_s,
        )

    def expected_tokens(self, model: str, prompt_chars: int, num_predict: int | None) -> tuple[float, float]:
        """(prompt tokens, answer tokens) expected for a request of the model."""
        cfg = self.cfg
        learned = self.models.get(model)
        if prompt_chars > 0:
            per_char = (
                learned.tokens_per_char.value
                if learned and learned.tokens_per_char.samples
                else cfg.default_tokens_per_char
            )
            prompt = prompt_chars * per_char
        else:
            prompt = learned.prompt_tokens.value if learned and learned.prompt_tokens.samples else 0.0
        output = (
            learned.output_tokens.value
            if learned and learned.output_tokens.samples
            else cfg.default_output_tokens
        )
        if num_predict is not None:
            output = min(output, float(num_predict))
        return prompt, output

    def estimate(
        self,
        node_id: str,
        model: str,
        *,
        inflight: int,
        loaded: bool,
        size_bytes: int,
        prompt_chars: int,
        num_predict: int | None,
        prior: Prior | None,
        not_loaded_penalty_ms: float,
        displaced_bytes: int = 0,
    ) -> Estimate:
        """The expected completion time of a request on a node (without penalties: see `add_penalty`).

        `prior` stands for the costs the node has no outcome of yet (None: the configured defaults).
        `displaced_bytes`: the other models loaded there that loading this one may evict; their
        reload is charged x `displace_weight`.
        """
        cfg = self.cfg
        now = self._clock()
        costs = self.costs.get((node_id, model))
        if prior is None:
            prompt_cost, eval_cost = 1000.0 / cfg.default_prompt_tok_s, 1000.0 / cfg.default_eval_tok_s
        else:
            prompt_cost, eval_cost = prior.prompt_ms_per_token, prior.eval_ms_per_token
        load_ms = 0.0
        overhead_ms = 0.0
        if costs is not None:
            if costs.prompt_ms_per_token.samples:
                prompt_cost = costs.prompt_ms_per_token.value(now, cfg.recover_half_life_s)
            if costs.eval_ms_per_token.samples:
                eval_cost = costs.eval_ms_per_token.value(now, cfg.recover_half_life_s)
            overhead_ms = costs.overhead_ms.value
        if not loaded:
            if costs is not None and costs.load_ms.samples:
                load_ms = costs.load_ms.value
            elif size_bytes > 0:
                load_ms = cfg.load_base_ms + cfg.load_ms_per_gb * size_bytes / 1e9
            else:
                load_ms = not_loaded_penalty_ms
        prompt_tokens, output_tokens = self.expected_tokens(model, prompt_chars, num_predict)
        learned = self.models.get(model)
        typical_prompt = (
            learned.prompt_tokens.value if learned and learned.prompt_tokens.samples else prompt_tokens
        )
        typical_output = (
            learned.output_tokens.value
            if learned and learned.output_tokens.samples
            else cfg.default_output_tokens
        )
        estimate = score(
            node_id,
            inflight=inflight,
            slots=self.node(node_id).slots,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            prompt_ms_per_token=prompt_cost,
            eval_ms_per_token=eval_cost,
            typical_service_ms=typical_prompt * prompt_cost + typical_output * eval_cost,
            queue_weight=cfg.queue_weight,
            load_ms=load_ms,
            overhead_ms=overhead_ms,
        )
        if not loaded and displaced_bytes > 0:
            reload_ms = cfg.load_base_ms + cfg.load_ms_per_gb * displaced_bytes / 1e9
            estimate.displace_ms = cfg.displace_weight * reload_ms
        return estimate

    def failure_ms(self, node_id: str) -> float:
        """How long a failed attempt on the node takes (learned, else the configured default)."""
        learned = self.nodes.get(node_id)
        if learned is not None and learned.failure_ms.samples:
            return learned.failure_ms.value
        return self.cfg.failure_ms


# --- stall detection ------------------------------------------------------------------------------
@dataclass(slots=True)
class Spread:
    """An EWMA of a wait and of its absolute deviation (seconds), as TCP learns its round trip.

    The first sample sets the mean and half of it as the deviation (RFC 6298's start).
    """

    mean: float = 0.0
    dev: float = 0.0
    samples: int = 0

    def add(self, x: float, alpha: float) -> None:
        """Adds one sample."""
        if self.samples == 0:
            self.mean, self.dev = x, x / 2
        else:
            self.dev += alpha * (abs(x - self.mean) - self.dev)
            self.mean += alpha * (x - self.mean)
        self.samples += 1

    @property
    def high(self) -> float:
        """mean + 2 x deviation: about the 95th percentile of a bell-shaped spread."""
        return self.mean + 2 * self.dev


@dataclass(slots=True)
class StallStats:
    """A node's pace for one model on a stream (seconds)."""

    ttft: Spread = field(default_factory=Spread)
    prompt_chars: Spread = field(default_factory=Spread)
    gap: Spread = field(default_factory=Spread)
    load: Mean = field(default_factory=Mean)


@dataclass(frozen=True, slots=True)
class StallBound:
    """How long an attempt may wait for its next chunk, and why (for the log line of a stall).

    `learned` is False when the fixed timeout applies (too little learned, or a cold model whose
    load time is unknown): the watch then leaves the attempt to the transport's read timeout.
    """

    seconds: float
    learned: bool
    why: str


def first_chunk_bound(
    stats: StallStats | None, *, loaded: bool, cfg: StallConfig, cap_s: float, prompt_chars: int = 0
) -> StallBound:
    """The longest wait for the first chunk, capped at `cap_s`:
    max(floor, factor x high TTFT x max(1, prompt_chars / high learned prompt chars))
    [+ load_factor x learned load time when the model is not loaded].

    A prompt longer than those the TTFT was learned from stretches the bound in proportion (its
    evaluation comes before the first token). `cap_s` is the fixed budget of the attempt
    (ttft_timeout_s, plus the cold extra when the model is not loaded, within the remaining time).
    """
    if stats is None or stats.ttft.samples < cfg.min_ttft_samples:
        return StallBound(cap_s, False, f"fixed {cap_s:.3g} s (first-chunk waits not learned yet)")
    high = stats.ttft.high
    why = f"{cfg.factor:.3g} x (ttft {stats.ttft.mean:.3f} s + 2 x dev {stats.ttft.dev:.3f} s)"
    typical = stats.prompt_chars.high
    if prompt_chars > typical > 0:
        high *= prompt_chars / typical
        why += f" x prompt {prompt_chars} / {typical:.0f} chars"
    learned = max(cfg.ttft_floor_s, cfg.factor * high)
    why = f"max(floor {cfg.ttft_floor_s:.3g} s, {why})"
    if not loaded:
        if not stats.load.samples:
            return StallBound(cap_s, False, f"fixed {cap_s:.3g} s (model not loaded, load time not learned)")
        learned += cfg.load_factor * stats.load.value
        why += f" + {cfg.load_factor:.3g} x load {stats.load.value:.3f} s"
    if learned >= cap_s:
        return StallBound(cap_s, False, f"fixed {cap_s:.3g} s (below {why} = {learned:.3g} s)")
    return StallBound(learned, True, f"{learned:.3g} s = {why}")


def gap_bound(stats: StallStats | None, *, cfg: StallConfig, cap_s: float) -> StallBound:
    """The longest wait between two chunks: max(floor, factor x high gap), capped at `cap_s`."""
    if stats is None or stats.gap.samples < cfg.min_gap_samples:
        return StallBound(cap_s, False, f"fixed {cap_s:.3g} s (gaps not learned yet)")
    learned = max(cfg.gap_floor_s, cfg.factor * stats.gap.high)
    why = (
        f"max(floor {cfg.gap_floor_s:.3g} s, {cfg.factor:.3g} x (gap {stats.gap.mean:.3f} s"
        f" + 2 x dev {stats.gap.dev:.3f} s))"
    )
    if learned >= cap_s:
        return StallBound(cap_s, False, f"fixed {cap_s:.3g} s (below {why} = {learned:.3g} s)")
    return StallBound(learned, True, f"{learned:.3g} s = {why}")


def is_stall(bound: StallBound, waited_s: float, silent_s: float) -> bool:
    """True when an attempt that waited `waited_s` for its next chunk, on a node that sent this router
    nothing on any stream for `silent_s`, is stalled: both beyond a learned bound.

    A node that keeps sending on other streams is alive (the attempt may wait in its queue), and a
    fixed bound is the transport's read timeout to enforce, not the watch's.
    """
    return bound.learned and min(waited_s, silent_s) >= bound.seconds


class StallLearner:
    """The router's record of each node's pace on a stream, and of the stalls it declared.

    `active` holds, per node, when (event-loop time) this router last received a chunk from it on
    any stream: a node that keeps sending on other streams is alive, whatever one attempt waits.
    """

    def __init__(self, cfg: StallConfig | None = None) -> None:
        self.cfg = cfg or StallConfig()
        self.stats: dict[tuple[str, str], StallStats] = {}
        self.active: dict[str, float] = {}
        self.stalls: dict[tuple[str, str], int] = {}

    def stats_of(self, node_id: str, model: str) -> StallStats:
        """The learned pace of a model on a node (created empty)."""
        key = (node_id, model)
        state = self.stats.get(key)
        if state is None:
            state = self.stats[key] = StallStats()
        return state

    def first_chunk(self, stats: StallStats, waited_s: float, prompt_chars: int = 0) -> None:
        """Learns one wait for a first chunk (of an attempt whose model was loaded), and its prompt size."""
        stats.ttft.add(waited_s, self.cfg.ttft_alpha)
        if prompt_chars > 0:
            stats.prompt_chars.add(prompt_chars, self.cfg.ttft_alpha)

    def gap(self, stats: StallStats, waited_s: float) -> None:
        """Learns one wait between two chunks."""
        stats.gap.add(waited_s, self.cfg.gap_alpha)

    def loaded(self, node_id: str, model: str, load_s: float) -> None:
        """Learns the time a node took to load the model: the wait for the first chunk of a request that
        loaded it (Ollama's load_duration says it did)."""
        self.stats_of(node_id, model).load.add(load_s, self.cfg.ttft_alpha)

    def bounds(
        self, node_id: str, model: str, *, loaded: bool, cap_s: float, prompt_chars: int = 0
    ) -> tuple[StallBound, StallBound]:
        """(first-chunk bound, between-chunks bound) of an attempt; `cap_s` is its fixed budget."""
        stats = self.stats.get((node_id, model))
        return (
            first_chunk_bound(stats, loaded=loaded, cfg=self.cfg, cap_s=cap_s, prompt_chars=prompt_chars),
            gap_bound(stats, cfg=self.cfg, cap_s=cap_s),
        )

    def stalled(self, node_id: str, phase: str) -> None:
        """Counts a declared stall ("first_chunk" or "between_chunks")."""
        key = (node_id, phase)
        self.stalls[key] = self.stalls.get(key, 0) + 1
