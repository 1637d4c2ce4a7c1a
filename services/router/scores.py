"""The router's local copy of the node scores, plus what the router learns from its own requests."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from services.router.balancer import Candidate
from services.router.config import BalancerConfig

Clock = Callable[[], float]


def normalize_model(name: str) -> str:
    """Ollama's canonical model name: lower case, default registry/namespace dropped, tag added."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


class Attempt(Enum):
    """How one node attempt ended (mirrors corral.v1.ErrorKind without depending on gRPC)."""

    NONE = 1
    CONNECTION = 2
    TIMEOUT = 3
    TTFT_TIMEOUT = 4
    BUSY = 5
    SERVER = 6
    CLIENT = 7
    STREAM_CUT = 8
    MALFORMED = 9
    CANCELLED = 10


# The registry label with a node's parallel slots (its OLLAMA_NUM_PARALLEL), set by the operator.
SLOTS_LABEL = "num_parallel"
# The registry label with a node's priority: nodes with a higher number take traffic only while
# every node with a lower one that could serve is down or full (GPU boxes first, a CPU box after).
PRIORITY_LABEL = "priority"


def node_priority(labels: dict[str, str]) -> int:
    """A node's priority from its labels: the `priority` label as an integer, 0 when absent or not one."""
    text = labels.get(PRIORITY_LABEL, "").strip()
    try:
        return int(text)
    except ValueError:
        return 0


def _positive_int(text: str | None) -> int | None:
    """The label's value as a positive integer, None when absent or not one."""
    if text is None or not text.strip().isdigit():
        return None
    return int(text) or None


# NOTE: a node that just answered for a model has it loaded (Ollama's default keep_alive is 5 min),
# whatever a not-yet-refreshed score copy says.
_RECENTLY_SERVED_S = 120.0
# NOTE: how long a load this router started decides which models a node holds when no probe has
# seen the node since (health probes every few seconds).
_SWAP_WINDOW_S = 30.0

_NODE_FAULTS = {
    Attempt.CONNECTION,
    Attempt.TIMEOUT,
    Attempt.TTFT_TIMEOUT,
    Attempt.SERVER,
    Attempt.STREAM_CUT,
    Attempt.MALFORMED,
}


@dataclass(slots=True)
class ModelView:
    """One model on one node, as health (or the node itself) reports it."""

    name: str
    installed: bool = True
    loaded: bool = False
    ewma_latency_ms: float = 0.0
    error_rate: float = 0.0
    busy_rate: float = 0.0
    inflight: int = 0
    size_bytes: int = 0
    capabilities: tuple[str, ...] = ()
    expires_at_s: float = 0.0
    size_loaded_bytes: int = 0
    size_vram_bytes: int = 0
    context_length: int = 0


@dataclass(slots=True)
class NodeView:
    """One node as the router sees it.

    Attributes:
        models: Keyed by normalised model name; None means "not known yet" (a static node not read).
        routable: Health says the node may take traffic (not unhealthy, ejected or draining).
        labels: The node's registry labels (from health; empty on the static list).
        probed_at: When health last probed the node (which models it holds), on this process's
            monotonic clock; 0 when not known.
    """

    node_id: str
    address: str
    routable: bool = True
    inflight: int = 0
    error_rate: float = 0.0
    state: str = "unknown"
    models: dict[str, ModelView] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    probed_at: float = 0.0
    priority: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        # NOTE: parsed once here, not on every pick (`ScoreBoard._best_priority`).
        self.priority = node_priority(self.labels)


@dataclass(slots=True)
class _Local:
    """What this router itself knows about a node."""

    inflight: int = 0
    interactive: int = 0
    cooldown_until: float = 0.0
    error_ewma: float = 0.0
    busy_ewma: float = 0.0
    rates_at: float = 0.0
    service_ms: dict[str, float] = field(default_factory=dict)
    missing_models: set[str] = field(default_factory=set)
    served_at: dict[str, float] = field(default_factory=dict)
    # The latest load this router started on the node (a request sent for a model it did not hold).
    swap_model: str = ""
    swap_at: float = -math.inf


