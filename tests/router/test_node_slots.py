"""Unit tests of each node's in-flight limit: from its parallel slots when known, else the constant."""

from __future__ import annotations

from services.router.config import BalancerConfig, EctConfig
from services.router.scores import ModelView, NodeView, ScoreBoard

MODEL = "m:latest"


def _board(cfg: BalancerConfig, *nodes: NodeView) -> ScoreBoard:
    board = ScoreBoard(cfg)
    board.apply_snapshot(list(nodes), version=1, stale_after_s=3.0)
    return board


def _node(node_id: str, **labels: str) -> NodeView:
    return NodeView(node_id, f"http://{node_id}", models={MODEL: ModelView("m", loaded=True)}, labels=labels)


def _full_after(board: ScoreBoard, node_id: str) -> int:
    """Requests begun on the node until it stops being a candidate."""
    count = 0
    while any(c.node_id == node_id for c in board.candidates(MODEL)):
        board.begin(node_id, interactive=True)
        count += 1
        assert count < 10_000
    return count


def test_slots_from_the_registry_label_set_the_limit() -> None:
    cfg = BalancerConfig(max_inflight_per_node=50, inflight_per_slot=2)
    board = _board(cfg, _node("gpu", num_parallel="4"), _node("cpu", num_parallel="1"), _node("plain"))
    assert _full_after(board, "gpu") == 8
    assert _full_after(board, "cpu") == 2
    assert _full_after(board, "plain") == 50  # slots unknown: the configured constant


def test_operator_slots_apply_when_no_label_says() -> None:
    cfg = BalancerConfig(inflight_per_slot=1.5, ect=EctConfig(node_slots={"a": 3, "b": 2}))
    board = _board(cfg, _node("a"), _node("b", num_parallel="6"))
    assert _full_after(board, "a") == 5  # 3 x 1.5, rounded up
    assert _full_after(board, "b") == 9  # the node's label wins over the configuration


def test_a_label_that_is_no_slot_count_is_ignored() -> None:
    cfg = BalancerConfig(max_inflight_per_node=7)
    for value in ("", "0", "-2", "four", "2.5"):
        board = _board(cfg, _node("n", num_parallel=value))
        assert _full_after(board, "n") == 7, value


def test_a_full_node_stays_visible_to_the_admission_check() -> None:
    board = _board(BalancerConfig(inflight_per_slot=1), _node("n", num_parallel="1"))
    board.begin("n", interactive=True)
    assert board.candidates(MODEL) == []
    assert [c.node_id for c in board.candidates(MODEL, include_full=True)] == ["n"]
    board.end("n", interactive=True)
    assert [c.node_id for c in board.candidates(MODEL)] == ["n"]
