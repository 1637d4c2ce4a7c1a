"""Unit tests of the protobuf <-> Ollama JSON translation and of answer assembly."""

from __future__ import annotations

import base64

from corral.v1 import common_pb2, router_service_pb2
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from services.router.answers import Assembler, chat_chunks, generate_chunks, split_text
from services.router.core import affinity_key, flight_key, semantic_eligible
from services.router.forward import Final, Piece
from services.router.translate import (
    chat_body,
    embed_body,
    generate_body,
    stats_from,
    timestamp_from,
    tool_calls_from,
)


def test_generate_body_maps_every_field() -> None:
    extra = struct_pb2.Struct()
    extra.update({"mirostat": 2})
    spec = common_pb2.GenerateSpec(
        model="llama3.2:1b",
        prompt="p",
        system="s",
        suffix="x",
        images=[b"\x00\x01"],
        format='{"type":"object"}',
        think=common_pb2.THINK_MODE_HIGH,
        keep_alive=duration_pb2.Duration(seconds=300),
        options=common_pb2.ModelOptions(temperature=0.7, num_predict=8, stop=["\n"], extra=extra),
    )
    body = generate_body(spec)
    assert body == {
        "model": "llama3.2:1b",
        "prompt": "p",
        "stream": True,
        "suffix": "x",
        "system": "s",
        "images": [base64.b64encode(b"\x00\x01").decode()],
        "options": {"temperature": 0.7, "num_predict": 8, "stop": ["\n"], "mirostat": 2},
        "keep_alive": 300,
        "format": {"type": "object"},
        "think": "high",
    }


def test_context_and_think_max_travel_and_come_back() -> None:
    spec = common_pb2.GenerateSpec(model="m", prompt="p", context=[1, 2, 3], think=common_pb2.THINK_MODE_MAX)
    body = generate_body(spec)
    assert body["context"] == [1, 2, 3] and body["think"] == "max"
    assert "context" not in generate_body(common_pb2.GenerateSpec(model="m", prompt="p"))
    final = Final(
        done_reason="stop",
        stats=common_pb2.GenerationStats(),
        routing=common_pb2.RoutingInfo(),
        context=[1, 2, 3, 4],
    )
    answer = Assembler("m", chat=False).finish(final)
    assert isinstance(answer, router_service_pb2.GenerateResponse) and list(answer.context) == [1, 2, 3, 4]
    assert list(list(generate_chunks(answer, replay=True))[-1].context) == [1, 2, 3, 4]


def test_tool_requests_never_use_the_semantic_tier() -> None:
    tool = common_pb2.Tool(type="function", function=common_pb2.ToolFunction(name="get_weather"))
    spec = common_pb2.ChatSpec(
        model="m", messages=[common_pb2.ChatMessage(role="user", content="weather?")], tools=[tool]
    )
    semantic = common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_SEMANTIC)
    assert not semantic_eligible(spec, semantic)
    del spec.tools[:]
    assert semantic_eligible(spec, semantic)


def test_keep_alive_forms() -> None:
    forever = generate_body(common_pb2.GenerateSpec(model="m", keep_alive=duration_pb2.Duration(seconds=-1)))
    assert forever["keep_alive"] == -1
    zero = generate_body(common_pb2.GenerateSpec(model="m", keep_alive=duration_pb2.Duration()))
    assert zero["keep_alive"] == 0
    half = generate_body(
        common_pb2.GenerateSpec(model="m", keep_alive=duration_pb2.Duration(nanos=500_000_000))
    )
    assert half["keep_alive"] == 0.5
    assert "keep_alive" not in generate_body(common_pb2.GenerateSpec(model="m"))


def test_chat_body_with_tools_and_tool_calls() -> None:
    args = struct_pb2.Struct()
    args.update({"city": "Tokyo"})
    params = struct_pb2.Struct()
    params.update({"type": "object"})
    spec = common_pb2.ChatSpec(
        model="m",
        messages=[
            common_pb2.ChatMessage(role="User", content="weather?"),
            common_pb2.ChatMessage(
                role="assistant",
                tool_calls=[common_pb2.ToolCall(id="abc", name="get_weather", arguments=args)],
            ),
            common_pb2.ChatMessage(role="tool", content="sunny", tool_name="get_weather", tool_call_id="abc"),
        ],
        tools=[common_pb2.Tool(function=common_pb2.ToolFunction(name="get_weather", parameters=params))],
        think=common_pb2.THINK_MODE_OFF,
    )
    body = chat_body(spec, stream=False)
    assert body["stream"] is False and body["think"] is False
    assert body["messages"][0] == {"role": "user", "content": "weather?"}
    call = body["messages"][1]["tool_calls"][0]
    assert call == {
        "id": "abc",
        "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}},
    }
    assert body["messages"][2]["tool_call_id"] == "abc"
    assert body["tools"][0]["type"] == "function"
    assert body["tools"][0]["function"]["parameters"] == {"type": "object"}


def test_embed_body() -> None:
    req = router_service_pb2.EmbedRequest(model="e", inputs=["a", "b"], truncate=False, dimensions=64)
    assert embed_body(req, ["a"]) == {"model": "e", "input": ["a"], "truncate": False, "dimensions": 64}


