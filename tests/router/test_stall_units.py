"""Stall bounds from a node's learned pace: pure functions over recorded waits, no processes.

Then the watch on one attempt, against a real HTTP server in this process that stops sending.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

import orjson
import pytest
from aiohttp import web

from services.common.config import load_config
from services.router.config import RouterConfig, StallConfig
from services.router.learning import (
    Spread,
    StallBound,
    StallLearner,
    StallStats,
    first_chunk_bound,
    gap_bound,
    is_stall,
)
from services.router.resilience import StallWatch
from services.router.scores import Attempt
from services.router.transport import NodeError, NodeTransport

CFG = StallConfig()
CAP_S = 10.0


def learned(
    gaps: Sequence[float] = (), ttfts: Sequence[float] = (), loads: Sequence[float] = ()
) -> StallStats:
    """The stats a learner holds after these waits (seconds) of one node and model."""
    learner = StallLearner(CFG)
    stats = learner.stats_of("node-1", "m")
    for gap in gaps:
        learner.gap(stats, gap)
    for ttft in ttfts:
        learner.first_chunk(stats, ttft)
    for load in loads:
        learner.loaded("node-1", "m", load)
    return stats


def test_spread_starts_like_tcp_and_follows_the_mean_and_deviation() -> None:
    spread = Spread()
    spread.add(0.2, 0.5)
    assert (spread.mean, spread.dev) == (0.2, 0.1) and spread.high == pytest.approx(0.4)
    for _ in range(60):
        spread.add(0.2, 0.5)
    # a steady wait: the deviation fades, the high mark comes down to the wait itself
    assert spread.mean == pytest.approx(0.2) and spread.dev < 1e-9
    spread.add(1.0, 0.5)
    assert spread.mean == pytest.approx(0.6) and spread.dev == pytest.approx(0.4)


def test_unknown_node_or_model_keeps_the_fixed_timeouts() -> None:
    for stats in (None, StallStats(), learned(gaps=[0.02] * (CFG.min_gap_samples - 1), ttfts=[0.1] * 4)):
        first = first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=CAP_S)
        gap = gap_bound(stats, cfg=CFG, cap_s=CAP_S)
        assert (first.seconds, first.learned) == (CAP_S, False)
        assert (gap.seconds, gap.learned) == (CAP_S, False)
        # the watch never declares a stall on a fixed bound: the transport's read timeout does
        assert not is_stall(gap, 60.0, 60.0) and not is_stall(first, 60.0, 60.0)
    assert StallLearner(CFG).bounds("node-9", "m", loaded=True, cap_s=CAP_S)[1].learned is False


def test_fast_steady_node_gets_the_floor_and_a_frozen_one_is_stalled() -> None:
    stats = learned(gaps=[0.02, 0.025, 0.018, 0.022] * 10)
    bound = gap_bound(stats, cfg=CFG, cap_s=CAP_S)
    # 4 x (about 20 ms + 2 x a few ms) is far below the floor
    assert bound.learned and bound.seconds == CFG.gap_floor_s
    assert "floor 2 s" in bound.why and "gap 0.02" in bound.why
    assert not is_stall(bound, 0.5, 0.5)
    assert is_stall(bound, 2.5, 2.5)


def test_slow_but_steady_node_is_not_stalled() -> None:
    # a CPU node that sends a token every 0.8 s, every time
    stats = learned(gaps=[0.8, 0.82, 0.79, 0.81] * 10)
    bound = gap_bound(stats, cfg=CFG, cap_s=CAP_S)
    assert bound.learned and 3.2 <= bound.seconds < 4.0
    # a wait of 2.5 s (a stall for the fast node above) is within its pace, and so is 3 s
    assert not is_stall(bound, 2.5, 2.5) and not is_stall(bound, 3.0, 3.0)
    assert is_stall(bound, 4.0, 4.0)


def test_a_node_whose_gaps_jump_is_stalled_below_the_fixed_timeout() -> None:
    before = gap_bound(learned(gaps=[0.05] * 40), cfg=CFG, cap_s=CAP_S)
    assert is_stall(before, 2.1, 2.1) and before.seconds < CAP_S / 4


def test_a_node_sending_on_other_streams_is_alive() -> None:
    bound = gap_bound(learned(gaps=[0.05] * 40), cfg=CFG, cap_s=CAP_S)
    # this attempt waited long, but the node sent a chunk on another stream 0.1 s ago
    assert not is_stall(bound, 5.0, 0.1)


def test_bound_never_exceeds_the_fixed_timeout() -> None:
    # a node whose gaps vary widely: 4 x its high gap is beyond the fixed budget
    stats = learned(gaps=[0.1, 3.0] * 20, ttfts=[1.0, 4.0] * 5)
    gap = gap_bound(stats, cfg=CFG, cap_s=CAP_S)
    first = first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=CAP_S)
    assert (gap.seconds, gap.learned) == (CAP_S, False) and "fixed 10 s" in gap.why
    assert (first.seconds, first.learned) == (CAP_S, False)


def test_first_chunk_bound_from_learned_ttft_and_floor() -> None:
    quick = first_chunk_bound(learned(ttfts=[0.1] * 10), loaded=True, cfg=CFG, cap_s=CAP_S)
    assert quick.learned and quick.seconds == CFG.ttft_floor_s
    slow = learned(ttfts=[1.0, 1.2, 0.9, 1.1, 1.0, 1.0])
    bound = first_chunk_bound(slow, loaded=True, cfg=CFG, cap_s=CAP_S)
    expected = CFG.factor * slow.ttft.high
    assert bound.learned and bound.seconds == pytest.approx(expected) and bound.seconds > CFG.ttft_floor_s


def test_cold_model_adds_the_learned_load_or_keeps_the_fixed_budget() -> None:
    cold_cap = CAP_S + 60.0
    unknown_load = first_chunk_bound(learned(ttfts=[0.1] * 10), loaded=False, cfg=CFG, cap_s=cold_cap)
    assert (unknown_load.seconds, unknown_load.learned) == (cold_cap, False)
    assert "load time not learned" in unknown_load.why
    stats = learned(ttfts=[0.1] * 10, loads=[4.0])
    cold = first_chunk_bound(stats, loaded=False, cfg=CFG, cap_s=cold_cap)
    assert cold.learned and cold.seconds == pytest.approx(CFG.ttft_floor_s + CFG.load_factor * 4.0)
    assert "load 4.000 s" in cold.why
    # a wait that would be a stall with the model loaded is not one while it loads
    warm = first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=CAP_S)
    assert is_stall(warm, 5.0, 5.0) and not is_stall(cold, 5.0, 5.0)


def test_counts_stalls_per_node_and_phase() -> None:
    learner = StallLearner(CFG)
    learner.stalled("node-1", "between_chunks")
    learner.stalled("node-1", "between_chunks")
    learner.stalled("node-2", "first_chunk")
    assert learner.stalls == {("node-1", "between_chunks"): 2, ("node-2", "first_chunk"): 1}


def test_configuration_keys_and_turning_it_off() -> None:
    env = {"CORRAL_ROUTER__STALL__ENABLED": "false", "CORRAL_ROUTER__STALL__GAP_FLOOR_S": "0.5"}
    cfg = load_config(env=env).router
    assert cfg.stall.enabled is False and cfg.stall.gap_floor_s == 0.5
    assert RouterConfig().stall == StallConfig() and StallConfig().factor == 4.0
    with pytest.raises(ValueError, match="factor"):
        StallConfig(factor=0.5)


# --- the watch on a streamed attempt, against a real HTTP server in this process ----------------
class HangingNode:
    """Sends `lines` NDJSON chunks, then nothing until released (a node frozen mid-stream)."""

    def __init__(self) -> None:
        self.lines = 0
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.lines:
            await self.release.wait()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for i in range(self.lines):
            await resp.write(orjson.dumps({"response": str(i), "done": False}) + b"\n")
        await self.release.wait()
        return resp


@pytest.fixture
async def hanging() -> AsyncIterator[tuple[HangingNode, str]]:
    node = HangingNode()
    app = web.Application()
    app.router.add_post("/api/generate", node.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield node, f"http://127.0.0.1:{runner.addresses[0][1]}"
    node.release.set()
    await runner.cleanup()


@pytest.fixture
async def transport() -> AsyncIterator[NodeTransport]:
    transport = NodeTransport()
    await transport.start()
    yield transport
    await transport.close()


def _watch(learner: StallLearner, first: StallBound, gap: StallBound) -> StallWatch:
    return StallWatch(learner, "node-1", learner.stats_of("node-1", "m"), first, gap, learn_first=True)


async def _read(
    transport: NodeTransport, url: str, watch: StallWatch, seen: list[str], got: asyncio.Event | None = None
) -> None:
    # NOTE: the fixed read timeout is far beyond the test's own timeout: only the watch can end it.
    stream = transport.stream(
        url, "/api/generate", {"model": "m"}, read_timeout_s=300, deadline=None, watch=watch
    )
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            seen.append(chunk["response"])
            if got is not None:
                got.set()


LEARNED = StallBound(0.2, True, "learned")
FIXED = StallBound(300.0, False, "fixed")


@pytest.mark.timeout(30)
async def test_watch_ends_a_silent_attempt_before_its_first_chunk(
    hanging: tuple[HangingNode, str], transport: NodeTransport
) -> None:
    _, url = hanging
    learner = StallLearner(CFG)
    watch = _watch(learner, LEARNED, FIXED)
    with pytest.raises(NodeError) as caught:
        await _read(transport, url, watch, [])
    assert caught.value.kind is Attempt.TTFT_TIMEOUT and "stalled" in caught.value.message
    assert watch.stalled and watch.phase == "first_chunk" and watch.waited_s >= LEARNED.seconds
    assert learner.stats_of("node-1", "m").ttft.samples == 0


@pytest.mark.timeout(30)
async def test_watch_ends_a_stream_that_falls_silent_and_learns_its_gaps(
    hanging: tuple[HangingNode, str], transport: NodeTransport
) -> None:
    node, url = hanging
    node.lines = 3
    learner = StallLearner(CFG)
    watch = _watch(learner, FIXED, LEARNED)
    seen: list[str] = []
    with pytest.raises(NodeError) as caught:
        await _read(transport, url, watch, seen)
    assert caught.value.kind is Attempt.STREAM_CUT and "between_chunks" in caught.value.message
    assert seen == ["0", "1", "2"]
    stats = learner.stats_of("node-1", "m")
    assert stats.ttft.samples == 1 and stats.gap.samples == 2
    assert "node-1" in learner.active


@pytest.mark.timeout(30)
async def test_a_cancelled_caller_is_not_taken_for_a_stall(
    hanging: tuple[HangingNode, str], transport: NodeTransport
) -> None:
    node, url = hanging
    node.lines = 1
    learner = StallLearner(CFG)
    watch = _watch(learner, FIXED, StallBound(60.0, True, "learned"))
    seen: list[str] = []
    got = asyncio.Event()
    task = asyncio.create_task(_read(transport, url, watch, seen, got))
    await got.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not watch.stalled and task.cancelled()


def test_a_longer_prompt_than_those_learned_stretches_the_first_chunk_bound() -> None:
    learner = StallLearner(CFG)
    stats = learner.stats_of("node-1", "m")
    for _ in range(10):
        learner.first_chunk(stats, 1.0, prompt_chars=400)
    usual = first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=60.0, prompt_chars=300)
    assert usual.seconds == pytest.approx(CFG.factor * stats.ttft.high) and "prompt" not in usual.why
    # a prompt ten times as long takes about ten times as long to evaluate before the first token
    long = first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=60.0, prompt_chars=4000)
    assert long.learned and long.seconds == pytest.approx(usual.seconds * 4000 / stats.prompt_chars.high)
    assert 8 * usual.seconds < long.seconds < 10 * usual.seconds
    assert f"x prompt 4000 / {stats.prompt_chars.high:.0f} chars" in long.why
    assert not is_stall(long, 15.0, 15.0) and is_stall(usual, 15.0, 15.0)
    # longer still, and the fixed budget applies
    assert first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=60.0, prompt_chars=40000).learned is False


@pytest.mark.timeout(30)
async def test_a_cold_attempt_keeps_its_first_wait_out_of_the_learned_ttft(
    hanging: tuple[HangingNode, str], transport: NodeTransport
) -> None:
    node, url = hanging
    node.lines = 2
    learner = StallLearner(CFG)
    watch = StallWatch(learner, "node-1", learner.stats_of("node-1", "m"), FIXED, LEARNED, learn_first=False)
    seen: list[str] = []
    with pytest.raises(NodeError):
        await _read(transport, url, watch, seen)
    stats = learner.stats_of("node-1", "m")
    # the wait that included a load is the forwarder's to learn as the load time, not a TTFT
    assert stats.ttft.samples == 0 and stats.gap.samples == 1 and watch.first_wait_s > 0
