"""Hypothesis profiles and in-process servers (real domain code, real stores) for the fuzz tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest_asyncio
from hypothesis import HealthCheck, settings

from devstack.redis import RedisServer
from tests.fuzz.servers import Servers, start_servers

# NOTE: the "ci" profile is the default: about 100 examples per RPC and route, thousands in all
# (tests/fuzz runs in well under two minutes on 2 cores). CORRAL_FUZZ_EXAMPLES raises it locally.
_EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "100"))
settings.register_profile(
    "ci",
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize=False,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
settings.load_profile(os.environ.get("CORRAL_FUZZ_PROFILE", "ci"))


def examples(share: float, floor: int) -> int:
    """A test's share of the profile's examples (heavier tests take fewer)."""
    return max(floor, int(_EXAMPLES * share))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Servers]:
    """The four services and the HTTP API in process over the session's stores, one set per module."""
    running = await start_servers(redis_server.url, migrated_dsn)
    yield running
    await running.close()
