"""Configuration of the router service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from services.common.settings import Section, ServiceConfig, read_secret

Strategy = Literal["p2c_ect", "ect", "round_robin", "random", "least_inflight"]


class StaticNode(Section):
    """A node the router uses while the health service has never answered.

    Attributes:
        node_id: The node's id (matches health's registry when both are configured alike).
        address: The node's base URL, e.g. "http://127.0.0.1:11434".
    """

    node_id: str
    address: str


def _default_nodes() -> list[StaticNode]:
    return [StaticNode(node_id=f"node-{i}", address=f"http://127.0.0.1:{11433 + i}") for i in range(1, 5)]


class RetryBudgetConfig(Section):
    """Finagle's RetryBudget: retries may add `percent_can_retry` of recent requests plus a floor.

    Defaults are Finagle's (`RetryBudget.apply()`: ttl 10 s, minRetriesPerSec 10, percentCanRetry 0.2).
    """

    ttl_s: float = Field(default=10.0, gt=0)
    min_retries_per_s: float = Field(default=10.0, ge=0)
    percent_can_retry: float = Field(default=0.2, ge=0, le=10)


class EctConfig(Section):
    """Tuning of the `ect` balancer: what it assumes before it has learned, and how fast it learns.

    The learned values and the score are in services/router/learning.py; docs/router.md explains them.

    Attributes:
        alpha: Weight of the newest outcome in the per-token cost EWMAs (prompt evaluation,
            generation) of a node and model: a node that slows down is seen within a few outcomes.
        baseline_half_life_s: Half-life of the slow, time-weighted baseline of the same costs.
        recover_half_life_s: While a node and model get no outcome, their recent costs relax toward
            the baseline (half of the gap in this long), so a node that was slow gets traffic back
            gradually instead of never being measured again.
        length_alpha: Weight of the newest outcome in the expected answer length (tokens) of a model
            and its prompt tokens per character: answer lengths vary much more than speeds.
        queue_weight: Multiplies the expected queue wait. A request that joins a queue also delays
            every later request on that node; weighing the wait more than the service time keeps
            the fast nodes' queues short (bench/oracle.py: 1.25-2 beat 1 at every load).
        default_slots: Parallel slots (Ollama's num_parallel) assumed for a node until outcomes show
            otherwise; too many is corrected by the first request that waits, too few never would be.
        node_slots: The slots of the nodes whose num_parallel the operator knows (node id to slots);
            these are not learned.
        max_slots: Upper bound of the learned slots.
        slot_evidence: Outcomes that found a free slot at a concurrency above the learned slots
            needed (with no wait among them) before the slots are raised: the router's count runs
            ahead of the node's while answers wait to be read, so one such outcome proves little.
        wait_tolerance_ms: Node-side queue time (total_duration minus load, prompt and generation)
            below this (or 10 % of the service time) means the request found a free slot.
        default_prompt_tok_s: Prompt evaluation speed assumed before any outcome of the model.
        default_eval_tok_s: Generation speed assumed before any outcome of the model.
        default_output_tokens: Answer length assumed before any outcome of the model.
        default_tokens_per_char: Prompt tokens per character assumed before any outcome of the model.
        load_base_ms: Cold-load time of a model not yet seen loading on the node: this plus
            `load_ms_per_gb` x its size (when the size is unknown: `not_loaded_penalty_ms`).
        load_ms_per_gb: See `load_base_ms`.
        displace_weight: A load on a node that holds other models may evict them (Ollama evicts
            when the memory or OLLAMA_MAX_LOADED_MODELS is full; the router cannot tell): the load
            is charged this x their reload time as well (the swap back), so that two models do not
            evict each other in turns on every node (bench/scenarios/mixed_models.py). 0 charges
            only the load itself.
        failure_ms: Time a failed attempt is assumed to cost before the node's failures are seen.
        affinity_slack: A conversation's follow-up stays on the node that served it (else its
            rendezvous node) while that node's expected completion is at most this many times
            the best one.
        affinity_memory: Conversations whose latest node the router remembers (least recently
            used forgotten first); a conversation's first turn goes to the best node.
    """

    alpha: float = Field(default=0.3, gt=0, le=1)
    baseline_half_life_s: float = Field(default=60.0, gt=0)
    recover_half_life_s: float = Field(default=5.0, gt=0)
    length_alpha: float = Field(default=0.05, gt=0, le=1)
    queue_weight: float = Field(default=1.5, ge=0)
    default_slots: int = Field(default=4, ge=1)
    node_slots: dict[str, int] = Field(default_factory=dict)
    max_slots: int = Field(default=64, ge=1)
    slot_evidence: int = Field(default=3, ge=1)
    wait_tolerance_ms: float = Field(default=50.0, ge=0)
    default_prompt_tok_s: float = Field(default=600.0, gt=0)
    default_eval_tok_s: float = Field(default=60.0, gt=0)
    default_output_tokens: float = Field(default=100.0, ge=0)
    default_tokens_per_char: float = Field(default=0.25, gt=0)
    load_base_ms: float = Field(default=300.0, ge=0)
    load_ms_per_gb: float = Field(default=2000.0, ge=0)
    displace_weight: float = Field(default=1.0, ge=0)
    failure_ms: float = Field(default=500.0, ge=0)
    affinity_slack: float = Field(default=2.0, ge=1.0)
    affinity_memory: int = Field(default=65_536, ge=0)


class BalancerConfig(Section):
    """Tuning of the balancers, `ect` (the default) and `p2c_ect` (see services/router/balancer.py).

    Attributes:
        default_service_ms: Service time assumed for a (node, model) with no EWMA yet.
        not_loaded_penalty_ms: Added when the model is installed but not loaded (a cold load).
        error_penalty_ms: Multiplied by the node's recent error rate.
        busy_penalty_ms: Multiplied by the node's recent 503 rate.
        load_bound_c: Bounded-load affinity keeps a key on its node while load <= c x mean load.
        max_inflight_per_node: Nodes with this many requests in flight from this router are full,
            unless the node's parallel slots are known (see `inflight_per_slot`).
        inflight_per_slot: A node whose parallel slots (Ollama's OLLAMA_NUM_PARALLEL) are known, from
            its registry label `num_parallel` or from `ect.node_slots`, is full at this many requests
            per slot from this router (rounded up): one running in each slot and one ready to start
            when it frees; the rest wait in the router's admission queue, where they are served
            fairly and go to whichever node frees a slot first.
        ewma_alpha: Weight of the newest sample in the router's own service-time EWMA.
        error_half_life_s: The router's own error and busy rates halve after this long without news.
        ect: Tuning of the `ect` balancer (learned expected completion time).
        pins: A model's nodes by their registry labels: model name to the labels a node must carry
            (every one, value for value) to serve it, e.g. {"mistral:7b": {"gpu": "true"}}. A
            request for a pinned model that no such node can serve fails as for any model no node
            serves. Models without a pin may go to any node. Node priority is the registry label
            `priority` (lower first; see services/router/scores.py).
    """

    default_service_ms: float = Field(default=1000.0, gt=0)
    not_loaded_penalty_ms: float = Field(default=5000.0, ge=0)
    error_penalty_ms: float = Field(default=10000.0, ge=0)
    busy_penalty_ms: float = Field(default=2000.0, ge=0)
    load_bound_c: float = Field(default=1.25, ge=1.0)
    max_inflight_per_node: int = Field(default=256, ge=1)
    inflight_per_slot: float = Field(default=2.0, gt=0)
    ewma_alpha: float = Field(default=0.3, gt=0, le=1)
    error_half_life_s: float = Field(default=5.0, gt=0)
    ect: EctConfig = EctConfig()
    pins: dict[str, dict[str, str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_pins(self) -> BalancerConfig:
        for model, labels in self.pins.items():
            if not labels:
                raise ValueError(f"balancer.pins[{model!r}]: name at least one label a node must carry")
        return self


class StallConfig(Section):
    """Stall detection: a node that stops sending is left from its learned pace, not a fixed timeout.

    Per node and model the router learns the time to the first chunk and the prompt's size (while
    the model is loaded) and the gap between two chunks of a stream, each as an EWMA of the value
    and of its absolute deviation ("high" = mean + 2 x deviation, about a 95th percentile), and the
    load time (the wait for the first chunk of a request that loaded the model).
    An attempt is declared stalled when it has waited longer than its bound for its next chunk and
    the node sent this router nothing on any other stream meanwhile; it then moves on like a cut
    stream (another node continues the answer). The bound of a wait for the first chunk is
    max(`ttft_floor_s`, `factor` x high TTFT x max(1, prompt chars / high learned prompt chars)),
    plus `load_factor` x the learned load time when the node does not have the model loaded;
    between chunks max(`gap_floor_s`, `factor` x high gap).
    Neither ever exceeds the fixed timeouts (`ttft_timeout_s`, + `ttft_cold_extra_s` when cold),
    which still apply when too little is learned. See docs/router.md.

    Attributes:
        enabled: False turns stall detection (and its learning) off: only the fixed timeouts apply.
        factor: Multiplies the learned high TTFT and high gap.
        ttft_floor_s: The first-chunk bound is never shorter.
        gap_floor_s: The between-chunks bound is never shorter.
        load_factor: Multiplies the learned load time added to the first-chunk bound of a node that
            does not have the model loaded (without a learned load time the fixed budget applies).
        ttft_alpha: Weight of the newest first-chunk wait in its EWMAs.
        gap_alpha: Weight of the newest gap in its EWMAs (one sample per chunk).
        min_ttft_samples: First-chunk waits to learn before the learned bound applies.
        min_gap_samples: Gaps to learn before the learned bound applies.
    """

    enabled: bool = True
    factor: float = Field(default=4.0, ge=1.0)
    ttft_floor_s: float = Field(default=3.0, gt=0)
    gap_floor_s: float = Field(default=2.0, gt=0)
    load_factor: float = Field(default=2.0, ge=1.0)
    ttft_alpha: float = Field(default=0.2, gt=0, le=1)
    gap_alpha: float = Field(default=0.05, gt=0, le=1)
    min_ttft_samples: int = Field(default=5, ge=1)
    min_gap_samples: int = Field(default=20, ge=1)


class AdmissionConfig(Section):
    """The admission queue: where requests wait while every node that could serve them is full.

    A node is full at `balancer.inflight_per_slot` requests per parallel slot when its slots are
    known, else at `balancer.max_inflight_per_node`, requests in flight from this router. See
    services/router/admission.py and docs/router.md.

    Attributes:
        max_waiting: Most requests waiting at once; beyond it a request is refused at once with
            RESOURCE_EXHAUSTED (HTTP 503 with `Retry-After`). 0 refuses without waiting.
        max_wait_s: Longest wait of one request for a slot (its own deadline may end it sooner).
        retry_after_s: The `Retry-After` (seconds, rounded up) of a refusal because of saturation.
    """

    max_waiting: int = Field(default=512, ge=0)
    max_wait_s: float = Field(default=30.0, gt=0)
    retry_after_s: float = Field(default=2.0, gt=0)


class NearCacheConfig(Section):
    """The router's in-process copy of hot exact-tier answers (services/router/near_cache.py).

    Attributes:
        redis_url: The cache's Redis (`redis://HOST:PORT/DB`), where the cache publishes its stores and
            invalidations; "" (the default) turns the near cache off.
        redis_password: Redis's password, inline ("" for none, or the URL's own).
        redis_password_file: A file holding it instead.
        max_bytes: Most bytes of answers kept (least recently used first out).
        ping_interval_s: How often the subscription is pinged; a link silent for three intervals is
            treated as lost (the near cache is then cleared until it is subscribed again).
    """

    redis_url: str = ""
    redis_password: str = ""
    redis_password_file: str = ""
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    ping_interval_s: float = Field(default=1.0, gt=0)

    def resolved_password(self) -> str | None:
        """The password from `redis_password` or `redis_password_file`; None for the URL's own."""
        return read_secret("router.near_cache.redis_password", self.redis_password, self.redis_password_file)


