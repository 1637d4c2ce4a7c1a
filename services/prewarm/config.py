"""Configuration of the prewarm service."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from services.common.settings import Section, ServiceConfig

# NOTE: Ollama's CPU default for OLLAMA_MAX_LOADED_MODELS (3 x GPUs, 3 on CPU); the health contract
# does not carry a node's capacity, so it comes from here.
DEFAULT_MAX_LOADED_MODELS = 3
# NOTE: the cache's default max_tenant_chars: a longer tenant name is refused by its Store.
MAX_TENANT_CHARS = 256


def _model_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("a model name is required")
    return value


# NOTE: a model name with tag, without surrounding blanks.
ModelName = Annotated[str, Field(min_length=1), AfterValidator(_model_name)]


class WarmModel(Section):
    """A model the prewarm service keeps loaded on the nodes.

    Attributes:
        name: The model name with tag, as the nodes know it (e.g. "llama3.2:1b").
        keep_alive_s: How long a node keeps the model loaded after the warm-up; negative means forever.
        always_warm: Re-warm the model before its keep-alive expires, and whenever a healthy node drops it.
    """

    name: ModelName
    keep_alive_s: float = 1800.0
    always_warm: bool = False


class RequiredModel(Section):
    """A model some nodes must have installed (desired state): prewarm pulls it where it is missing.

    Attributes:
        name: The model name with tag (e.g. "mistral:7b").
        labels: Only nodes carrying every one of these registry labels must have it; empty means all nodes.
    """

    name: ModelName
    labels: dict[str, str] = Field(default_factory=dict)


def _default_models() -> list[WarmModel]:
    return [
        WarmModel(name="llama3.2:1b", keep_alive_s=1800.0, always_warm=True),
        WarmModel(name="nomic-embed-text:v1.5", keep_alive_s=1800.0, always_warm=True),
    ]


class PrewarmConfig(ServiceConfig):
    """Settings of the prewarm service (defaults work on one machine).

    Attributes:
        health_addr: The health service ("host:port"); its score stream says which nodes exist and what
            they hold.
        router_addr: The router, through which cache seeding goes.
        cache_addr: The cache, which runs maintenance.
        models: The models to warm, in priority order (always-warm ones go first when a node is short
            of room).
        max_loaded_models: Per node id, how many models the node holds at once.
        default_max_loaded_models: The capacity of nodes not listed in max_loaded_models.
        schedule_interval_s: Seconds between scheduled runs; 0 disables the schedule.
        rewarm_lead_s: Always-warm models are re-warmed this long before their keep-alive expires.
        run_on_start: Run every step once when the service starts.
        seed_file: The YAML file of common queries per model (relative paths are from the working dir).
        concurrency: Warm-up and seeding requests in flight at once, across all nodes.
        history_size: Finished runs kept for GetStatus.
        warm_timeout_s: Deadline of one warm-up request (a cold load of a big model takes minutes).
        seed_timeout_s: Deadline of one seeding request through the router.
        maintenance_timeout_s: Deadline of the cache maintenance call.
        maintenance_max_age_s: Semantic entries older than this are removed by maintenance, expired or
            not; 0 removes only expired entries.
        maintenance_vacuum: Vacuum and analyse the vector table during maintenance.
        seed_cache_mode: "default" looks the query up first (a hit is skipped), "refresh" always asks
            a node and overwrites the cached answer.
        seed_tenants: Tenants whose caches receive every seeded answer (docs/prewarm.md, "Seeds and
            tenants"). The cache is per tenant: a seed first lands in the tenant of prewarm's own key
            (with auth off, "default", every client's tenant); with auth on, only the tenants listed
            here are served seeded answers. Empty: no copies.
        health_wait_s: How long a run waits for the first score snapshot when health is not there yet.
        required_models: Models nodes must have installed (all nodes, or those with given labels);
            a serving node that lacks one gets it pulled in the background.
        pull_concurrency: Required-model pulls in progress at once across the fleet (the throttle).
        pull_read_timeout_s: A pull fails when its node sends no progress for this long.
        pull_retry_s: A failed pull is tried again after this long; also how long a finished pull
            waits for health's /api/tags probe to list the model.
        leader_election: Elect one acting replica through a PostgreSQL session advisory lock (the
            `postgres` section); the others stand by. Off, this replica acts alone: run exactly one.
        leader_lease_s: A leader that cannot confirm its lock for this long stops acting, and PostgreSQL
            ends its session (idle_session_timeout) so that a standby takes over.
    """

    port: int = 50054
    health_addr: str = "127.0.0.1:50053"
    router_addr: str = "127.0.0.1:50051"
    cache_addr: str = "127.0.0.1:50052"
    models: list[WarmModel] = Field(default_factory=_default_models)
    max_loaded_models: dict[str, int] = Field(default_factory=dict)
    default_max_loaded_models: int = Field(default=DEFAULT_MAX_LOADED_MODELS, ge=1)
    schedule_interval_s: float = Field(default=1800.0, ge=0)
    rewarm_lead_s: float = Field(default=120.0, ge=0)
    run_on_start: bool = True
    seed_file: str = "config/seed-queries.yaml"
    concurrency: int = Field(default=2, ge=1)
    history_size: int = Field(default=20, ge=1)
    warm_timeout_s: float = Field(default=300.0, gt=0)
    seed_timeout_s: float = Field(default=120.0, gt=0)
    maintenance_timeout_s: float = Field(default=600.0, gt=0)
    maintenance_max_age_s: float = Field(default=7 * 24 * 3600.0, ge=0)
    maintenance_vacuum: bool = True
    seed_cache_mode: str = "default"
    seed_tenants: list[str] = Field(default_factory=list)
    health_wait_s: float = Field(default=5.0, ge=0)
    required_models: list[RequiredModel] = Field(default_factory=list)
    pull_concurrency: int = Field(default=1, ge=1)
    pull_read_timeout_s: float = Field(default=300.0, gt=0)
    pull_retry_s: float = Field(default=30.0, gt=0)
    leader_election: bool = False
    leader_lease_s: float = Field(default=10.0, ge=1.0)

    @field_validator("max_loaded_models")
    @classmethod
    def _capacities_positive(cls, value: dict[str, int]) -> dict[str, int]:
        for node_id, capacity in value.items():
            if capacity < 1:
                raise ValueError(f"node {node_id!r}: capacity must be at least 1")
        return value

    @field_validator("seed_tenants")
    @classmethod
    def _tenant_names(cls, value: list[str]) -> list[str]:
        names = [name.strip() for name in value]
        for name in names:
            if not name:
                raise ValueError("a tenant name must not be empty")
            if len(name) > MAX_TENANT_CHARS:
                raise ValueError(f"tenant {name[:40]!r}...: at most {MAX_TENANT_CHARS} characters")
        if len(set(names)) != len(names):
            raise ValueError("the same tenant is listed twice")
        return names

    @field_validator("seed_cache_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ("default", "refresh"):
            raise ValueError("must be 'default' or 'refresh'")
        return value

    @model_validator(mode="after")
    def _unique_models(self) -> PrewarmConfig:
        names = [m.name.lower() for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: the same model is listed twice")
        return self

    def capacity_of(self, node_id: str) -> int:
        """How many models the node holds at once."""
        return self.max_loaded_models.get(node_id, self.default_max_loaded_models)
