"""Seeds that reach tenants: with auth on, seeded answers are served to the listed tenants only.

A whole Corral with authentication on every service: prewarm seeds through the router with its
service key (tenant "seed"), then stores each answer for `prewarm.seed_tenants` through the cache.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from corral.v1 import common_pb2, router_service_pb2, router_service_pb2_grpc
from corral.v1 import prewarm_service_pb2 as pw
from corral.v1 import prewarm_service_pb2_grpc as pw_grpc

from services.common.channels import PeerSecurity, make_channel
from services.prewarm.config import PrewarmConfig
from tests.chaos.harness import Corral, start_corral
from tests.router.stack import MODEL
from tests.security.helpers import ADMIN_KEY, SERVICE_KEY, TENANT_A_KEY, TENANT_B_KEY, keys_env

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]

PROMPT = "How do I rotate the API keys of a running cluster?"
CHAT = "Which port does the cache listen on?"
AUTH_ENV = {
    "CORRAL_AUTH__ENABLED": "true",
    "CORRAL_AUTH__KEYS": keys_env(),
    "CORRAL_AUTH__SERVICE_KEY": SERVICE_KEY,
}
# NOTE: generous budgets leave DEGRADED to a cache that fails, so a MISS can be required.
LOOKUP_BUDGETS = {
    "CORRAL_ROUTER__LOOKUP_BUDGET_MS": "2000",
    "CORRAL_ROUTER__SEMANTIC_LOOKUP_BUDGET_MS": "5000",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def corral(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Corral]:
    seeds = tmp_path_factory.mktemp("seeds") / "seeds.yaml"
    seeds.write_text(
        f"options: {{temperature: 0}}\nmodels:\n  {MODEL}:\n    - {PROMPT}\n"
        f'    - messages: [{{role: user, content: "{CHAT}"}}]\n'
    )
    env = {name: dict(AUTH_ENV) for name in ("health", "cache", "router", "prewarm")}
    env["router"].update(LOOKUP_BUDGETS)
    env["prewarm"].update(
        {
            "CORRAL_PREWARM__SEED_FILE": str(Path(seeds)),
            "CORRAL_PREWARM__SEED_TENANTS": json.dumps(["tenant-a"]),
            "CORRAL_PREWARM__RUN_ON_START": "false",
            "CORRAL_PREWARM__SCHEDULE_INTERVAL_S": "0",
        }
    )
    running = await start_corral(node_count=1, extra_env=env, with_prewarm=True)
    try:
        yield running
    finally:
        await running.close()


async def _seed(corral: Corral) -> list[pw.ProgressEvent]:
    channel = make_channel(f"127.0.0.1:{corral.ports['prewarm']}", security=PeerSecurity(api_key=ADMIN_KEY))
    async with channel:
        call = pw_grpc.PrewarmServiceStub(channel).StartRun(
            pw.StartRunRequest(steps=[pw.PREWARM_STEP_SEED_CACHE])
        )
        async with asyncio.timeout(120):
            return [reply.event async for reply in call]


async def _outcomes(corral: Corral, key: str) -> tuple[int, int]:
    """The router's cache outcomes of the seeded prompt and chat, asked with `key`."""
    options = common_pb2.ModelOptions(temperature=0)
    channel = make_channel(corral.router_addr, security=PeerSecurity(api_key=key))
    async with channel:
        router = router_service_pb2_grpc.RouterServiceStub(channel)
        generate = await router.Generate(
            router_service_pb2.GenerateRequest(
                spec=common_pb2.GenerateSpec(model=MODEL, prompt=PROMPT, options=options)
            ),
            timeout=30,
        )
        chat = await router.Chat(
            router_service_pb2.ChatRequest(
                spec=common_pb2.ChatSpec(
                    model=MODEL, messages=[common_pb2.ChatMessage(role="user", content=CHAT)], options=options
                )
            ),
            timeout=30,
        )
    return generate.routing.cache_outcome, chat.routing.cache_outcome


async def test_seeded_answers_reach_the_listed_tenants_only(corral: Corral) -> None:
    events = await _seed(corral)
    seeded = [
        e
        for e in events
        if e.step == pw.PREWARM_STEP_SEED_CACHE
        and e.outcome != pw.STEP_OUTCOME_STARTED
        and not e.run_finished
    ]
    assert [e.outcome for e in seeded] == [pw.STEP_OUTCOME_OK] * 2, [e.message for e in seeded]
    assert all("stored for 1 of 1 seed tenants" in e.message for e in seeded)

    hit = common_pb2.CACHE_OUTCOME_EXACT_HIT
    # The listed tenant is served the seeded answers without a node call.
    assert await _outcomes(corral, TENANT_A_KEY) == (hit, hit)
    # A tenant not listed is not: the cache stays per tenant.
    outcomes = await _outcomes(corral, TENANT_B_KEY)
    assert outcomes == (common_pb2.CACHE_OUTCOME_MISS, common_pb2.CACHE_OUTCOME_MISS)


@pytest.mark.parametrize(
    ("tenants", "problem"), [(["a", " a "], "listed twice"), (["  "], "must not be empty")]
)
async def test_seed_tenants_are_checked(tenants: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PrewarmConfig(seed_tenants=tenants)
