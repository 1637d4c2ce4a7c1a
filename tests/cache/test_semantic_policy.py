"""The operator's semantic policy: which requests the semantic tier may answer, and the reason each
lookup reports (pure rules, configuration, and gRPC against the session's real Redis and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c

from devstack.redis import RedisServer
from services.cache import keys
from services.cache.collector import CacheCollector
from services.cache.config import CacheConfig, SemanticPolicyConfig
from services.cache.embedders import HashingEmbedder
from services.cache.server import RunningCache, start_in_process
from services.common.config import ConfigError, load_config
from services.router.cache_client import CacheClient
from tests.cache.helpers import MODEL, gen, lookup, make_config, store
from tests.helpers.procs import configuration_error_of

Stub = cache_service_pb2_grpc.CacheServiceStub
MISTRAL = "mistral:7b"
SEMANTIC = c.CachePolicy(mode=c.CACHE_MODE_SEMANTIC)
EXACT = c.CachePolicy(mode=c.CACHE_MODE_EXACT)
STORED = "What is the capital city of France?"
PARAPHRASE = "what is the capital of France"
# NOTE: the tenants the policy under test names; each test adds a suffix of its own to the others.
POLICY = {
    "default": "deterministic",
    "models": {MODEL: {"max_temperature": 0.3}, MISTRAL: "never"},
    "tenants": {"careful": "never", "relaxed": "always"},
    "tenant_models": {"careful": {MISTRAL: "always"}},
}


# -- the rule of one request (pure) --------------------------------------------------------------


def _skip(rule: keys.SemanticRule, temperature: float | None, mode: int = c.CACHE_MODE_UNSPECIFIED) -> str:
    view = keys.derive("t", gen("How do I reset my router?", temperature=temperature))
    reason, _ = keys.semantic_skip(mode, view, rule, semantic_enabled=True)
    return reason


@pytest.mark.parametrize(
    ("rule", "temperature", "reason"),
    [
        (keys.SemanticRule("never"), 0.0, "semantic skipped: policy never (default)"),
        (keys.SemanticRule("deterministic"), 0.0, ""),
        (
            keys.SemanticRule("deterministic"),
            0.01,
            "semantic skipped: temperature 0.01, policy deterministic (default)",
        ),
        (
            keys.SemanticRule("deterministic"),
            None,
            "semantic skipped: temperature unset (0.8), policy deterministic (default)",
        ),
        (keys.SemanticRule("always"), None, ""),
        (keys.SemanticRule("always"), 2.0, ""),
        # NOTE: 0.3 arrives as the float32 0.30000001...; it is the boundary the operator wrote.
        (keys.SemanticRule("max_temperature", 0.3, "model m"), 0.3, ""),
        (keys.SemanticRule("max_temperature", 0.3, "model m"), 0.0, ""),
        (
            keys.SemanticRule("max_temperature", 0.3, "model m"),
            0.31,
            "semantic skipped: temperature 0.31 above policy max 0.3 (model m)",
        ),
        (
            keys.SemanticRule("max_temperature", 0.3, "model m"),
            None,
            "semantic skipped: temperature unset (0.8) above policy max 0.3 (model m)",
        ),
        # NOTE: an unset temperature counts as Ollama's default 0.8, which a ceiling of 0.8 admits.
        (keys.SemanticRule("max_temperature", 0.8), None, ""),
    ],
)
def test_each_policy_decides_at_its_boundary(
    rule: keys.SemanticRule, temperature: float | None, reason: str
) -> None:
    assert _skip(rule, temperature) == reason


def test_client_modes_against_the_policy() -> None:
    deterministic = keys.SemanticRule("deterministic")
    # A client's explicit semantic mode opts in whatever the temperature...
    assert _skip(deterministic, 0.8, c.CACHE_MODE_SEMANTIC) == ""
    assert _skip(keys.SemanticRule("max_temperature", 0.3), None, c.CACHE_MODE_SEMANTIC) == ""
    # ...but never where the operator said never.
    never = keys.SemanticRule("never", scope="tenant acme")
    assert _skip(never, 0.0, c.CACHE_MODE_SEMANTIC) == "semantic skipped: policy never (tenant acme)"
    assert (
        _skip(keys.SemanticRule("always"), 0.0, c.CACHE_MODE_EXACT)
        == "semantic skipped: exact mode requested"
    )


def test_plan_follows_the_rule_and_reports_the_skip() -> None:
    view = keys.derive("t", gen("How do I reset my router?", temperature=0.5))

    def plan(rule: keys.SemanticRule, mode: int = c.CACHE_MODE_UNSPECIFIED) -> keys.TierPlan:
        policy = c.CachePolicy(mode=mode)  # type: ignore[arg-type]
        return keys.plan(policy, view, default_ttl_s=60, max_ttl_s=3600, semantic_enabled=True, rule=rule)

    allowed = plan(keys.SemanticRule("max_temperature", 0.5))
    assert allowed.lookup_semantic and allowed.store_semantic and allowed.skip_reason == ""
    refused = plan(keys.SemanticRule("max_temperature", 0.4))
    assert refused.lookup_exact and not refused.lookup_semantic and not refused.store_semantic
    assert refused.skip_category == "temperature"
    refresh = plan(keys.SemanticRule("always"), c.CACHE_MODE_REFRESH)
    assert refresh.store_semantic and not refresh.looks_up and refresh.skip_reason == "refresh requested"
    bypass = plan(keys.SemanticRule("always"), c.CACHE_MODE_BYPASS)
    assert (bypass.skip_reason, bypass.skip_category) == ("bypass requested", "mode")
    tools = keys.derive(
        "t",
        c.ChatSpec(
            model=MODEL,
            messages=[c.ChatMessage(role="user", content="weather in Paris?")],
            tools=[c.Tool(type="function", function=c.ToolFunction(name="weather"))],
        ),
    )
    tool_plan = keys.plan(
        c.CachePolicy(),
        tools,
        default_ttl_s=60,
        max_ttl_s=3600,
        semantic_enabled=True,
        rule=keys.SemanticRule("always"),
    )
    assert (tool_plan.skip_reason, tool_plan.skip_category) == (
        "semantic skipped: tools offered",
        "no_question",
    )


# -- configuration -------------------------------------------------------------------------------


def test_the_most_specific_setting_wins() -> None:
    policy = SemanticPolicyConfig.model_validate(POLICY)
    assert policy.resolve("anyone", "qwen2:latest") == keys.SemanticRule("deterministic", scope="default")
    assert policy.resolve("anyone", MODEL) == keys.SemanticRule("max_temperature", 0.3, f"model {MODEL}")
    # A tenant's setting beats the model's...
    assert policy.resolve("careful", MODEL).kind == "never"
    assert policy.resolve("relaxed", MISTRAL).kind == "always"
    # ...and a tenant's setting for one model beats both.
    chosen = policy.resolve("careful", MISTRAL)
    assert chosen.kind == "always" and chosen.scope == f"tenant careful, model {MISTRAL}"
    assert policy.resolve("anyone", MISTRAL).kind == "never"


def test_model_names_are_normalised_and_the_default_is_deterministic() -> None:
    assert CacheConfig().semantic_policy.resolve("t", MODEL).kind == "deterministic"
    policy = SemanticPolicyConfig.model_validate({"models": {"mistral": "always"}, "tenants": {"": "never"}})
    assert policy.resolve("t", "mistral:latest").scope == "model mistral:latest"
    assert policy.resolve(keys.DEFAULT_TENANT, "mistral:latest").kind == "never"
    # A reason travels in an HTTP header: a configured name shows as ASCII.
    named = SemanticPolicyConfig.model_validate({"tenant_models": {"zürich": {"mistral": "never"}}})
    assert named.resolve("zürich", "mistral:latest").scope == "tenant z\\xfcrich, model mistral:latest"


def test_environment_overrides_set_the_policy() -> None:
    env = {
        "CORRAL_CACHE__SEMANTIC_POLICY__DEFAULT": "never",
        "CORRAL_CACHE__SEMANTIC_POLICY__MODELS": '{"llama3.2:1b": {max_temperature: 0.3}}',
    }
    policy = load_config(env=env).cache.semantic_policy
    assert policy.default.kind == "never"
    assert policy.resolve("t", MODEL) == keys.SemanticRule("max_temperature", 0.3, f"model {MODEL}")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEFAULT", "sometimes", "'cache.semantic_policy.default': Value error, unknown policy 'sometimes'"),
        (
            "MODELS",
            "{llama3.2: {max_temperature: -0.1}}",
            "'cache.semantic_policy.models': Value error, models['llama3.2']: max_temperature must be "
            "a finite number >= 0, got -0.1",
        ),
        (
            "TENANT_MODELS",
            "{acme: {llama3.2: often}}",
            "'cache.semantic_policy.tenant_models': Value error, tenant_models['acme']['llama3.2']: "
            "unknown policy 'often'",
        ),
        ("TENANTS", "{acme: {max_temp: 1}}", "tenants['acme']: a policy mapping has exactly one key"),
    ],
)
def test_bad_policies_are_refused_naming_the_key(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={f"CORRAL_CACHE__SEMANTIC_POLICY__{name}": value})
    assert message in str(caught.value)


def test_the_service_refuses_a_bad_policy_at_start_up() -> None:
    line = configuration_error_of("cache", {"CORRAL_CACHE__SEMANTIC_POLICY__DEFAULT": "sometimes"})
    assert "'cache.semantic_policy.default'" in line and "unknown policy 'sometimes'" in line
    line = configuration_error_of(
        "cache", {"CORRAL_CACHE__SEMANTIC_POLICY__MODELS": "{mistral: {max_temperature: -1}}"}
    )
    assert "models['mistral']: max_temperature must be a finite number >= 0, got -1" in line


# -- through the service -------------------------------------------------------------------------


@pytest.fixture
async def stubs(
    redis_server: RedisServer, migrated_dsn: str
) -> AsyncIterator[tuple[Stub, Stub, RunningCache]]:
    """(a cache with POLICY, a cache whose policy is always, the first server) over the same stores.

    Entries are stored through the second, so that the first's refusals are refusals of entries
    that exist (the second serves them).
    """
    strict = await start_in_process(
        make_config(semantic_policy=POLICY), redis_server.url, migrated_dsn, embedder=HashingEmbedder(384)
    )
    open_ = await start_in_process(
        make_config(semantic_policy={"default": "always"}),
        redis_server.url,
        migrated_dsn,
        embedder=HashingEmbedder(384),
    )
    try:
        async with (
            grpc.aio.insecure_channel(strict.address) as one,
            grpc.aio.insecure_channel(open_.address) as two,
        ):
            yield Stub(one), Stub(two), strict
    finally:
        await strict.stop()
        await open_.stop()


def _tenant(name: str = "t") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


async def _stored(stub: Stub, tenant: str, spec: c.GenerateSpec) -> None:
    done = await stub.Store(store(tenant, spec, b"Paris"))
    assert done.stored_semantic, "the permissive cache stores the semantic entry"


async def test_max_temperature_serves_up_to_its_ceiling(stubs: tuple[Stub, Stub, RunningCache]) -> None:
    strict, permissive, _ = stubs
    tenant = _tenant()
    for temperature in (0.3, 0.31):
        await _stored(permissive, tenant, gen(STORED, temperature=temperature))

    hit = await strict.Lookup(lookup(tenant, gen(PARAPHRASE, temperature=0.3)))
    assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT and hit.entry.payload == b"Paris"
    assert hit.reason == f"exact miss; semantic hit: similarity {hit.similarity:.2f}"

    above = await strict.Lookup(lookup(tenant, gen(PARAPHRASE, temperature=0.31)))
    assert above.outcome == c.CACHE_OUTCOME_MISS
    assert above.reason == (
        f"exact miss; semantic skipped: temperature 0.31 above policy max 0.3 (model {MODEL})"
    )
    # The entry is there: the permissive cache serves it, and so does a client's semantic mode.
    assert (await permissive.Lookup(lookup(tenant, gen(PARAPHRASE, temperature=0.31)))).hit
    opted_in = await strict.Lookup(lookup(tenant, gen(PARAPHRASE, temperature=0.31), policy=SEMANTIC))
    assert opted_in.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT

    exact = await strict.Lookup(lookup(tenant, gen(STORED, temperature=0.31)))
    assert exact.outcome == c.CACHE_OUTCOME_EXACT_HIT and exact.reason == "exact hit"


async def test_deterministic_default_and_never(stubs: tuple[Stub, Stub, RunningCache]) -> None:
    strict, permissive, _ = stubs
    tenant = _tenant()
    other = "qwen2:0.5b"
    for temperature in (0.0, None):
        await _stored(permissive, tenant, gen(STORED, temperature=temperature, model=other))
        await _stored(permissive, tenant, gen(STORED, temperature=temperature, model=MISTRAL))

    # The default (deterministic) for a model no setting names: temperature 0 only.
    assert (await strict.Lookup(lookup(tenant, gen(PARAPHRASE, model=other)))).hit
    unset = await strict.Lookup(lookup(tenant, gen(PARAPHRASE, temperature=None, model=other)))
    assert not unset.hit and unset.reason == (
        "exact miss; semantic skipped: temperature unset (0.8), policy deterministic (default)"
    )
    # never for a model: not even temperature 0, not even a client's semantic mode.
    for policy in (c.CachePolicy(), SEMANTIC):
        refused = await strict.Lookup(lookup(tenant, gen(PARAPHRASE, model=MISTRAL), policy=policy))
        assert not refused.hit
        assert refused.reason == f"exact miss; semantic skipped: policy never (model {MISTRAL})"
    assert (await permissive.Lookup(lookup(tenant, gen(PARAPHRASE, model=MISTRAL)))).hit


async def test_tenant_settings_override_the_model_settings(stubs: tuple[Stub, Stub, RunningCache]) -> None:
    strict, permissive, _ = stubs
    for name in ("careful", "relaxed"):
        for model in (MODEL, MISTRAL):
            await _stored(permissive, name, gen(STORED, temperature=0.9, model=model))

    # relaxed: always, over the model's ceiling of 0.3 and mistral's never.
    for model in (MODEL, MISTRAL):
        hit = await strict.Lookup(lookup("relaxed", gen(PARAPHRASE, temperature=0.9, model=model)))
        assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT, model
    # careful: never for llama3.2 (over the model's ceiling), but always for mistral (tenant and model).
    refused = await strict.Lookup(lookup("careful", gen(PARAPHRASE, temperature=0.0, model=MODEL)))
    assert not refused.hit and refused.reason == "exact miss; semantic skipped: policy never (tenant careful)"
    hit = await strict.Lookup(lookup("careful", gen(PARAPHRASE, temperature=0.9, model=MISTRAL)))
    assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT


async def test_the_reasons_of_misses_and_skipped_lookups(stubs: tuple[Stub, Stub, RunningCache]) -> None:
    strict, permissive, _ = stubs
    tenant = _tenant()
    empty = await strict.Lookup(lookup(tenant, gen(PARAPHRASE)))
    assert empty.reason == "exact miss; semantic miss: no stored entry"

    await _stored(permissive, tenant, gen("How do I enable TLS on nginx?"))
    guarded = await strict.Lookup(lookup(tenant, gen("How do I disable TLS on nginx?")))
    assert not guarded.hit and guarded.reason == "exact miss; semantic refused by guard: antonym"

    far = await strict.Lookup(lookup(tenant, gen("Best soil for growing tomatoes at home")))
    assert not far.hit and far.reason.startswith("exact miss; semantic miss: best similarity 0.")
    assert far.reason.endswith(" below 0.80")

    exact_only = await strict.Lookup(lookup(tenant, gen(PARAPHRASE), policy=EXACT))
    assert exact_only.reason == "exact miss; semantic skipped: exact mode requested"
    bypass = await strict.Lookup(
        lookup(tenant, gen(PARAPHRASE), policy=c.CachePolicy(mode=c.CACHE_MODE_BYPASS))
    )
    assert bypass.outcome == c.CACHE_OUTCOME_BYPASS and bypass.reason == "bypass requested"
    chat = c.ChatSpec(model=MODEL, messages=[c.ChatMessage(role="assistant", content="Hello")])
    no_question = await strict.Lookup(lookup(tenant, chat))
    assert no_question.reason == "exact miss; semantic skipped: last message is not a user question"
    for reply in (empty, guarded, far, exact_only, bypass, no_question):
        assert reply.reason.isascii() and reply.reason.isprintable()


async def test_skips_are_counted_by_category(stubs: tuple[Stub, Stub, RunningCache]) -> None:
    strict, _, server = stubs
    tenant = _tenant()
    before = (await strict.Stats(pb.StatsRequest())).semantic_skips
    await strict.Lookup(lookup(tenant, gen(PARAPHRASE, temperature=0.5)))
    await strict.Lookup(lookup(tenant, gen(PARAPHRASE, temperature=0.6)))
    await strict.Lookup(lookup(tenant, gen(PARAPHRASE, model=MISTRAL)))
    await strict.Lookup(lookup(tenant, gen(PARAPHRASE), policy=EXACT))
    await strict.Lookup(lookup(tenant, gen(PARAPHRASE)))  # allowed: not a skip
    after = (await strict.Stats(pb.StatsRequest())).semantic_skips
    assert after["temperature"] - before.get("temperature", 0) == 2
    assert after["policy_never"] - before.get("policy_never", 0) == 1
    assert after["mode"] - before.get("mode", 0) == 1
    family = next(
        m for m in CacheCollector(server.engine).collect() if m.name == "corral_cache_semantic_skips"
    )
    exported = {sample.labels["reason"]: sample.value for sample in family.samples}
    assert set(exported) == set(keys.SKIP_CATEGORIES)
    assert (
        exported["temperature"] == after["temperature"] and exported["policy_never"] == after["policy_never"]
    )


async def test_the_router_client_learns_the_policy_from_lookups(
    stubs: tuple[Stub, Stub, RunningCache],
) -> None:
    """The router picks its longer lookup budget for requests the cache's policy lets the semantic
    tier answer; it learns the policy of a tenant and model from the cache's replies."""
    _, _, server = stubs
    tenant = _tenant()
    default = c.CachePolicy()
    async with grpc.aio.insecure_channel(server.address) as channel:
        client = CacheClient(channel, lookup_budget_ms=2000, queue_size=10)
        assert client.semantic_may_answer(tenant, gen(PARAPHRASE, temperature=0.3), default) is None
        await client.lookup(tenant, gen(PARAPHRASE, temperature=0.9), default)
        assert client.semantic_may_answer(tenant, gen(PARAPHRASE, temperature=0.3), default) is True
        assert client.semantic_may_answer(tenant, gen(PARAPHRASE, temperature=0.31), default) is False
        assert client.semantic_may_answer(tenant, gen(PARAPHRASE, temperature=None), default) is False
        assert client.semantic_may_answer(tenant, gen(PARAPHRASE, temperature=0.9), SEMANTIC) is True
        assert client.semantic_may_answer(tenant, gen(PARAPHRASE, temperature=0.0), EXACT) is False

        await client.lookup(tenant, gen(PARAPHRASE, model=MISTRAL), default)
        assert client.semantic_may_answer(tenant, gen(PARAPHRASE, model=MISTRAL), default) is False
        assert client.semantic_may_answer(tenant, gen(PARAPHRASE, model=MISTRAL), SEMANTIC) is False
        await client.lookup("relaxed", gen(PARAPHRASE, model=MISTRAL), default)
        assert client.semantic_may_answer(
            "relaxed", gen(PARAPHRASE, temperature=None, model=MISTRAL), default
        )
