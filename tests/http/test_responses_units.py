"""/v1/responses translation (no I/O): reasoning input items, and output items in the order produced."""

from __future__ import annotations

from typing import Any

import pytest
from corral.v1 import common_pb2 as cpb

from services.router.http.errors import ApiError
from services.router.http.responses_api import ResponseBuilder, parse_responses


def _messages(items: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    spec, _ = parse_responses({"model": "m", "input": items})
    return [(m.role, m.content, m.thinking, len(m.tool_calls)) for m in spec.messages]


def test_a_reasoning_item_is_the_thinking_of_the_next_assistant_message() -> None:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "let me think"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ]
    assert _messages(items) == [
        ("user", "q", "", 0),
        ("assistant", "a", "let me think", 0),
        ("user", "q2", "", 0),
    ]


def test_a_reasoning_item_with_a_summary_only_goes_with_the_next_function_call() -> None:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "use the tool"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    assert _messages(items) == [
        ("user", "q", "", 0),
        ("assistant", "", "use the tool", 1),
        ("tool", "42", "", 0),
    ]


def test_a_trailing_reasoning_item_is_an_assistant_turn_of_its_own() -> None:
    items = [{"role": "user", "content": "q"}, {"type": "reasoning", "encrypted_content": "t"}]
    assert _messages(items) == [("user", "q", "", 0), ("assistant", "", "t", 0)]


def test_a_malformed_reasoning_item_is_refused_by_field() -> None:
    with pytest.raises(ApiError) as caught:
        _messages([{"role": "user", "content": "q"}, {"type": "reasoning", "summary": "x"}])
    assert caught.value.status == 400 and "input[1].summary" in caught.value.message


def _stream(pieces: list[cpb.ChatMessage]) -> tuple[ResponseBuilder, list[dict[str, Any]]]:
    builder = ResponseBuilder(cpb.ChatSpec(model="m"))
    events = builder.start()
    for piece in pieces:
        events += builder.add(piece)
    events += builder.finish(cpb.GenerationStats(), "stop")
    return builder, events


def test_thinking_after_text_opens_a_new_reasoning_item() -> None:
    _, events = _stream(
        [
            cpb.ChatMessage(thinking="a"),
            cpb.ChatMessage(content="b"),
            cpb.ChatMessage(thinking="c"),
            cpb.ChatMessage(content="d"),
        ]
    )
    closed: set[str] = set()
    added: list[str] = []
    for event in events:
        if event["type"] == "response.output_item.added":
            added.append(event["item"]["id"])
            assert event["output_index"] == len(added) - 1
        elif event["type"] == "response.output_item.done":
            closed.add(event["item"]["id"])
        elif "item_id" in event:
            # NOTE: no delta or done event ever names an item already closed.
            assert event["item_id"] not in closed, event
            assert added.index(event["item_id"]) == event["output_index"]
    assert len(added) == len(set(added)) == 4
    assert closed == set(added)
    final = events[-1]["response"]
    assert [(o["type"], o.get("summary") or o.get("content")) for o in final["output"]] == [
        ("reasoning", [{"type": "summary_text", "text": "a"}]),
        ("message", [{"type": "output_text", "text": "b", "annotations": [], "logprobs": []}]),
        ("reasoning", [{"type": "summary_text", "text": "c"}]),
        ("message", [{"type": "output_text", "text": "d", "annotations": [], "logprobs": []}]),
    ]


def test_text_after_a_tool_call_opens_a_new_message_item() -> None:
    call = cpb.ToolCall(id="x", name="f")
    _, events = _stream(
        [cpb.ChatMessage(content="a"), cpb.ChatMessage(tool_calls=[call]), cpb.ChatMessage(content="b")]
    )
    types = [o["type"] for o in events[-1]["response"]["output"]]
    assert types == ["message", "function_call", "message"]
    ids = [o["id"] for o in events[-1]["response"]["output"]]
    assert len(set(ids)) == 3


def test_a_streamed_answer_in_one_piece_each_keeps_its_ids() -> None:
    builder, events = _stream([cpb.ChatMessage(thinking="t"), cpb.ChatMessage(content="x")])
    output = events[-1]["response"]["output"]
    suffix = builder.id[len("resp_") :]
    assert [o["id"] for o in output] == [f"rs_{suffix}", f"msg_{suffix}"]
