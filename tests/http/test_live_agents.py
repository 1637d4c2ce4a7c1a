"""Must-show: agents and structured output through the router, with the official ollama and openai clients.

Tool-call round trips (streamed and not), thinking, output validated against its JSON Schema,
`/v1/completions`, `context`, and cached answers that keep their tool calls and thinking.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import ollama
import openai
import pytest
import pytest_asyncio

from devstack.postgres import PostgresServer  # noqa: F401 - fixture types
from devstack.redis import RedisServer
from tests.helpers.polling import wait_for as wait_until
from tests.http.live import EMBED_MODEL, LiveStack, start_live_stack

MODEL = "llama3.2:1b"
THINKER = "qwen3:0.6b"
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "a": {"type": "integer"},
        "name": {"type": "string", "maxLength": 20},
        "colour": {"type": "string", "enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "ok": {"type": "boolean"},
    },
    "required": ["a", "name", "colour", "tags", "ok"],
    "additionalProperties": False,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[LiveStack]:
    live = await start_live_stack(
        redis_url=redis_server.url,
        postgres_dsn=migrated_dsn,
        fleet_nodes=2,
        fleet_models=f"{MODEL},{THINKER},{EMBED_MODEL}",
    )
    try:
        async with aiohttp.ClientSession(base_url=live.base_url) as http:

            async def knows_models() -> bool:
                body = {"model": THINKER, "prompt": "", "stream": False}
                async with http.post("/api/generate", json=body) as resp:
                    return resp.status == 200

            await wait_until(knows_models, timeout_s=20)
        yield live
    finally:
        await live.close()


def _bypass() -> dict[str, str]:
    return {"X-Corral-Cache-Mode": "bypass"}


async def test_ollama_tool_call_round_trip(stack: LiveStack) -> None:
    client = ollama.AsyncClient(host=stack.base_url, headers=_bypass())
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Tokyo?"}]
    reply = await client.chat(MODEL, messages=messages, tools=[WEATHER_TOOL])
    calls = reply.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert calls[0].function.arguments["city"] == "Tokyo"
    parts = [p async for p in await client.chat(MODEL, messages=messages, tools=[WEATHER_TOOL], stream=True)]
    streamed = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [c.model_dump() for c in streamed] == [c.model_dump() for c in calls]
    assert parts[-1].done
    messages += [reply.message, {"role": "tool", "content": "18 degrees, sunny", "tool_name": "get_weather"}]
    final = await client.chat(MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert final.message.content and not final.message.tool_calls
    streamed_final = [p async for p in await client.chat(MODEL, messages=messages, stream=True)]
    assert "".join(p.message.content or "" for p in streamed_final) and not any(
        p.message.tool_calls for p in streamed_final
    )


async def test_ollama_thinking(stack: LiveStack) -> None:
    client = ollama.AsyncClient(host=stack.base_url, headers=_bypass())
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    reply = await client.chat(THINKER, messages=messages, think=True)
    assert reply.message.thinking and reply.message.content
    parts = [p async for p in await client.chat(THINKER, messages=messages, think=True, stream=True)]
    first_content = next(i for i, p in enumerate(parts) if p.message.content)
    assert all(p.message.thinking for p in parts[:first_content]) and first_content > 0
    assert "".join(p.message.thinking or "" for p in parts) == reply.message.thinking
    off = await client.chat(THINKER, messages=messages, think=False)
    assert off.message.content and not off.message.thinking
    generated = await client.generate(THINKER, "Why is the sky blue?", think="high")  # type: ignore[arg-type]
    assert generated.thinking and generated.response
    with pytest.raises(ollama.ResponseError) as refused:
        await client.chat(MODEL, messages=messages, think=True)
    assert refused.value.status_code == 400 and "does not support thinking" in refused.value.error


async def test_ollama_structured_output_and_context(stack: LiveStack) -> None:
    client = ollama.AsyncClient(host=stack.base_url, headers=_bypass())
    reply = await client.chat(MODEL, messages=[{"role": "user", "content": "A record"}], format=SCHEMA)
    jsonschema.validate(json.loads(reply.message.content or ""), SCHEMA)
    parts = [p async for p in await client.generate(MODEL, "A record", format=SCHEMA, stream=True)]
    jsonschema.validate(json.loads("".join(p.response or "" for p in parts)), SCHEMA)
    assert isinstance(json.loads((await client.generate(MODEL, "x", format="json")).response or ""), dict)
    first = await client.generate(MODEL, "My name is Ada.")
    assert first.context and all(isinstance(t, int) for t in first.context)
    second = await client.generate(MODEL, "What is my name?", context=first.context)
    assert second.context and second.context[: len(first.context)] == first.context
    streamed = [
        p async for p in await client.generate(MODEL, "What is my name?", context=first.context, stream=True)
    ]
    assert streamed[-1].context == second.context
    assert "".join(p.response or "" for p in streamed) == second.response


async def test_openai_tools_reasoning_schema_and_completions(stack: LiveStack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="x", default_headers=_bypass())
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    tools: Any = [WEATHER_TOOL]
    reply = await client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call: Any = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris"
    chunks = [
        c
        async for c in await client.chat.completions.create(
            model=MODEL, messages=messages, tools=tools, stream=True
        )
    ]
    deltas: list[Any] = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"
    assert json.loads(deltas[0].function.arguments) == json.loads(call.function.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"},
    ]
    final = await client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    assert final.choices[0].message.content and final.choices[0].finish_reason == "stop"
    thought = await client.chat.completions.create(
        model=THINKER, messages=[{"role": "user", "content": "hi"}]
    )
    assert getattr(thought.choices[0].message, "reasoning", None) and thought.choices[0].message.content
    streamed_thought = [
        c
        async for c in await client.chat.completions.create(
            model=THINKER, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    ]
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning", None) or "" for c in streamed_thought if c.choices
    )
    assert reasoning == getattr(thought.choices[0].message, "reasoning", None)
    shaped = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A record"}],
        response_format={"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA}},
    )
    jsonschema.validate(json.loads(shaped.choices[0].message.content or ""), SCHEMA)
    done = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6)
    assert done.object == "text_completion" and done.choices[0].text
    assert done.choices[0].finish_reason == "length" and done.usage and done.usage.completion_tokens == 6
    whole = await client.completions.create(model=MODEL, prompt="Once upon a time")
    pieces = [
        c async for c in await client.completions.create(model=MODEL, prompt="Once upon a time", stream=True)
    ]
    assert "".join(c.choices[0].text for c in pieces if c.choices) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "stop"


async def test_cached_answers_keep_tool_calls_thinking_and_context(stack: LiveStack) -> None:
    """A cache hit replays tool calls, thinking and context; tools, think and format are in the key."""
    async with aiohttp.ClientSession(base_url=stack.base_url) as http:

        async def ask(path: str, body: dict[str, Any]) -> tuple[str, dict[str, Any] | list[dict[str, Any]]]:
            async with http.post(path, json=body) as resp:
                assert resp.status == 200, await resp.text()
                outcome = resp.headers.get("X-Corral-Cache", "")
                if body.get("stream") is False:
                    return outcome, await resp.json()
                return outcome, [json.loads(line) for line in (await resp.text()).splitlines()]

        tool_chat = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Weather in Oslo, please?"}],
            "tools": [WEATHER_TOOL],
            "stream": False,
        }
        outcome, live = await ask("/api/chat", tool_chat)
        assert outcome == "miss" and isinstance(live, dict) and live["message"]["tool_calls"]

        async def hit() -> bool:
            return (await ask("/api/chat", tool_chat))[0] == "exact-hit"

        await wait_until(hit, timeout_s=10)
        _, cached = await ask("/api/chat", tool_chat)
        assert isinstance(cached, dict) and cached["message"]["tool_calls"] == live["message"]["tool_calls"]
        _, replayed = await ask("/api/chat", {**tool_chat, "stream": True})
        assert isinstance(replayed, list)
        assert [c for line in replayed for c in line["message"].get("tool_calls", [])] == live["message"][
            "tool_calls"
        ]
        # The same question without tools is another request: a text answer, not the cached call.
        outcome, plain = await ask("/api/chat", {**tool_chat, "tools": []})
        assert outcome == "miss" and isinstance(plain, dict) and "tool_calls" not in plain["message"]
        # A tool request is never answered from the semantic tier, even when asked to.
        async with http.post(
            "/api/chat",
            json={**tool_chat, "messages": [{"role": "user", "content": "Weather in Oslo please"}]},
            headers={"X-Corral-Cache-Mode": "semantic"},
        ) as resp:
            assert resp.headers.get("X-Corral-Cache") != "semantic-hit"

        think_chat = {
            "model": THINKER,
            "messages": [{"role": "user", "content": "Think it over"}],
            "stream": False,
        }
        _, thought = await ask("/api/chat", think_chat)

        async def think_hit() -> bool:
            return (await ask("/api/chat", think_chat))[0] == "exact-hit"

        await wait_until(think_hit, timeout_s=10)
        _, again = await ask("/api/chat", think_chat)
        assert isinstance(thought, dict) and isinstance(again, dict)
        assert (
            again["message"]["thinking"] == thought["message"]["thinking"] and thought["message"]["thinking"]
        )
        outcome, unthought = await ask("/api/chat", {**think_chat, "think": False})
        assert outcome == "miss" and isinstance(unthought, dict) and "thinking" not in unthought["message"]
        outcome, shaped = await ask("/api/chat", {**think_chat, "think": False, "format": SCHEMA})
        assert outcome == "miss" and isinstance(shaped, dict)
        jsonschema.validate(json.loads(shaped["message"]["content"]), SCHEMA)

        gen = {"model": MODEL, "prompt": "Remember the number seven.", "stream": False}
        _, first = await ask("/api/generate", gen)

        async def gen_hit() -> bool:
            return (await ask("/api/generate", gen))[0] == "exact-hit"

        await wait_until(gen_hit, timeout_s=10)
        _, cached_gen = await ask("/api/generate", gen)
        assert isinstance(first, dict) and isinstance(cached_gen, dict)
        assert cached_gen["context"] == first["context"] and first["context"]
        _, replayed_gen = await ask("/api/generate", {**gen, "stream": True})
        assert isinstance(replayed_gen, list) and replayed_gen[-1]["context"] == first["context"]
        outcome, _ = await ask("/api/generate", {**gen, "context": first["context"]})
        assert outcome == "miss"


async def test_openai_responses_api(stack: LiveStack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="x", default_headers=_bypass())
    tools: Any = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    reply = await client.responses.create(model=MODEL, input="What is the weather in Rome?", tools=tools)
    calls: list[Any] = [item for item in reply.output if item.type == "function_call"]
    assert reply.status == "completed" and len(calls) == 1
    assert calls[0].name == "get_weather" and json.loads(calls[0].arguments)["city"] == "Rome"
    follow_up: Any = [
        {"role": "user", "content": "What is the weather in Rome?"},
        {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": "get_weather",
            "arguments": calls[0].arguments,
        },
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees, sunny"},
    ]
    answer = await client.responses.create(model=MODEL, input=follow_up, tools=tools)
    assert answer.output_text and not [i for i in answer.output if i.type == "function_call"]
    events = [
        e async for e in await client.responses.create(model=MODEL, input=follow_up, tools=tools, stream=True)
    ]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == answer.output_text
    streamed_calls = [
        e
        async for e in await client.responses.create(
            model=MODEL, input="What is the weather in Rome?", tools=tools, stream=True
        )
        if e.type == "response.function_call_arguments.done"
    ]
    assert [json.loads(e.arguments) for e in streamed_calls] == [json.loads(calls[0].arguments)]
    thought = await client.responses.create(
        model=THINKER, input="Why is the sky blue?", instructions="Be brief."
    )
    reasoning: list[Any] = [item for item in thought.output if item.type == "reasoning"]
    assert reasoning and reasoning[0].summary[0].text and thought.output_text
    # NOTE: the reply's output sent back as history, reasoning item included (its thinking goes with
    # the assistant message after it).
    history: list[Any] = [{"role": "user", "content": "Why is the sky blue?"}]
    history += [item.model_dump(exclude_none=True) for item in thought.output]
    history.append({"role": "user", "content": "And at sunset?"})
    again = await client.responses.create(model=THINKER, input=history)
    assert again.status == "completed" and again.output_text
    shaped = await client.responses.create(
        model=MODEL,
        input="A record",
        text={"format": {"type": "json_schema", "name": "record", "schema": SCHEMA}},
    )
    jsonschema.validate(json.loads(shaped.output_text), SCHEMA)
    short = await client.responses.create(model=MODEL, input="Tell me a story", max_output_tokens=4)
    assert short.status == "incomplete" and short.usage and short.usage.output_tokens == 4


async def test_pydantic_structured_output_through_the_router(stack: LiveStack) -> None:
    """What applications send: `format=Model.model_json_schema()` and openai's `parse` (strict, $defs)."""
    from pydantic import BaseModel

    class Address(BaseModel):
        city: str
        zip_code: int

    class Person(BaseModel):
        name: str
        age: int
        tags: list[str]
        address: Address

    reply = await ollama.AsyncClient(host=stack.base_url, headers=_bypass()).chat(
        MODEL, messages=[{"role": "user", "content": "A person"}], format=Person.model_json_schema()
    )
    assert Person.model_validate_json(reply.message.content or "").address.city
    client = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="x", default_headers=_bypass())
    parsed = await client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "A person"}], response_format=Person
    )
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person) and isinstance(person.address.zip_code, int)
