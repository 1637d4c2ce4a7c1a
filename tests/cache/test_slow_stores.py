"""A lookup's short budget running out does not open a breaker; a hung store still does, via a probe."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import pytest
from corral.v1 import common_pb2 as c

from devstack.config import make_temp_state_dir
from devstack.redis import RedisServer
from services.cache import keys
from services.cache.breaker import Breaker
from services.cache.embedders import EmbedderError, HashingEmbedder
from services.cache.engine import _blame
from services.cache.server import start_in_process
from tests.cache.helpers import gen, make_config
from tests.helpers.polling import wait_for

EXACT = c.CachePolicy(mode=c.CACHE_MODE_EXACT)


def _timeout_wrapped() -> EmbedderError:
    try:
        try:
            raise TimeoutError
        except TimeoutError as exc:
            raise EmbedderError("no embedding within 10 ms") from exc
    except EmbedderError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("exc", "caller_bound", "counted"),
    [
        (TimeoutError(), True, False),
        (_timeout_wrapped(), True, False),
        (TimeoutError(), False, True),
        (ConnectionError("refused"), True, True),
        (EmbedderError("bad reply"), True, True),
    ],
    ids=["caller-timeout", "caller-timeout-wrapped", "store-timeout", "error", "embedder-error"],
)
def test_only_the_stores_own_failures_count(exc: BaseException, caller_bound: bool, counted: bool) -> None:
    breaker = Breaker(open_s=1.0, failure_threshold=1)
    assert _blame(breaker, exc, caller_bound=caller_bound) is counted
    assert breaker.failures == int(counted) and breaker.degraded is counted


async def test_short_budgets_on_a_hung_redis_still_open_its_breaker(migrated_dsn: str) -> None:
    state = make_temp_state_dir("corral-cache-slow-")
    redis_server = await asyncio.to_thread(RedisServer(port=0, state_dir=state, password="slow-stores").start)
    assert redis_server.pid is not None
    running = await start_in_process(
        make_config(redis_timeout_ms=50.0, breaker_failures=1, breaker_open_ms=60_000.0),
        redis_server.url,
        migrated_dsn,
        embedder=HashingEmbedder(384),
    )
    engine = running.engine
    view = keys.derive("slow-stores", gen("is redis there?", temperature=0.7))
    plan = keys.plan(EXACT, view, default_ttl_s=60, max_ttl_s=3600, semantic_enabled=False)
    stopped = False
    try:
        # NOTE: the healthy lookup only shows that Redis answers (and opens the connection); it gets
        # a generous budget because a busy machine can stretch a ~1 ms GET past 20 ms. Lookup latency
        # on a healthy Redis is measured by bench/cache_latency.py.
        healthy = await engine.lookup(view, plan, embedding=None, single_flight=False, budget_s=2.0)
        assert healthy.outcome == c.CACHE_OUTCOME_MISS
        assert engine.exact_breaker.failures == 0 and not engine.exact_degraded
        # NOTE: 20 ms leaves the GET less time than Redis's own 50 ms timeout: the lookup's budget,
        # not Redis, decides when it gives up (a stopped Redis never answers, so it always runs out).
        os.kill(redis_server.pid, signal.SIGSTOP)
        stopped = True
        hung = await engine.lookup(view, plan, embedding=None, single_flight=False, budget_s=0.02)
        assert hung.outcome == c.CACHE_OUTCOME_DEGRADED
        assert engine.exact_breaker.failures == 0, "a budget that ran out is not Redis's failure"
        await wait_for(lambda: engine.exact_degraded, 10, 0.01, what="the probe finding the hung Redis")
        skipped = await engine.lookup(view, plan, embedding=None, single_flight=False, budget_s=0.02)
        assert skipped.outcome == c.CACHE_OUTCOME_DEGRADED
        assert engine.exact_breaker.trials == 0, "the open breaker kept the lookup away from Redis"
    finally:
        if stopped:
            os.kill(redis_server.pid, signal.SIGCONT)
        await running.stop()
        await asyncio.to_thread(redis_server.stop)
        shutil.rmtree(state, ignore_errors=True)