def test_stats_and_timestamps() -> None:
    stats = stats_from({"total_duration": 1_500_000_000, "eval_count": 7, "prompt_eval_count": 3})
    assert stats.total_duration.seconds == 1 and stats.total_duration.nanos == 500_000_000
    assert stats.eval_count == 7 and stats.prompt_eval_count == 3
    stamp = timestamp_from("2024-09-12T21:17:29.110811123Z")
    assert stamp.seconds == 1726175849 and stamp.nanos == 110811123
    assert timestamp_from("garbage").seconds > 0


def test_tool_calls_from_accepts_string_arguments() -> None:
    calls = tool_calls_from([{"function": {"name": "f", "arguments": '{"a": 1}'}}])
    assert calls[0].name == "f" and dict(calls[0].arguments) == {"a": 1.0}


def test_assembler_and_stream_replay() -> None:
    asm = Assembler("m", chat=True)
    asm.add(Piece(text="Hello "))
    asm.add(Piece(text="world", tool_calls=[{"function": {"name": "f", "arguments": {}}}]))
    final = Final("stop", common_pb2.GenerationStats(eval_count=2), common_pb2.RoutingInfo(node_id="n1"))
    answer = asm.finish(final)
    assert isinstance(answer, router_service_pb2.ChatResponse)
    assert answer.message.content == "Hello world" and answer.message.tool_calls[0].name == "f"
    chunks = list(chat_chunks(answer, replay=True))
    assert "".join(c.message.content for c in chunks) == "Hello world"
    assert chunks[-1].done and chunks[-1].routing.node_id == "n1"
    assert [c.done for c in chat_chunks(answer, replay=False)] == [True]
    gen = router_service_pb2.GenerateResponse(model="m", response="word " * 40, done_reason="stop")
    replay = list(generate_chunks(gen, replay=True))
    assert len(replay) > 2 and "".join(c.response for c in replay) == "word " * 40


def test_split_text_cuts_after_spaces() -> None:
    parts = split_text("aaa bbb ccc", size=5)
    assert parts == ["aaa ", "bbb ", "ccc"]
    assert split_text("x" * 10, size=4) == ["xxxx", "xxxx", "xx"]
    assert split_text("") == []


def test_affinity_key() -> None:
    msgs = [
        common_pb2.ChatMessage(role="system", content="s"),
        common_pb2.ChatMessage(role="user", content="q"),
    ]
    turn1 = common_pb2.ChatSpec(model="m", messages=msgs)
    turn2 = common_pb2.ChatSpec(
        model="m",
        messages=[
            *msgs,
            common_pb2.ChatMessage(role="assistant", content="a"),
            common_pb2.ChatMessage(role="user", content="q2"),
        ],
    )
    assert affinity_key(turn1, "") == affinity_key(turn2, "")
    assert affinity_key(turn1, "sess") == "s:sess"
    assert affinity_key(common_pb2.GenerateSpec(model="m", prompt="p"), "") is None


def test_flight_key_separates_tenants_and_specs() -> None:
    spec = common_pb2.GenerateSpec(model="m", prompt="p")
    policy = common_pb2.CachePolicy()
    assert flight_key("a", spec, policy) == flight_key(
        "a", common_pb2.GenerateSpec(model="m", prompt="p"), policy
    )
    assert flight_key("a", spec, policy) != flight_key("b", spec, policy)
    assert flight_key("a", spec, policy) != flight_key(
        "a", common_pb2.GenerateSpec(model="m", prompt="q"), policy
    )


def test_semantic_eligible_follows_the_cache_policy() -> None:
    cold = common_pb2.GenerateSpec(model="m", prompt="p", options=common_pb2.ModelOptions(temperature=0))
    warm = common_pb2.GenerateSpec(model="m", prompt="p", options=common_pb2.ModelOptions(temperature=0.7))
    unset = common_pb2.GenerateSpec(model="m", prompt="p")

    def mode(value: int) -> common_pb2.CachePolicy:
        return common_pb2.CachePolicy(mode=value)  # type: ignore[arg-type]

    assert semantic_eligible(cold, common_pb2.CachePolicy())
    assert not semantic_eligible(warm, common_pb2.CachePolicy())
    assert not semantic_eligible(unset, common_pb2.CachePolicy())
    assert semantic_eligible(warm, mode(common_pb2.CACHE_MODE_SEMANTIC))
    assert not semantic_eligible(cold, mode(common_pb2.CACHE_MODE_EXACT))


def test_quick_stamps_and_stats_match_the_library() -> None:
    for text in ("2024-09-12T21:17:29Z", "2024-09-12T21:17:29.1+02:00", "2024-09-12T21:17:29.123456-05:30"):
        expected = timestamp_pb2.Timestamp()
        expected.FromJsonString(text)
        assert timestamp_from(text) == expected
    stats = stats_from({"eval_count": 2})
    assert stats.HasField("eval_duration") and stats.eval_duration.ToNanoseconds() == 0
