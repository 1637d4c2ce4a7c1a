"""Unit tests of the operator's say in routing: node priority (registry label) and model pins."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.router.config import BalancerConfig
from services.router.scores import Attempt, ModelView, NodeView, ScoreBoard, node_priority

MODEL = "m:latest"
BIG = "mistral:7b"


def _node(node_id: str, *, routable: bool = True, **labels: str) -> NodeView:
    models = {MODEL: ModelView("m", loaded=True), BIG: ModelView(BIG, loaded=True)}
    return NodeView(node_id, f"http://{node_id}", routable=routable, models=models, labels=labels)


def _board(*nodes: NodeView, **cfg: object) -> ScoreBoard:
    board = ScoreBoard(BalancerConfig(inflight_per_slot=1, **cfg))  # type: ignore[arg-type]
    board.apply_snapshot(list(nodes), version=1, stale_after_s=3.0)
    return board


def _ids(board: ScoreBoard, model: str = MODEL, **kw: object) -> list[str]:
    return sorted(c.node_id for c in board.candidates(model, **kw))  # type: ignore[arg-type]


def test_lower_priority_nodes_serve_only_while_the_better_ones_are_down_or_full() -> None:
    board = _board(
        _node("gpu-1", num_parallel="1", priority="0"),
        _node("gpu-2", num_parallel="1", priority="0"),
        _node("cpu", num_parallel="1", priority="1"),
    )
    assert _ids(board) == ["gpu-1", "gpu-2"]
    board.begin("gpu-1", interactive=True)
    assert _ids(board) == ["gpu-2"]  # one GPU node full: the other takes it, not the CPU box
    board.begin("gpu-2", interactive=True)
    assert _ids(board) == ["cpu"]  # both saturated: now the CPU box
    # A balancer that weighs full nodes sees the tier with room, not the full GPU nodes.
    assert _ids(board, include_full=True) == ["cpu"]
    board.begin("cpu", interactive=True)
    assert _ids(board) == []
    assert _ids(board, include_full=True) == ["gpu-1", "gpu-2"]  # all full: wait for the best tier
    board.end("gpu-1", interactive=True)
    assert _ids(board) == ["gpu-1"]


def test_a_down_or_excluded_better_node_lets_the_next_priority_serve() -> None:
    board = _board(_node("gpu", routable=False, priority="0"), _node("cpu", priority="5"))
    assert _ids(board) == ["cpu"]
    board = _board(_node("gpu", priority="0"), _node("cpu", priority="5"))
    assert _ids(board, exclude=["gpu"]) == ["cpu"]  # a retry after the GPU node failed


def test_priority_labels_that_are_no_integer_count_as_zero() -> None:
    assert [node_priority({"priority": v}) for v in ("", "x", "1.5", " 2 ", "-1")] == [0, 0, 0, 2, -1]
    assert node_priority({}) == 0
    board = _board(_node("a", priority="oops"), _node("b"), _node("c", priority="1"))
    assert _ids(board) == ["a", "b"]


def test_a_pinned_model_goes_only_to_nodes_with_every_label_of_its_pin() -> None:
    pins = {"Mistral:7B": {"gpu": "true", "zone": "a"}}
    board = _board(
        _node("gpu-a", gpu="true", zone="a"),
        _node("gpu-b", gpu="true", zone="b"),
        _node("cpu", gpu="false", zone="a"),
        pins=pins,
    )
    assert _ids(board, BIG) == ["gpu-a"]  # the pin's model name is normalised like a request's
    assert _ids(board, MODEL) == ["cpu", "gpu-a", "gpu-b"]  # models without a pin go anywhere
    assert _ids(board, BIG, exclude=["gpu-a"]) == []  # no other node may serve it


def test_a_pin_without_labels_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match=r"pins\['m'\]"):
        BalancerConfig(pins={"m": {}})


def test_learned_slots_set_the_limit_once_the_balancer_reports_them() -> None:
    board = ScoreBoard(BalancerConfig(inflight_per_slot=2, max_inflight_per_node=50))
    board.apply_snapshot([_node("n")], version=1, stale_after_s=3.0)
    learned: dict[str, int | None] = {"n": None}
    board.learned_slots = learned.get
    node = board.nodes["n"]
    assert board.inflight_limit(node) == 50  # nothing learned: the constant
    learned["n"] = 3
    assert board.inflight_limit(node) == 6
    node.labels["num_parallel"] = "4"
    assert board.inflight_limit(node) == 8  # the operator's label wins over what was learned


class _Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_cold_candidate_names_the_models_its_load_may_evict() -> None:
    gb = 1_000_000_000
    models = {
        MODEL: ModelView("m", loaded=True, size_bytes=gb),
        BIG: ModelView(BIG, loaded=False, size_bytes=4 * gb),
        "nomic-embed-text:v1.5": ModelView(
            "nomic-embed-text:v1.5", loaded=True, size_bytes=gb // 4, capabilities=("embedding",)
        ),
    }
    clock = _Clock()
    board = ScoreBoard(BalancerConfig(), clock=clock)
    board.apply_snapshot(
        [NodeView("n", "http://n", models=models, probed_at=90.0)], version=1, stale_after_s=3.0
    )
    (big,) = board.candidates(BIG)
    (small,) = board.candidates(MODEL)
    # The loaded 1 GB model may be evicted; the small embedding model is left out (it fits).
    assert not big.loaded and big.displaced_bytes == gb
    assert small.loaded and small.displaced_bytes == 0
    # An answer for the big model after health's latest probe: it is loaded, whatever the probe said.
    board.record("n", BIG, Attempt.NONE, 500.0)
    (big,) = board.candidates(BIG)
    assert big.loaded and big.displaced_bytes == 0
    # A later probe that finds it unloaded (evicted since) wins over the older answer.
    clock.now = 110.0
    evicted = NodeView("n", "http://n", models=models, probed_at=105.0)
    board.apply_update([evicted], [], version=2)
    (big,) = board.candidates(BIG)
    assert not big.loaded and big.displaced_bytes == gb


async def test_list_models_names_each_models_pin() -> None:
    from services.router.fleet import Fleet
    from services.router.transport import NodeTransport
    from tests.helpers.procs import free_port

    # NOTE: nothing listens on the node's port: ListModels describes it from the score copy.
    node = NodeView("gpu-a", f"http://127.0.0.1:{free_port()}", models={BIG: ModelView(BIG, loaded=True)})
    board = _board(node, pins={"Mistral:7B": {"gpu": "true"}})
    assert board.pin_of(BIG) == {"gpu": "true"} and board.pin_of(MODEL) == {}
    transport = NodeTransport()
    await transport.start()
    try:
        reply = await Fleet(board, transport).list_models(loaded_only=False, timeout_s=2.0)
    finally:
        await transport.close()
    assert [(m.name, dict(m.pin)) for m in reply.models] == [(BIG, {"gpu": "true"})]


def test_a_load_this_router_started_counts_until_a_probe_sees_the_node() -> None:
    gb = 1_000_000_000
    models = {MODEL: ModelView("m", loaded=True, size_bytes=gb), BIG: ModelView(BIG, size_bytes=4 * gb)}
    clock = _Clock()
    board = ScoreBoard(BalancerConfig(), clock=clock)
    board.apply_snapshot(
        [NodeView("n", "http://n", models=models, probed_at=90.0)], version=1, stale_after_s=3.0
    )
    # The router sends the big model there: it loads (a request sent next waits for that load
    # too), and may evict the small one, which then displaces nothing more.
    board.loading("n", BIG)
    ((big,), (small,)) = board.candidates(BIG), board.candidates(MODEL)
    assert not big.loaded and big.displaced_bytes == 0
    assert not small.loaded
    # An answer for the small model after that load: it is there after all.
    clock.now = 101.0
    board.record("n", MODEL, Attempt.NONE, 50.0)
    assert board.candidates(MODEL)[0].loaded
    # A probe after the load decides for every model (here: only the big one is loaded).
    clock.now = 110.0
    probed = {MODEL: ModelView("m", size_bytes=gb), BIG: ModelView(BIG, loaded=True, size_bytes=4 * gb)}
    board.apply_update([NodeView("n", "http://n", models=probed, probed_at=105.0)], [], version=2)
    assert board.candidates(BIG)[0].loaded
    assert not board.candidates(MODEL)[0].loaded  # the answer at 101 is older than the probe
