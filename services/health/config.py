"""Configuration of the health service."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from services.common.settings import Section, ServiceConfig
from services.health.registry import validate_address, validate_labels, validate_node_id


class NodeSpec(Section):
    """One Ollama node of the fleet.

    Attributes:
        id: Unique node id (letters, digits, ".", "_", "-"; at most 64 characters).
        address: Base URL, http(s)://host:port.
        labels: Free-form labels, e.g. {"gpu": "a10"}.
    """

    id: str
    address: str
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return validate_node_id(value)

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return validate_address(value)

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)


class OutlierConfig(Section):
    """Outlier ejection, shaped after Envoy's outlier detection (defaults cited in outlier.py).

    Attributes:
        consecutive_errors: Node failures in a row (5xx, connection, timeout) that eject a node.
        consecutive_busy: 503 "server busy" answers in a row that eject a node (a busy burst).
        failure_percentage_threshold: Error share (0..1) over the window that ejects a node.
        failure_percentage_min_requests: Outcomes in the window needed before the share is judged.
        base_ejection_time_s: First ejection length; the n-th ejection lasts n times as long.
        max_ejection_time_s: Cap on one ejection's length.
        max_ejection_share: Largest share of the fleet ejected at once (at least one node may be).
    """

    consecutive_errors: int = Field(default=5, ge=1)
    consecutive_busy: int = Field(default=5, ge=1)
    failure_percentage_threshold: float = Field(default=0.85, gt=0, le=1)
    failure_percentage_min_requests: int = Field(default=50, ge=1)
    base_ejection_time_s: float = Field(default=30.0, gt=0)
    max_ejection_time_s: float = Field(default=300.0, gt=0)
    max_ejection_share: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> OutlierConfig:
        if self.max_ejection_time_s < self.base_ejection_time_s:
            raise ValueError("max_ejection_time_s must be >= base_ejection_time_s")
        return self


class ScoreConfig(Section):
    """The score model (the formula is in scoring.py and docs/health.md).

    Attributes:
        ewma_alpha: Weight of a new sample in the latency, TTFT and tokens/s averages (0..1].
        prior_latency_ms: Service time assumed for a (node, model) with no samples yet.
        prior_ttft_ms: TTFT assumed with no samples yet.
        load_base_ms: Fixed cost of loading a model that is installed but not loaded.
        load_ms_per_gb: Loading cost per GB of model size.
        error_penalty_ms: Added per unit of error rate (1.0 = every attempt fails).
        busy_penalty_ms: Added per unit of busy (503) rate.
        window_size: Outcomes kept per node and per model for the error and busy rates.
        window_s: Outcomes older than this leave the window.
        degraded_error_rate: Error rate at or above which a node is DEGRADED.
        degraded_busy_rate: Busy rate at or above which a node is DEGRADED.
        min_window_samples: Outcomes needed before a rate can mark a node DEGRADED.
        inflight_ttl_s: A reporter's in-flight count is forgotten after this long without a report.
    """

    ewma_alpha: float = Field(default=0.3, gt=0, le=1)
    prior_latency_ms: float = Field(default=2_000.0, gt=0)
    prior_ttft_ms: float = Field(default=500.0, gt=0)
    load_base_ms: float = Field(default=300.0, ge=0)
    load_ms_per_gb: float = Field(default=2_000.0, ge=0)
    error_penalty_ms: float = Field(default=60_000.0, ge=0)
    busy_penalty_ms: float = Field(default=10_000.0, ge=0)
    window_size: int = Field(default=50, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    degraded_error_rate: float = Field(default=0.2, gt=0, le=1)
    degraded_busy_rate: float = Field(default=0.2, gt=0, le=1)
    min_window_samples: int = Field(default=5, ge=1)
    inflight_ttl_s: float = Field(default=60.0, gt=0)


def _default_nodes() -> list[NodeSpec]:
    return [NodeSpec(id=f"node-{i}", address=f"http://127.0.0.1:{11433 + i}") for i in range(1, 5)]


class HealthConfig(ServiceConfig):
    """Settings of the health service (defaults work on one machine: four simulator nodes).

    Attributes:
        probe_interval_s: Time between two probes of one node (the original cluster used 30 s).
        probe_timeout_s: Deadline of one probe; a node that hangs fails the probe at this deadline.
        tags_every_n_probes: /api/tags (installed models) is fetched on every n-th probe.
        unhealthy_after_probe_failures: Failed probes in a row that mark a node UNHEALTHY.
        heartbeat_interval_s: WatchScores sends a heartbeat after this long without a message.
        min_update_interval_s: Changes are coalesced into at most one update per this interval.
        subscriber_queue_size: Messages buffered per subscriber; on overflow it gets a fresh snapshot.
        nodes: The fleet at start-up (more can be added with AddNode); with shared_registry, only the
            seed of an empty registry.
        shared_registry: Keep the fleet registry in PostgreSQL (the `postgres` section), shared by every
            replica and followed with LISTEN/NOTIFY; off, each replica keeps its own in memory.
        share_outcomes: With shared_registry: publish the outcomes this replica's routers report and
            fold in the other replicas' (PostgreSQL NOTIFY, services/health/shared_outcomes.py), so
            every replica's error rates, ejections and in-flight counts cover every router.
        share_interval_s: Longest wait of an outcome before it is published (a batch per interval).
        registry_timeout_s: Bound of one registry connection or write.
        registry_retry_s: Pause between reconnections while PostgreSQL is down.
        outlier: Outlier ejection settings.
        score: Score model settings.
    """

    port: int = 50053
    probe_interval_s: float = Field(default=5.0, gt=0)
    probe_timeout_s: float = Field(default=1.0, gt=0)
    tags_every_n_probes: int = Field(default=6, ge=1)
    unhealthy_after_probe_failures: int = Field(default=1, ge=1)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    min_update_interval_s: float = Field(default=0.1, ge=0)
    subscriber_queue_size: int = Field(default=64, ge=1)
    nodes: list[NodeSpec] = Field(default_factory=_default_nodes)
    shared_registry: bool = False
    share_outcomes: bool = True
    share_interval_s: float = Field(default=0.1, gt=0, le=5)
    registry_timeout_s: float = Field(default=2.0, gt=0)
    registry_retry_s: float = Field(default=1.0, gt=0)
    outlier: OutlierConfig = OutlierConfig()
    score: ScoreConfig = ScoreConfig()

    @model_validator(mode="after")
    def _check_nodes(self) -> HealthConfig:
        seen_ids: set[str] = set()
        seen_addresses: dict[str, str] = {}
        for index, node in enumerate(self.nodes):
            if node.id in seen_ids:
                raise ValueError(f"nodes[{index}].id: duplicate node id {node.id!r}")
            if node.address in seen_addresses:
                other = seen_addresses[node.address]
                raise ValueError(f"nodes[{index}].address: {node.address} is already node {other!r}")
            seen_ids.add(node.id)
            seen_addresses[node.address] = node.id
        return self
