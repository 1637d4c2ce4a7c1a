"""Warm-up planning: which (node, model) pairs to load, refresh or skip; pure Python, no I/O."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from services.prewarm.config import WarmModel

# NOTE: states in which a node takes traffic, so warming it is worth it (health's NodeState names).
SERVING_STATES = frozenset({"HEALTHY", "DEGRADED"})


def normalize_model_name(name: str) -> str:
    """Ollama's canonical short form: lower case, default registry and namespace dropped, tag added."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


@dataclass(frozen=True, slots=True)
class ModelView:
    """One installed model of a node, as health last saw it.

    Attributes:
        name: The model name as the node reports it.
        loaded: True when loaded in memory.
        expires_at_s: Wall-clock second at which the loaded model expires (inf when never, None unknown).
        capabilities: e.g. ("completion", "tools") or ("embedding",).
    """

    name: str
    loaded: bool = False
    expires_at_s: float | None = None
    capabilities: tuple[str, ...] = ()

    @property
    def is_embedding(self) -> bool:
        """True for embedding-only models, which are loaded through /api/embed."""
        return "embedding" in self.capabilities and "completion" not in self.capabilities


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as health last saw it.

    Attributes:
        node_id: The node id.
        address: Base URL of the node's Ollama API.
        state: Health's NodeState name without prefix ("HEALTHY", "UNHEALTHY", ...).
        healthy: True when the last probe succeeded.
        ejected: True while ejected by outlier detection.
        draining: True while drained by an operator.
        models: Installed models by normalised name.
        labels: The node's registry labels.
    """

    node_id: str
    address: str
    state: str = "HEALTHY"
    healthy: bool = True
    ejected: bool = False
    draining: bool = False
    models: Mapping[str, ModelView] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def serving(self) -> bool:
        """True when the node takes traffic, so warming it is useful."""
        return self.healthy and not self.ejected and not self.draining and self.state in SERVING_STATES

    @property
    def loaded_count(self) -> int:
        """Models currently loaded on the node, configured or not."""
        return sum(1 for m in self.models.values() if m.loaded)

    def loaded_keys(self) -> frozenset[str]:
        """Normalised names of the loaded models."""
        return frozenset(key for key, m in self.models.items() if m.loaded)


class WarmAction(Enum):
    """What a plan does with one (node, model) pair."""

    LOAD = "load"
    REFRESH = "refresh"
    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class WarmItem:
    """One (node, model) pair of a plan.

    Attributes:
        node_id: The node.
        address: The node's base URL (empty when unknown).
        model: The model name as configured.
        action: Load it, refresh its keep-alive, skip it, or report a failure without trying.
        reason: Why, in a few words (shown in the progress stream).
        keep_alive_s: Keep-alive to send; negative means forever.
        embedding: True when the model is loaded through /api/embed.
    """

    node_id: str
    address: str
    model: str
    action: WarmAction
    reason: str
    keep_alive_s: float = 0.0
    embedding: bool = False

    @property
    def needs_request(self) -> bool:
        """True when the item sends a request to the node."""
        return self.action in (WarmAction.LOAD, WarmAction.REFRESH)


ExpiryLedger = Mapping[tuple[str, str], float]
"""Expiry (wall-clock s) the service expects after its own warm-ups, by (node id, normalised model)."""


def _effective_expiry(view: ModelView, node_id: str, key: str, ledger: ExpiryLedger) -> float | None:
    known = [t for t in (view.expires_at_s, ledger.get((node_id, key))) if t is not None]
    return max(known) if known else None


def _ordered(models: Sequence[WarmModel]) -> list[WarmModel]:
    # NOTE: always-warm models first so that they get a node's free slots when there are too few.
    return [m for m in models if m.always_warm] + [m for m in models if not m.always_warm]


def plan_warm(
    nodes: Iterable[NodeView],
    models: Sequence[WarmModel],
    capacity_of: Callable[[str], int],
    now_s: float,
    *,
    rewarm_lead_s: float,
    only_nodes: Iterable[str] = (),
    ledger: ExpiryLedger | None = None,
) -> list[WarmItem]:
    """Plans a warm-up.

    Rules: a node that does not take traffic is skipped; a model not installed on a node is skipped;
    a loaded model is skipped unless it is always-warm and its keep-alive ends within rewarm_lead_s
    (then it is refreshed, which takes no new slot); a model that is not loaded is loaded while the node
    has free slots (capacity minus every model loaded, ours or not), otherwise skipped, so a warm-up
    never makes a node evict anything.

    Args:
        nodes: The nodes as health sees them.
        models: The models to warm, in priority order.
        capacity_of: How many models a node holds at once.
        now_s: The current wall-clock time in seconds.
        rewarm_lead_s: How long before expiry an always-warm model is refreshed.
        only_nodes: Restrict to these node ids (empty: every node); an unknown id is a FAIL item.
        ledger: Expiries the service expects from its own recent warm-ups (health's view may lag).

    Returns:
        The items, grouped by node (sorted by id), in model priority order within a node.
    """
    ledger = ledger or {}
    by_id = {n.node_id: n for n in nodes}
    wanted = sorted(set(only_nodes)) if only_nodes else sorted(by_id)
    ordered = _ordered(models)
    items: list[WarmItem] = []
    for node_id in wanted:
        node = by_id.get(node_id)
        if node is None:
            items.extend(
                WarmItem(node_id, "", m.name, WarmAction.FAIL, "node is not registered in health")
                for m in ordered
            )
            continue
        if not node.serving:
            reason = f"node not serving ({_describe_state(node)})"
            items.extend(WarmItem(node_id, node.address, m.name, WarmAction.SKIP, reason) for m in ordered)
            continue
        capacity = capacity_of(node_id)
        free = capacity - node.loaded_count
        for model in ordered:
            key = normalize_model_name(model.name)
            view = node.models.get(key)
            base = WarmItem(node_id, node.address, model.name, WarmAction.SKIP, "", model.keep_alive_s)
            if view is None:
                items.append(_with(base, WarmAction.SKIP, "not installed on the node"))
                continue
            embedding = view.is_embedding
            if view.loaded:
                expiry = _effective_expiry(view, node_id, key, ledger)
                if model.always_warm and expiry is not None and expiry - now_s < rewarm_lead_s:
                    items.append(_with(base, WarmAction.REFRESH, "keep-alive ends soon", embedding))
                else:
                    items.append(_with(base, WarmAction.SKIP, "already loaded", embedding))
                continue
            if free <= 0:
                reason = f"no free model slot (capacity {capacity}, {node.loaded_count} loaded before)"
                items.append(_with(base, WarmAction.SKIP, reason, embedding))
                continue
            free -= 1
            items.append(_with(base, WarmAction.LOAD, "not loaded", embedding))
    return items


def _with(base: WarmItem, action: WarmAction, reason: str, embedding: bool = False) -> WarmItem:
    return WarmItem(
        base.node_id, base.address, base.model, action, reason, base.keep_alive_s, embedding=embedding
    )


def _describe_state(node: NodeView) -> str:
    if node.state == "UNSPECIFIED":
        return "not probed yet"
    flags = [node.state.lower()]
    if node.ejected:
        flags.append("ejected")
    if node.draining:
        flags.append("draining")
    if not node.healthy and node.state != "UNHEALTHY":
        flags.append("last probe failed")
    return ", ".join(flags)


def next_rewarm_at(
    nodes: Iterable[NodeView],
    models: Sequence[WarmModel],
    *,
    rewarm_lead_s: float,
    ledger: ExpiryLedger | None = None,
) -> tuple[float, frozenset[str]] | None:
    """When the next always-warm refresh is due, and on which nodes.

    Returns:
        (wall-clock second, node ids due at that second), or None when nothing expires.
    """
    ledger = ledger or {}
    keys = {normalize_model_name(m.name) for m in models if m.always_warm}
    due: dict[str, float] = {}
    for node in nodes:
        if not node.serving:
            continue
        for key in keys:
            view = node.models.get(key)
            if view is None or not view.loaded:
                continue
            expiry = _effective_expiry(view, node.node_id, key, ledger)
            if expiry is None or math.isinf(expiry):
                continue
            at = expiry - rewarm_lead_s
            due[node.node_id] = min(at, due.get(node.node_id, math.inf))
    if not due:
        return None
    first = min(due.values())
    return first, frozenset(n for n, at in due.items() if at <= first + 1.0)


def nodes_needing_warmup(
    before: Mapping[str, NodeView] | None, after: Mapping[str, NodeView], models: Sequence[WarmModel]
) -> frozenset[str]:
    """Nodes that just joined or came back, or dropped an always-warm model, between two views.

    A node counts as back when it serves now and did not before (absent, not yet probed, unhealthy,
    ejected or drained). A node that serves in both views but has lost an always-warm model was
    probably restarted between two probes. The first view (before is None) triggers nothing: the
    start-up run covers it.
    """
    if before is None:
        return frozenset()
    keys = {normalize_model_name(m.name) for m in models if m.always_warm}
    found: set[str] = set()
    for node_id, node in after.items():
        if not node.serving:
            continue
        previous = before.get(node_id)
        if previous is None or not previous.serving:
            found.add(node_id)
            continue
        dropped = (previous.loaded_keys() - node.loaded_keys()) & keys
        if dropped:
            found.add(node_id)
    return frozenset(found)
