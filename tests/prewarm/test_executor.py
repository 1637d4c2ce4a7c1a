"""The run executor against simulated nodes: warm-up, failures mid-run, peers that are down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from services.common.channels import make_channel
from services.prewarm.config import PrewarmConfig, WarmModel
from services.prewarm.executor import RunExecutor
from services.prewarm.node_client import OllamaNodeClient
from services.prewarm.peers import CacheMaintainer, RouterSeeder
from services.prewarm.runs import (
    Outcome,
    ProgressEvent,
    RunManager,
    RunRequest,
    RunState,
    RunSummary,
    Step,
    Trigger,
)
from tests.helpers.procs import free_port
from tests.prewarm.conftest import StaticScores, collect, loaded_models, view_of

MODELS = [
    WarmModel(name="llama3.2:1b", keep_alive_s=600, always_warm=True),
    WarmModel(name="nomic-embed-text:v1.5", keep_alive_s=600),
]


def config(**fields: Any) -> PrewarmConfig:
    dead = f"127.0.0.1:{free_port()}"
    base: dict[str, Any] = {"models": MODELS, "health_addr": dead, "router_addr": dead, "cache_addr": dead}
    return PrewarmConfig.model_validate({**base, **fields})


async def run_once(
    cfg: PrewarmConfig, scores: StaticScores, request: RunRequest
) -> tuple[list[ProgressEvent], RunSummary]:
    channel = make_channel(cfg.router_addr)
    nodes = OllamaNodeClient()
    try:
        executor = RunExecutor(
            cfg,
            scores=scores,
            nodes=nodes,
            seeder=RouterSeeder(channel, cfg.router_addr),
            maintainer=CacheMaintainer(channel, cfg.cache_addr),
        )
        manager = RunManager(executor)
        events = await collect(manager.start(request))
        await manager.wait_idle()
        return events, manager.recent(1)[0]
    finally:
        await nodes.close()
        await channel.close()


async def test_warm_up_loads_every_configured_model_on_each_node(
    make_node, http: aiohttp.ClientSession
) -> None:
    a, b = await make_node(name="a"), await make_node(name="b")
    scores = StaticScores({"a": view_of(a), "b": view_of(b)})
    events, summary = await run_once(config(), scores, RunRequest(Trigger.MANUAL, (Step.WARM_MODELS,)))
    for node in (a, b):
        assert await loaded_models(http, node) == {"llama3.2:1b", "nomic-embed-text:v1.5"}
    assert summary.state is RunState.SUCCEEDED and summary.succeeded == 4
    finished = [e for e in events if e.outcome is Outcome.OK and not e.run_finished]
    assert {(e.node_id, e.model) for e in finished} == {
        (n, m) for n in "ab" for m in ("llama3.2:1b", "nomic-embed-text:v1.5")
    }
    assert [e.done for e in events if e.outcome is not Outcome.STARTED][:-1] == [1, 2, 3, 4]
    # The first event says the step started planning; every item event counts out of four.
    assert events[0].outcome is Outcome.STARTED and "planning" in events[0].message
    assert all(e.total == 4 for e in events[1:-1])
    # The keep-alive is the configured one (the embedding model went through /api/embed).
    runner = a.engine.runners["llama3.2:1b"]
    assert 500 < runner.keep_alive_s <= 600
    assert a.stats()["requests_by_route"].get("/api/embed") == 1


async def test_a_second_warm_up_skips_loaded_models(make_node) -> None:
    node = await make_node(name="a")
    await node.load_model("llama3.2:1b")
    events, summary = await run_once(
        config(), StaticScores({"a": view_of(node)}), RunRequest(Trigger.MANUAL, (Step.WARM_MODELS,))
    )
    outcomes = {(e.model, e.outcome) for e in events if e.outcome is not Outcome.STARTED and e.model}
    assert outcomes == {("llama3.2:1b", Outcome.SKIPPED), ("nomic-embed-text:v1.5", Outcome.OK)}
    assert summary.state is RunState.SUCCEEDED


async def test_node_failing_during_warm_up_is_reported_and_the_others_are_warmed(
    make_node, http: aiohttp.ClientSession
) -> None:
    good, bad, erring = (
        await make_node(name="good"),
        await make_node(name="bad"),
        await make_node(name="erring"),
    )
    scores = StaticScores({n.name: view_of(n) for n in (good, bad, erring)})
    # Health still believes both are fine: one now refuses connections, one answers 500 to inference.
    bad.set_fault(refuse=True)
    erring.set_fault(error_rate=1.0)
    events, summary = await run_once(config(), scores, RunRequest(Trigger.MANUAL, (Step.WARM_MODELS,)))
    assert await loaded_models(http, good) == {"llama3.2:1b", "nomic-embed-text:v1.5"}
    failed = [e for e in events if e.outcome is Outcome.FAILED and not e.run_finished]
    assert {(e.node_id, e.model) for e in failed} == {
        (n, m) for n in ("bad", "erring") for m in ("llama3.2:1b", "nomic-embed-text:v1.5")
    }
    refused = [e.message for e in failed if e.node_id == "bad"]
    assert "cannot reach" in refused[0] and refused[1].startswith("node unreachable")
    assert any("500" in e.message for e in failed if e.node_id == "erring")
    assert summary.state is RunState.PARTIAL and summary.succeeded == 2 and summary.failed == 4
    # Only the first request went to the refusing node; the rest failed fast.
    assert bad.stats()["requests_total"] == 0


async def test_peers_down_fail_their_steps_and_the_run_ends(make_node, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text("models:\n  llama3.2:1b:\n    - one\n    - two\n    - three\n")
    cfg = config(seed_file=str(seeds), seed_timeout_s=5, maintenance_timeout_s=5)
    events, summary = await run_once(cfg, StaticScores(None), RunRequest(Trigger.MANUAL))
    failed = [e for e in events if e.outcome is Outcome.FAILED and not e.run_finished]
    by_step = {step: [e.message for e in failed if e.step is step] for step in Step}
    assert "health at health.test:1 is unavailable" in by_step[Step.WARM_MODELS][0]
    assert len(by_step[Step.SEED_CACHE]) == 3
    assert all("router" in m and "unavailable" in m for m in by_step[Step.SEED_CACHE])
    assert "cache" in by_step[Step.MAINTENANCE][0]
    assert summary.state is RunState.FAILED and summary.failed == 5
    assert summary.maintenance_report.startswith("maintenance failed")
    assert events[-1].run_finished


async def test_bad_seed_file_is_one_failed_item_naming_the_field(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text("models:\n  llama3.2:1b:\n    - prompt: hi\n      temprature: 0\n")
    cfg = config(seed_file=str(seeds))
    events, summary = await run_once(cfg, StaticScores({}), RunRequest(Trigger.MANUAL, (Step.SEED_CACHE,)))
    [failed] = [e for e in events if e.outcome is Outcome.FAILED and not e.run_finished]
    assert str(seeds) in failed.message and "models.llama3.2:1b.0.temprature" in failed.message
    assert summary.state is RunState.FAILED


async def test_models_chosen_in_the_request_restrict_the_warm_up(make_node, http) -> None:
    node = await make_node(name="a")
    request = RunRequest(Trigger.MANUAL, (Step.WARM_MODELS,), models=frozenset({"mistral:7b"}))
    _, summary = await run_once(config(), StaticScores({"a": view_of(node)}), request)
    assert await loaded_models(http, node) == {"mistral:7b"}
    assert summary.succeeded == 1
