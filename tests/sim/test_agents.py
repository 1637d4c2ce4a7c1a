"""Tool calls, thinking, structured output and /v1/completions on the simulator, with the official clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import jsonschema
import ollama
import openai
import pytest

from sim.node import SimNode

LLM = "llama3.2:1b"
THINKER = "qwen3:0.6b"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": 1, "maximum": 9},
        "name": {"type": "string", "maxLength": 12},
        "ok": {"type": "boolean"},
        "level": {"type": "string", "enum": ["low", "high"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "inner": {"$ref": "#/$defs/Inner"},
    },
    "required": ["a", "name", "ok", "level", "tags", "score", "inner"],
    "additionalProperties": False,
    "$defs": {"Inner": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
}


@pytest.fixture
async def agent_node(make_node: Callable[..., Any]) -> SimNode:
    node: SimNode = await make_node(models=[LLM, THINKER])
    return node


async def test_tool_call_round_trip_unary_and_streamed(agent_node: SimNode) -> None:
    client = ollama.AsyncClient(host=agent_node.url)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Tokyo?"}]
    reply = await client.chat(LLM, messages=messages, tools=[WEATHER_TOOL])
    calls = reply.message.tool_calls
    assert calls and len(calls) == 1 and reply.message.content == ""
    call = calls[0]
    assert call.function.name == "get_weather" and call.function.arguments["city"] == "Tokyo"
    assert call.function.arguments["unit"] in ("celsius", "fahrenheit")
    async with aiohttp.ClientSession() as http:
        body = {"model": LLM, "messages": messages, "tools": [WEATHER_TOOL], "stream": False}
        async with http.post(f"{agent_node.url}/api/chat", json=body) as resp:
            raw = (await resp.json())["message"]["tool_calls"][0]
    assert len(raw["id"]) == 8 and raw["function"]["index"] == 0
    assert raw["function"]["arguments"] == dict(call.function.arguments)
    # Streamed: the same call, whole, in one chunk before the final one.
    parts = [p async for p in await client.chat(LLM, messages=messages, tools=[WEATHER_TOOL], stream=True)]
    streamed = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [c.model_dump() for c in streamed] == [c.model_dump() for c in calls]
    assert parts[-1].done and not parts[-1].message.tool_calls
    # The tool's result goes back; the model answers in text.
    messages += [
        reply.message,
        {"role": "tool", "content": "18 degrees and sunny", "tool_name": "get_weather"},
    ]
    final = await client.chat(LLM, messages=messages, tools=[WEATHER_TOOL])
    assert final.message.content and not final.message.tool_calls


async def test_no_tool_call_when_the_prompt_asks_for_none(agent_node: SimNode) -> None:
    client = ollama.AsyncClient(host=agent_node.url)
    reply = await client.chat(
        LLM, messages=[{"role": "user", "content": "Tell me a story"}], tools=[WEATHER_TOOL]
    )
    assert reply.message.content and not reply.message.tool_calls


async def test_thinking_by_default_off_and_levels(agent_node: SimNode) -> None:
    client = ollama.AsyncClient(host=agent_node.url)
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    reply = await client.chat(THINKER, messages=messages)
    assert reply.message.thinking and reply.message.content
    assert reply.eval_count and reply.eval_count > len(reply.message.content.split())
    parts = [p async for p in await client.chat(THINKER, messages=messages, stream=True)]
    kinds = ["t" if p.message.thinking else "c" for p in parts[:-1]]
    assert kinds == sorted(kinds, reverse=True) and "t" in kinds and "c" in kinds  # thinking first
    assert "".join(p.message.thinking or "" for p in parts) == reply.message.thinking
    assert "".join(p.message.content or "" for p in parts) == reply.message.content
    off = await client.chat(THINKER, messages=messages, think=False)
    assert not off.message.thinking and off.message.content
    for level in ("low", "medium", "high", "max"):
        leveled = await client.chat(THINKER, messages=messages, think=level)  # type: ignore[arg-type]
        assert leveled.message.thinking
    generated = await client.generate(THINKER, "Why is the sky blue?", think=True)
    assert generated.thinking and generated.response
    with pytest.raises(ollama.ResponseError) as refused:
        await client.generate(LLM, "hi", think="high")  # type: ignore[arg-type]
    assert refused.value.status_code == 400


async def test_format_schema_and_json(agent_node: SimNode) -> None:
    client = ollama.AsyncClient(host=agent_node.url)
    for prompt in ("Describe a cat", "Describe a dog", "Describe a bird"):
        reply = await client.chat(LLM, messages=[{"role": "user", "content": prompt}], format=SCHEMA)
        jsonschema.validate(json.loads(reply.message.content or ""), SCHEMA)
        generated = await client.generate(LLM, prompt, format=SCHEMA)
        jsonschema.validate(json.loads(generated.response or ""), SCHEMA)
    parts = [p async for p in await client.generate(LLM, "Describe a cat", format=SCHEMA, stream=True)]
    jsonschema.validate(json.loads("".join(p.response or "" for p in parts)), SCHEMA)
    assert isinstance(json.loads((await client.generate(LLM, "x", format="json")).response or ""), dict)
    primitive = {"type": "array", "items": {"type": "integer"}}
    jsonschema.validate(
        json.loads((await client.generate(LLM, "x", format=primitive)).response or ""), primitive
    )


async def test_openai_tools_reasoning_and_completions(agent_node: SimNode) -> None:
    client = openai.AsyncOpenAI(base_url=f"{agent_node.url}/v1", api_key="ollama")
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    tools: Any = [WEATHER_TOOL]
    reply = await client.chat.completions.create(model=LLM, messages=messages, tools=tools)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["city"] == "Paris"  # type: ignore[union-attr]
    stream = await client.chat.completions.create(model=LLM, messages=messages, tools=tools, stream=True)
    chunks = [c async for c in stream]
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function and deltas[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    thought = await client.chat.completions.create(
        model=THINKER, messages=[{"role": "user", "content": "hi"}]
    )
    assert getattr(thought.choices[0].message, "reasoning", None) and thought.choices[0].message.content
    done = await client.completions.create(model=LLM, prompt="Once upon a time", max_tokens=8)
    assert (
        done.object == "text_completion"
        and done.choices[0].text
        and done.choices[0].finish_reason == "length"
    )
    streamed = [
        c async for c in await client.completions.create(model=LLM, prompt="Once upon a time", stream=True)
    ]
    assert (
        "".join(c.choices[0].text for c in streamed if c.choices)
        == (await client.completions.create(model=LLM, prompt="Once upon a time")).choices[0].text
    )
    schema_reply = await client.chat.completions.create(
        model=LLM,
        messages=[{"role": "user", "content": "a record"}],
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}},
    )
    jsonschema.validate(json.loads(schema_reply.choices[0].message.content or ""), SCHEMA)


async def test_tools_on_a_model_without_tools_is_refused(make_node: Callable[..., Any]) -> None:
    # NOTE: every built-in completion model can call tools; this one completes text and nothing else.
    plain = {"name": "plain:1b", "size_bytes": 1_000_000_000, "capabilities": ["completion"]}
    node: SimNode = await make_node(models=["mistral:7b", "nomic-embed-text:v1.5", plain])
    async with aiohttp.ClientSession() as http:
        body = {"model": "nomic-embed-text:v1.5", "prompt": "x", "stream": False}
        async with http.post(f"{node.url}/v1/completions", json={**body}) as resp:
            assert resp.status == 400
        tool: dict[str, Any] = {"type": "function", **WEATHER_TOOL["function"]}
        question = [{"role": "user", "content": "What is the weather in Tokyo?"}]
        for path, request in (
            ("/api/chat", {"messages": question, "tools": [WEATHER_TOOL], "stream": False}),
            ("/v1/chat/completions", {"messages": question, "tools": [WEATHER_TOOL]}),
            ("/v1/responses", {"input": question, "tools": [tool]}),
        ):
            async with http.post(f"{node.url}{path}", json={"model": "plain:1b", **request}) as resp:
                assert resp.status == 400, (path, await resp.text())
                assert "does not support tools" in await resp.text(), path
            async with http.post(f"{node.url}{path}", json={"model": "mistral:7b", **request}) as resp:
                assert resp.status == 200, (path, await resp.text())


async def test_openai_responses_api(agent_node: SimNode) -> None:
    client = openai.AsyncOpenAI(base_url=f"{agent_node.url}/v1", api_key="ollama")
    tool: Any = {"type": "function", **WEATHER_TOOL["function"]}
    reply = await client.responses.create(model=LLM, input="What is the weather in Lima?", tools=[tool])
    calls: list[Any] = [i for i in reply.output if i.type == "function_call"]
    assert len(calls) == 1 and json.loads(calls[0].arguments)["city"] == "Lima"
    follow_up: Any = [
        {"role": "user", "content": "What is the weather in Lima?"},
        {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": "get_weather",
            "arguments": calls[0].arguments,
        },
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "warm"},
    ]
    answer = await client.responses.create(model=LLM, input=follow_up, tools=[tool])
    assert answer.output_text and answer.status == "completed"
    events = [
        e async for e in await client.responses.create(model=LLM, input=follow_up, stream=True, tools=[tool])
    ]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == answer.output_text
    thought = await client.responses.create(model=THINKER, input="hi")
    assert [i for i in thought.output if i.type == "reasoning"] and thought.output_text
    short = await client.responses.create(model=LLM, input="Tell me a story", max_output_tokens=3)
    assert short.status == "incomplete"


async def test_pydantic_schemas_as_applications_send_them(agent_node: SimNode) -> None:
    """`format=Model.model_json_schema()` (ollama) and `chat.completions.parse` (openai, strict $defs)."""
    from pydantic import BaseModel

    class Address(BaseModel):
        city: str
        zip_code: int

    class Person(BaseModel):
        name: str
        age: int
        tags: list[str]
        address: Address
        nickname: str | None = None

    ollama_client = ollama.AsyncClient(host=agent_node.url)
    reply = await ollama_client.chat(
        LLM, messages=[{"role": "user", "content": "A person"}], format=Person.model_json_schema()
    )
    assert Person.model_validate_json(reply.message.content or "").address.city
    client = openai.AsyncOpenAI(base_url=f"{agent_node.url}/v1", api_key="ollama")
    parsed = await client.chat.completions.parse(
        model=LLM, messages=[{"role": "user", "content": "A person"}], response_format=Person
    )
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person) and isinstance(person.address.zip_code, int)


async def test_responses_take_reasoning_items_back_as_input(agent_node: SimNode) -> None:
    """A client sending a reply's output back as input includes its reasoning item (as Ollama takes it)."""
    client = openai.AsyncOpenAI(base_url=f"{agent_node.url}/v1", api_key="ollama")
    thought = await client.responses.create(model=THINKER, input="hi")
    history: list[Any] = [{"role": "user", "content": "hi"}]
    history += [item.model_dump(exclude_none=True) for item in thought.output]
    history.append({"role": "user", "content": "and then?"})
    assert [item["type"] for item in history[1:-1]] == ["reasoning", "message"]
    answer = await client.responses.create(model=THINKER, input=history)
    assert answer.status == "completed" and answer.output_text
