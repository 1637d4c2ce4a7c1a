"""Unit tests of the continuation pieces and the score board (no I/O)."""

from __future__ import annotations

import pytest
from corral.v1 import common_pb2

from services.common.errors import Unavailable
from services.router.forward import Job, PrefixSkipper, continuation_request
from services.router.scores import Attempt, ModelView, NodeView, ScoreBoard


def test_prefix_skipper_drops_a_repeat() -> None:
    skip = PrefixSkipper("Hello world")
    assert skip.feed("Hel") == ""
    assert skip.feed("lo wor") == ""
    assert skip.feed("ld and more") == " and more"
    assert skip.feed(" text") == " text"


def test_prefix_skipper_releases_new_text() -> None:
    skip = PrefixSkipper("Hello world")
    assert skip.feed("Hel") == ""
    assert skip.feed("p me") == "Help me"
    assert PrefixSkipper("").feed("x") == "x"


def test_continuation_of_a_chat_appends_the_partial_answer() -> None:
    spec = common_pb2.ChatSpec(
        model="m",
        messages=[common_pb2.ChatMessage(role="user", content="q")],
        options=common_pb2.ModelOptions(num_predict=10),
    )
    path, body = continuation_request(Job(spec, "m"), "partial", "", pieces=4)
    assert path == "/api/chat"
    assert body["messages"][-1] == {"role": "assistant", "content": "partial"}
    assert body["options"]["num_predict"] == 6


def test_continuation_of_a_generate_becomes_a_chat() -> None:
    spec = common_pb2.GenerateSpec(model="m", prompt="q", system="s")
    path, body = continuation_request(Job(spec, "m"), "part", "", pieces=1)
    assert path == "/api/chat"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant"]
    assert "prompt" not in body and "system" not in body


def test_continuation_of_a_raw_generate_extends_the_prompt() -> None:
    spec = common_pb2.GenerateSpec(model="m", prompt="q:", raw=True)
    path, body = continuation_request(Job(spec, "m"), " a", "", pieces=1)
    assert path == "/api/generate" and body["prompt"] == "q: a" and body["raw"] is True


def test_continuation_with_a_template_is_impossible() -> None:
    spec = common_pb2.GenerateSpec(model="m", prompt="q", template="{{ .Prompt }}")
    with pytest.raises(Unavailable, match="cannot be continued"):
        continuation_request(Job(spec, "m"), "a", "", pieces=1)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def board_with(clock: Clock) -> ScoreBoard:
    board = ScoreBoard(clock=clock)
    board.apply_snapshot(
        [
            NodeView("a", "http://a", models={"m:latest": ModelView("m", loaded=True)}),
            NodeView("b", "http://b", models={"m:latest": ModelView("m")}),
            NodeView("c", "http://c", routable=False, models={"m:latest": ModelView("m")}),
            NodeView("d", "http://d", models={"other:latest": ModelView("other")}),
        ],
        version=1,
        stale_after_s=3.0,
    )
    return board


def test_candidates_filter_unroutable_and_models() -> None:
    board = board_with(Clock())
    assert sorted(c.node_id for c in board.candidates("m:latest")) == ["a", "b"]
    assert [c.node_id for c in board.candidates("m:latest", exclude=["a"])] == ["b"]
    assert board.known_models() == {"m:latest", "other:latest"}


def test_cooldown_and_missing_models() -> None:
    clock = Clock()
    board = board_with(clock)
    board.record("a", "m:latest", Attempt.CONNECTION, 1.0, cooldown_s=2.0)
    assert [c.node_id for c in board.candidates("m:latest")] == ["b"]
    clock.now += 2.5
    assert len(board.candidates("m:latest")) == 2
    board.mark_missing("b", "m:latest")
    assert [c.node_id for c in board.candidates("m:latest")] == ["a"]


def test_stale_board_falls_back_to_unroutable_nodes() -> None:
    clock = Clock()
    board = board_with(clock)
    board.record("a", "m:latest", Attempt.CONNECTION, 1.0, cooldown_s=60)
    board.record("b", "m:latest", Attempt.CONNECTION, 1.0, cooldown_s=60)
    assert board.candidates("m:latest") == []  # fresh: health's word holds
    clock.now += 10  # no heartbeat for 10 s > 3 s
    assert board.stale
    assert [c.node_id for c in board.candidates("m:latest")] == ["c"]


def test_local_outcomes_feed_the_candidates() -> None:
    board = board_with(Clock())
    board.begin("a", interactive=True)
    board.begin("a", interactive=True)
    board.record("a", "m:latest", Attempt.NONE, 50.0)
    cand = next(c for c in board.candidates("m:latest") if c.node_id == "a")
    assert cand.local_inflight == 2 and cand.service_ms == 50.0 and cand.loaded
    assert [c.node_id for c in board.candidates("m:latest", background=True, background_threshold=2)] == ["b"]
    assert board.end("a", interactive=True) == 1


def test_static_list_is_ignored_once_health_answers() -> None:
    board = ScoreBoard()
    board.use_static([NodeView("s", "http://s")])
    assert board.source == "static" and board.known_models() is None
    board.apply_snapshot([NodeView("h", "http://h", models={})], 1, 3.0)
    board.use_static([NodeView("s", "http://s")])
    assert list(board.nodes) == ["h"]
