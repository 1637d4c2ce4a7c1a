"""Required models as desired state: what each node must have, pulls (throttled), and warm-up after them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from services.prewarm.config import PrewarmConfig, RequiredModel
from services.prewarm.planner import ModelView, NodeView
from services.prewarm.required import PRESENT, PULLING, RequiredModels, missing_required, required_for
from services.prewarm.runs import RunRequest, Step, Trigger
from tests.helpers.polling import wait_for
from tests.prewarm.test_triggers import LLAMA, Harness

MISTRAL = RequiredModel(name="mistral:7b")
QWEN_GPU = RequiredModel(name="qwen2.5:0.5b", labels={"gpu": "a10"})


def node(node_id: str, *models: str, labels: dict[str, str] | None = None, **state: Any) -> NodeView:
    views = {m: ModelView(name=m) for m in models}
    return NodeView(node_id=node_id, address=f"http://{node_id}", models=views, labels=labels or {}, **state)


def test_required_models_apply_by_label_and_missing_ones_are_named() -> None:
    gpu = node("a", "llama3.2:1b:latest", labels={"gpu": "a10"})
    cpu = node("b", "mistral:7b")
    required = [MISTRAL, QWEN_GPU]
    assert [r.name for r in required_for(gpu, required)] == ["mistral:7b", "qwen2.5:0.5b"]
    assert [r.name for r in required_for(cpu, required)] == ["mistral:7b"]
    assert missing_required(gpu, required) == ["mistral:7b", "qwen2.5:0.5b"]
    assert missing_required(cpu, required) == []


async def test_a_node_joining_without_a_required_model_is_warmed_only_once_it_has_it() -> None:
    h = Harness(None, run_on_start=False, schedule_interval_s=0, required_models=[MISTRAL.model_dump()])
    first = {"a": node("a", "llama3.2:1b", "mistral:7b")}
    h.triggers.on_scores(None, first)
    joined = {**first, "c": node("c", "llama3.2:1b")}
    h.triggers.on_scores(first, joined)
    assert h.recorder.requests.empty()
    has_it = {**joined, "c": node("c", "llama3.2:1b", "mistral:7b")}
    h.triggers.on_scores(joined, has_it)
    request = await h.recorder.next()
    assert request == RunRequest(Trigger.NODE_JOINED, (Step.WARM_MODELS,), frozenset({"c"}))
    await h.manager.close()


class FakePulls:
    """Pulls that wait for the test; records the order and how many ran at once."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0

    async def pull(
        self, address: str, model: str, progress: Callable[[int, int], None], *, read_timeout_s: float
    ) -> None:
        self.started.append((address, model))
        self.running += 1
        self.most = max(self.most, self.running)
        progress(10, 100)
        try:
            await self.release.wait()
        finally:
            self.running -= 1

    async def close(self) -> None:
        return None


async def test_missing_models_are_pulled_one_at_a_time_on_serving_nodes_only() -> None:
    cfg = PrewarmConfig.model_validate(
        {"models": [LLAMA], "required_models": [MISTRAL.model_dump()], "pull_concurrency": 1}
    )
    pulls = FakePulls()
    required = RequiredModels(cfg, pulls)  # type: ignore[arg-type]
    view = {
        "a": node("a", "mistral:7b"),
        "b": node("b"),
        "c": node("c"),
        "d": node("d", state="UNHEALTHY", healthy=False),
    }
    required.on_scores(None, view)
    await wait_for(lambda: pulls.started, 5, 0.01, what="the first pull")
    states = {s.node_id: s for s in required.states()}
    assert states["a"].state == PRESENT
    assert [s.state for s in (states["b"], states["c"], states["d"])] == [PULLING, "missing", "missing"]
    assert states["b"].completed == 10 and states["b"].total == 100
    assert pulls.started == [("http://b", "mistral:7b")]
    pulls.release.set()
    await wait_for(lambda: len(pulls.started) == 2 and pulls.running == 0, timeout_s=5)
    assert pulls.started == [("http://b", "mistral:7b"), ("http://c", "mistral:7b")] and pulls.most == 1
    # NOTE: a finished pull stays "pulling" until health's view lists the model; it is not pulled again.
    required.on_scores(view, view)
    assert len(pulls.started) == 2
    listed = {**view, "b": node("b", "mistral:7b"), "c": node("c", "mistral:7b")}
    required.on_scores(view, listed)
    assert {s.node_id: s.state for s in required.states()} == {
        "a": PRESENT,
        "b": PRESENT,
        "c": PRESENT,
        "d": "missing",
    }
    await required.close()


async def test_a_cancelled_pull_does_not_drop_the_pull_started_after_it_for_the_same_model() -> None:
    cfg = PrewarmConfig.model_validate({"models": [LLAMA], "required_models": [MISTRAL.model_dump()]})
    pulls = FakePulls()
    required = RequiredModels(cfg, pulls)  # type: ignore[arg-type]
    with_b = {"b": node("b")}
    required.on_scores(None, with_b)
    await wait_for(lambda: pulls.running == 1, 5, 0.01, what="the first pull")
    # NOTE: the node leaves the view (its pull is cancelled) and comes back before that task ends.
    required.on_scores(with_b, {})
    required.on_scores({}, with_b)
    # NOTE: the second pull starts once the cancelled one has left the gate, and so has ended.
    await wait_for(lambda: len(pulls.started) == 2 and pulls.running == 1, 5, 0.01, what="the second pull")
    # NOTE: the new pull is still known: a reconcile does not start a third, and close() cancels it.
    # The pause is the time a wrongly started third pull would need to show in `pulls.started`.
    required.reconcile()
    await asyncio.sleep(0.05)
    assert len(pulls.started) == 2
    await required.close()
    assert pulls.running == 0