class ScoreBoard:
    """The node table the balancers read: health's scores merged with this router's own outcomes.

    Sources, in order of preference: health's WatchScores stream; the static node list of the
    configuration while health has never answered. When the stream goes quiet the last snapshot
    stays in use, marked stale, and the router's own outcomes (cool-downs after connection errors,
    error and busy EWMAs, service times) keep steering traffic.
    """

    def __init__(self, cfg: BalancerConfig | None = None, clock: Clock = time.monotonic) -> None:
        self._cfg = cfg or BalancerConfig()
        self._clock = clock
        self._pins = {normalize_model(m): labels for m, labels in self._cfg.pins.items()}
        self.nodes: dict[str, NodeView] = {}
        self.source = "none"
        self.version = 0
        self.last_message_at = 0.0
        self.stale_after_s = 15.0
        self.connected = False
        self._local: dict[str, _Local] = {}
        # NOTE: the balancer's learned slots of a node (services/router/learning.py), when it
        # learns them; set by the router core.
        self.learned_slots: Callable[[str], int | None] | None = None

    # --- feed -------------------------------------------------------------------------------
    def use_static(self, nodes: Iterable[NodeView]) -> None:
        """Installs (or refreshes) the static node list unless health has answered."""
        if self.source == "health":
            return
        self.nodes = {n.node_id: n for n in nodes}
        self.source = "static"

    def apply_snapshot(self, nodes: Iterable[NodeView], version: int, stale_after_s: float) -> None:
        """Replaces the table with health's snapshot."""
        self.nodes = {n.node_id: n for n in nodes}
        for local in self._local.values():
            local.missing_models.clear()
        self.source = "health"
        self.connected = True
        self.version = version
        self.stale_after_s = stale_after_s
        self.last_message_at = self._clock()

    def apply_update(self, nodes: Iterable[NodeView], removed: Iterable[str], version: int) -> None:
        """Merges health's update."""
        for node in nodes:
            self.nodes[node.node_id] = node
            self.local(node.node_id).missing_models.clear()
        for node_id in removed:
            self.nodes.pop(node_id, None)
        self.version = version
        self.last_message_at = self._clock()

    def heartbeat(self, version: int, stale_after_s: float) -> None:
        """Notes that the stream is alive."""
        self.version = max(self.version, version)
        self.stale_after_s = stale_after_s
        self.last_message_at = self._clock()

    @property
    def stale(self) -> bool:
        """True when health's stream has been quiet too long, or health never answered."""
        if self.source != "health" or not self.connected:
            return True
        return self._clock() - self.last_message_at > self.stale_after_s

    # --- queries ------------------------------------------------------------------------------
    def local(self, node_id: str) -> _Local:
        """This router's own state for a node."""
        state = self._local.get(node_id)
        if state is None:
            state = self._local[node_id] = _Local()
        return state

    def known_models(self) -> set[str] | None:
        """Every model installed somewhere, or None when no node has reported its models yet."""
        found: set[str] | None = None
        for node in self.nodes.values():
            if node.models is None:
                continue
            found = found or set()
            found.update(m for m, v in node.models.items() if v.installed)
        return found

    def model_view(self, node_id: str, model: str) -> ModelView | None:
        """The node's entry for the model, if the node reported one."""
        node = self.nodes.get(node_id)
        if node is None or node.models is None:
            return None
        return node.models.get(model)

    def candidates(
        self,
        model: str,
        *,
        exclude: Iterable[str] = (),
        background: bool = False,
        background_threshold: int = 2,
        include_full: bool = False,
    ) -> list[Candidate]:
        """Nodes that may take a request for the model (the balancer's input).

        Filter: routable per health, not cooling down after a recent failure, the model installed
        (or the node's models not known yet), not marked as lacking the model, not saturated, not
        already tried by this request, and, when the model is pinned (`balancer.pins`), carrying the
        pin's labels. When health's copy is stale and nothing passes, nodes that health last called
        unroutable are tried as well: the router's own outcomes decide. `include_full` keeps
        saturated nodes (the admission queue asks whether any node could serve).

        Then priority: only the nodes of the best (lowest) `priority` label among those that are
        not full remain; when all are full, those of the best priority overall.
        """
        skip = set(exclude)
        now = self._clock()
        args = (model, skip, now, background, background_threshold)
        result = self._filter(*args, trust_health=True, include_full=include_full)
        if not result and self.stale:
            result = self._filter(*args, trust_health=False, include_full=include_full)
        result = self._best_priority(result)
        self._neutral_prior(model, result)
        return result

    @staticmethod
    def _best_priority(candidates: list[Candidate]) -> list[Candidate]:
        """The candidates of the best priority that has a node with room (else the best overall)."""
        ranks = {c.priority for c in candidates}
        if len(ranks) < 2:
            return candidates
        best = min((c.priority for c in candidates if not c.full), default=min(ranks))
        return [c for c in candidates if c.priority == best]

    def _neutral_prior(self, model: str, candidates: list[Candidate]) -> None:
        """Gives nodes this router has no service time for the median of the others'.

        A pessimistic prior (health's default, or a node's old EWMA from before it failed) would
        keep a new or recovered node out of every two-choice comparison under light load, so it
        would never be measured again; the median lets it compete and be measured (Linkerd's P2C
        gives new endpoints a neutral default latency for the same reason).
        """
        sampled = [c.service_ms for c in candidates if model in self.local(c.node_id).service_ms]
        if not sampled or len(sampled) == len(candidates):
            return
        median = statistics.median(sampled)
        for cand in candidates:
            if model not in self.local(cand.node_id).service_ms:
                cand.service_ms = min(cand.service_ms, median)

    def _filter(
        self,
        model: str,
        skip: set[str],
        now: float,
        background: bool,
        background_threshold: int,
        trust_health: bool,
        include_full: bool = False,
    ) -> list[Candidate]:
        out: list[Candidate] = []
        # NOTE: the router's own error and busy rates count only while health's copy is stale;
        # fresh, health's windowed rates (from every router) are the better signal.
        stale = self.stale
        for node in self.nodes.values():
            if node.node_id in skip or (trust_health and not node.routable):
                continue
            local = self.local(node.node_id)
            self._decay(local, now)
            if local.cooldown_until > now or model in local.missing_models:
                continue
            full = local.inflight >= self.inflight_limit(node)
            if full and not include_full:
                continue
            if background and local.interactive >= background_threshold:
                continue
            own_errors, own_busy = (local.error_ewma, local.busy_ewma) if stale else (0.0, 0.0)
            pin = self._pins.get(model)
            if pin and any(node.labels.get(k) != v for k, v in pin.items()):
                continue
            view: ModelView | None = None
            if node.models is not None:
                view = node.models.get(model)
                if view is None or not view.installed:
                    continue
            service_ms = local.service_ms.get(model) or (
                view.ewma_latency_ms if view is not None and view.ewma_latency_ms > 0 else 0.0
            )
            loaded = self._holds(node, local, model, view, now)
            out.append(
                Candidate(
                    node_id=node.node_id,
                    address=node.address,
                    loaded=loaded,
                    displaced_bytes=0 if loaded else self._displaced_bytes(node, local, model, now),
                    local_inflight=local.inflight,
                    reported_inflight=node.inflight,
                    service_ms=service_ms or self._cfg.default_service_ms,
                    error_rate=max(node.error_rate, view.error_rate if view else 0.0, own_errors),
                    busy_rate=max(view.busy_rate if view else 0.0, own_busy),
                    interactive_inflight=local.interactive,
                    size_bytes=view.size_bytes if view is not None else 0,
                    full=full,
                    priority=node.priority,
                )
            )
        return out

    @staticmethod
    def _served_since_view(node: NodeView, local: _Local, model: str, now: float) -> bool:
        """This router had an answer for `model` from the node recently, after health's latest probe
        of the node: the model is loaded there whatever that older view says. A probe after the
        answer wins: the model may have been evicted since (another model loaded in its place)."""
        served = local.served_at.get(model)
        return served is not None and now - served < _RECENTLY_SERVED_S and served >= node.probed_at

    def _displaced_bytes(self, node: NodeView, local: _Local, model: str, now: float) -> int:
        """The sizes of the node's other loaded models (a load of `model` may evict them)."""
        if node.models is None:
            return 0
        return sum(
            view.size_bytes
            for name, view in node.models.items()
            if name != model
            and "embedding" not in view.capabilities
            and self._holds(node, local, name, view, now)
        )

    def _holds(self, node: NodeView, local: _Local, model: str, view: ModelView | None, now: float) -> bool:
        """Whether the node holds `model` now, as far as this router can tell.

        Health's latest probe, unless this router knows better since: an answer for the model after
        that probe (it is loaded), or a load of another model it started after that probe and
        after its last answer for this one (the load may have evicted it; Ollama evicts when its
        memory is full). The model being loaded still counts as not loaded (a request sent next
        waits for that load too) until an answer or a probe shows it. Nodes of the static list (no
        probe time) follow their view as the router refreshes it.
        """
        # NOTE: only against health's probes (probed_at set): a static node list's view is refreshed
        # by the router itself, and there the next refresh decides.
        if 0 < node.probed_at < local.swap_at and now - local.swap_at < _SWAP_WINDOW_S:
            if model != local.swap_model and local.served_at.get(model, -math.inf) < local.swap_at:
                return False
        return (view.loaded if view is not None else True) or self._served_since_view(node, local, model, now)

    def loading(self, node_id: str, model: str) -> None:
        """This router sent a request for `model` to a node that did not hold it: the node loads it
        now, and may evict its other models (see `_holds`)."""
        local = self.local(node_id)
        local.swap_model = model
        local.swap_at = self._clock()

    def pin_of(self, model: str) -> dict[str, str]:
        """The labels a node must carry to serve `model` (`balancer.pins`); empty when not pinned."""
        return dict(self._pins.get(normalize_model(model)) or {})

    def inflight_limit(self, node: NodeView) -> int:
        """Requests from this router the node takes at once: from its parallel slots when they are
        known (its registry label `num_parallel`, else `ect.node_slots`, else the slots the `ect`
        balancer learned once it saw a request wait there), else `max_inflight_per_node`.

        A limit from the slots keeps the surplus in the router's admission queue, where each request
        goes to whichever node frees a slot first, instead of in one node's queue (docs/router.md).
        """
        slots = _positive_int(node.labels.get(SLOTS_LABEL)) or self._cfg.ect.node_slots.get(node.node_id)
        if not slots and self.learned_slots is not None:
            slots = self.learned_slots(node.node_id)
        if not slots:
            return self._cfg.max_inflight_per_node
        return max(1, math.ceil(slots * self._cfg.inflight_per_slot))

    def _decay(self, local: _Local, now: float) -> None:
        """Ages the error and busy EWMAs by time, so a node that recovered is not shunned forever."""
        if local.rates_at and (local.error_ewma or local.busy_ewma):
            factor = 0.5 ** ((now - local.rates_at) / self._cfg.error_half_life_s)
            local.error_ewma *= factor
            local.busy_ewma *= factor
        local.rates_at = now

    # --- this router's own outcomes -------------------------------------------------------------
    def begin(self, node_id: str, interactive: bool) -> None:
        """Counts a request in flight on the node."""
        local = self.local(node_id)
        local.inflight += 1
        if interactive:
            local.interactive += 1

    def end(self, node_id: str, interactive: bool) -> int:
        """Uncounts it; returns the node's in-flight count afterwards."""
        local = self.local(node_id)
        local.inflight = max(0, local.inflight - 1)
        if interactive:
            local.interactive = max(0, local.interactive - 1)
        return local.inflight

    def record(
        self, node_id: str, model: str, outcome: Attempt, latency_ms: float, cooldown_s: float = 0.0
    ) -> None:
        """Learns from one attempt: service-time EWMA, error and busy EWMAs, cool-down."""
        local = self.local(node_id)
        alpha = self._cfg.ewma_alpha
        if outcome is Attempt.NONE:
            previous = local.service_ms.get(model)
            local.service_ms[model] = (
                latency_ms if previous is None else alpha * latency_ms + (1 - alpha) * previous
            )
            local.cooldown_until = 0.0
            local.served_at[model] = self._clock()
        # NOTE: error and busy EWMAs decay with every attempt on the node and with time.
        self._decay(local, self._clock())
        local.error_ewma = (1 - alpha) * local.error_ewma + alpha * (outcome in _NODE_FAULTS)
        local.busy_ewma = (1 - alpha) * local.busy_ewma + alpha * (outcome is Attempt.BUSY)
        if cooldown_s > 0:
            local.cooldown_until = max(local.cooldown_until, self._clock() + cooldown_s)

    def mark_missing(self, node_id: str, model: str) -> None:
        """The node answered "model not found": stop sending the model there until it reports it."""
        self.local(node_id).missing_models.add(model)

    def clear_missing(self, node_id: str) -> None:
        """Forgets the missing-model marks of a node (its model list was refreshed)."""
        self.local(node_id).missing_models.clear()