class RouterConfig(ServiceConfig):
    """Settings of the router service (defaults work on one machine).

    Attributes:
        http_port: Port of the Ollama/OpenAI-compatible HTTP API (served by the same process).
        health_addr: The health service ("host:port"); empty disables the score feed.
        cache_addr: The cache service ("host:port"); empty disables caching.
        strategy: The balancer: ect (default: learned expected completion time), p2c_ect, round_robin,
            random or least_inflight.
        ttft_timeout_s: An attempt that has produced no token after this long moves to another node;
            also the longest silence allowed between two chunks of a stream.
        ttft_cold_extra_s: Added to the TTFT budget when the model is not loaded on the chosen node.
        request_timeout_s: Upper bound of one request when the client sets no deadline.
        embed_timeout_s: Upper bound of one embedding attempt (embeddings do not stream).
        lookup_budget_ms: Time the cache lookup may take before the request goes on as a miss, while
            the cache answers quickly or not at all.
        lookup_budget_max_ms: The ceiling of that time while the cache answers but slowly (a busy
            host): the budget follows twice the 95th percentile of the recent lookups' reply times
            between `lookup_budget_ms` (or `semantic_lookup_budget_ms`) and this, so a loaded host
            keeps serving hits instead of turning them into node calls. Set it to `lookup_budget_ms`
            for a fixed budget; left at its default under a larger `lookup_budget_ms`, it follows
            that budget (fixed). Docs: docs/router.md, "The lookup budget".
        semantic_lookup_budget_ms: The same for a request the semantic tier may answer (temperature
            0 or CACHE_MODE_SEMANTIC): its lookup first embeds the prompt on a node (90-190 ms on a
            real CPU Ollama), which the exact-tier budget could never fit.
        lookup_calls: Cache lookup RPCs in flight at once; lookups that arrive meanwhile wait for
            one to return and then go together as one LookupBatch.
        lookup_batch_max: Most lookups in one LookupBatch; 1 (the default) sends one Lookup call per
            request: on the 2-core benchmark machine batching did not raise throughput and made
            more lookups miss their budget (bench/results/router_overhead.md, `_batched` rows).
        unary_node_stream: Unary generate and chat ask the node to stream (the TTFT timeout and
            mid-stream continuation then apply). False asks for one JSON reply: less CPU on node and
            router per request, but a hung node is only left after `buffered_read_timeout_s` and a
            failed attempt is retried from scratch (docs/router.md).
        buffered_read_timeout_s: With `unary_node_stream` false, the longest wait for a node's reply.
        store_queue_size: Answers waiting to be stored; beyond it the oldest is dropped.
        max_prompt_bytes: Largest prompt (prompt, system, suffix, messages and images together).
        max_concurrent_requests: Requests in progress beyond this get RESOURCE_EXHAUSTED.
        max_embed_inputs: Most inputs in one Embed call.
        embed_split_size: Embed calls with more inputs are split into batches of this size across nodes.
        embed_coalesce_size: Concurrent Embed calls with fewer inputs than this, for the same model and
            options, join one node call of up to this many inputs (1 turns coalescing off).
        embed_coalesce_window_ms: How long the first call of a node batch waits for others to join;
            a call with less time left before its deadline is sent at once (0 turns coalescing off).
        node_cooldown_s: After a connection error the router avoids the node for this long on its own.
        busy_cooldown_s: After a 503 the router avoids the node for this long.
        background_max_inflight: Background requests in progress at once across the router.
        background_node_threshold: Background requests only go to nodes with fewer interactive requests.
        background_wait_s: How long a background request waits for room before it gives up.
        outcome_queue_size: Outcomes waiting to be reported to health; beyond it the oldest is dropped.
        outcome_batch_size: Outcomes per report message.
        outcome_flush_ms: Longest time an outcome waits before its batch is sent.
        static_refresh_s: While on the static node list, how often the router reads /api/tags and /api/ps.
        stale_after_heartbeats: The score stream is stale after this many missed heartbeats.
        nodes: The static node list used until the health service answers.
        reporter: This router's name in outcome reports ("" picks router-<pid>).
        model_admin_parallel: Nodes a fleet-wide pull, delete or copy works on at once; the others wait.
        model_pull_read_timeout_s: A node's pull fails when it sends no progress line for this long.
        workers: Router processes serving the same ports (SO_REUSEPORT; the kernel spreads connections
            over them), each with its own streams to health and the cache: one host or pod can use
            several cores. Worker i serves its metrics on `metrics_port` + i. docs/router.md, "Workers".
        admission: The bounded, tenant-fair queue of requests waiting for a free node slot.
        stall: Stall detection from each node's learned pace (below the fixed timeouts).
    """

    port: int = 50051
    http_port: int = Field(default=11400, ge=0, le=65535)
    health_addr: str = "127.0.0.1:50053"
    cache_addr: str = "127.0.0.1:50052"
    strategy: Strategy = "ect"
    ttft_timeout_s: float = Field(default=10.0, gt=0)
    ttft_cold_extra_s: float = Field(default=60.0, ge=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    embed_timeout_s: float = Field(default=120.0, gt=0)
    lookup_budget_ms: float = Field(default=15.0, gt=0)
    semantic_lookup_budget_ms: float = Field(default=250.0, gt=0)
    lookup_budget_max_ms: float = Field(default=250.0, gt=0)
    lookup_calls: int = Field(default=2, ge=1)
    lookup_batch_max: int = Field(default=1, ge=1)
    unary_node_stream: bool = True
    buffered_read_timeout_s: float = Field(default=120.0, gt=0)
    store_queue_size: int = Field(default=1000, ge=1)
    max_prompt_bytes: int = Field(default=1_000_000, ge=1)
    max_concurrent_requests: int = Field(default=1024, ge=1)
    max_embed_inputs: int = Field(default=2048, ge=1)
    embed_split_size: int = Field(default=16, ge=1)
    embed_coalesce_size: int = Field(default=5, ge=1)
    embed_coalesce_window_ms: float = Field(default=3.0, ge=0)
    node_cooldown_s: float = Field(default=2.0, ge=0)
    busy_cooldown_s: float = Field(default=0.5, ge=0)
    background_max_inflight: int = Field(default=2, ge=1)
    background_node_threshold: int = Field(default=2, ge=1)
    background_wait_s: float = Field(default=30.0, ge=0)
    outcome_queue_size: int = Field(default=10_000, ge=1)
    outcome_batch_size: int = Field(default=200, ge=1)
    outcome_flush_ms: float = Field(default=100.0, gt=0)
    static_refresh_s: float = Field(default=5.0, gt=0)
    stale_after_heartbeats: float = Field(default=3.0, gt=0)
    retry_budget: RetryBudgetConfig = RetryBudgetConfig()
    balancer: BalancerConfig = BalancerConfig()
    admission: AdmissionConfig = AdmissionConfig()
    near_cache: NearCacheConfig = NearCacheConfig()
    stall: StallConfig = StallConfig()
    nodes: list[StaticNode] = Field(default_factory=_default_nodes)
    reporter: str = ""
    model_admin_parallel: int = Field(default=4, ge=1)
    model_pull_read_timeout_s: float = Field(default=300.0, gt=0)
    workers: int = Field(default=1, ge=1, le=64)

    @property
    def lookup_budget_ceiling_ms(self) -> float:
        """`lookup_budget_max_ms`, or `lookup_budget_ms` when that is larger and no ceiling was given
        (a budget raised above the default ceiling stays fixed)."""
        if "lookup_budget_max_ms" in self.model_fields_set:
            return self.lookup_budget_max_ms
        return max(self.lookup_budget_max_ms, self.lookup_budget_ms)

    @model_validator(mode="after")
    def _budget_ceiling(self) -> RouterConfig:
        if (
            "lookup_budget_max_ms" in self.model_fields_set
            and self.lookup_budget_max_ms < self.lookup_budget_ms
        ):
            raise ValueError(
                f"lookup_budget_max_ms ({self.lookup_budget_max_ms:g}) is below lookup_budget_ms "
                f"({self.lookup_budget_ms:g}): the ceiling of the lookup budget cannot be under the budget"
            )
        return self
