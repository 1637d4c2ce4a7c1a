"""Must-show: the official ollama and openai clients, unchanged but for the base URL, against a live stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
import ollama
import openai
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.postgres import PostgresServer  # noqa: F401 - fixture types
from devstack.redis import RedisServer
from tests.helpers.polling import wait_for as wait_until
from tests.http.live import EMBED_MODEL, LiveStack, start_live_stack
from tests.http.malformed import ENDPOINTS, raw_body_for

MODEL = "llama3.2:1b"
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[LiveStack]:
    live = await start_live_stack(
        redis_url=redis_server.url, postgres_dsn=migrated_dsn, solo_time_scales=(1.0,)
    )
    try:
        async with aiohttp.ClientSession(base_url=live.base_url) as http:

            async def knows_models() -> bool:
                body = {"model": "no-such-model", "prompt": "x", "stream": False}
                async with http.post("/api/generate", json=body) as resp:
                    return resp.status == 404

            await wait_until(knows_models, timeout_s=20)
        yield live
    finally:
        await live.close()


async def node_requests(stack: LiveStack) -> int:
    """Inference requests the nodes have served so far (from the simulators' admin API)."""
    total = 0
    async with aiohttp.ClientSession() as http:
        for node in stack.nodes:
            try:
                async with http.get(node.admin_url + "/_sim/stats") as resp:
                    routes = (await resp.json())["requests_by_route"]
            except aiohttp.ClientError:
                continue
            total += sum(v for k, v in routes.items() if k in ("/api/generate", "/api/chat", "/api/embed"))
    return total


async def test_ollama_client_chat_generate_embed_list(stack: LiveStack) -> None:
    client = ollama.AsyncClient(host=stack.base_url)
    listing = await client.list()
    names = {m.model for m in listing.models}
    assert {MODEL, EMBED_MODEL} <= names
    reply = await client.chat(model=MODEL, messages=[{"role": "user", "content": "name a colour"}])
    assert (
        reply.message.role == "assistant"
        and reply.message.content
        and reply.done_reason in ("stop", "length")
    )
    assert reply.eval_count and reply.total_duration
    parts = [
        part
        async for part in await client.chat(
            model=MODEL, messages=[{"role": "user", "content": "tell me a story"}], stream=True
        )
    ]
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts).strip()
    gen = await client.generate(model=MODEL, prompt="why is the sky blue?")
    assert gen.response and gen.done
    pieces = [p async for p in await client.generate(model=MODEL, prompt="count to five", stream=True)]
    assert pieces[-1].done and "".join(p.response or "" for p in pieces).strip()
    embedded = await client.embed(model=EMBED_MODEL, input=["first text", "second text"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 768
    legacy = await client.embeddings(model=EMBED_MODEL, prompt="first text")
    assert len(legacy.embedding) == 768
    ps = await client.ps()
    assert any(m.model == MODEL for m in ps.models)
    show = await client.show(MODEL)
    assert show.capabilities and "completion" in show.capabilities
    load = await client.generate(model=MODEL)
    assert load.done_reason == "load"
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404 and info.value.error == "model 'no-such-model' not found"


async def test_openai_client_chat_embed_models(stack: LiveStack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "name a fruit"}], max_tokens=20
    )
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "say hello"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text.strip()
    embedded = await client.embeddings.create(model=EMBED_MODEL, input=["a", "b", "c"])
    assert [d.index for d in embedded.data] == [0, 1, 2] and len(embedded.data[0].embedding) == 768
    models = await client.models.list()
    assert MODEL in {m.id for m in models.data}
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    await client.close()


async def test_repeated_question_is_a_cache_hit(stack: LiveStack) -> None:
    client = ollama.AsyncClient(host=stack.base_url)
    oai = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)
    before = await stack.cache_stats()
    question = "What is the capital of the cache test country?"
    first = await client.generate(model=MODEL, prompt=question, options={"temperature": 0})
    messages = [{"role": "user", "content": "Which colour is the cache test sky?"}]
    first_chat = await oai.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]

    async def stored() -> bool:
        return (await stack.cache_stats()).exact.stores >= before.exact.stores + 2

    await wait_until(stored, timeout_s=10)
    served = await node_requests(stack)
    again = await client.generate(model=MODEL, prompt=question, options={"temperature": 0})
    again_chat = await oai.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert again.response == first.response
    assert again_chat.choices[0].message.content == first_chat.choices[0].message.content
    assert await node_requests(stack) == served
    assert (await stack.cache_stats()).exact.hits >= before.exact.hits + 2
    async with aiohttp.ClientSession(base_url=stack.base_url) as http:
        body = {"model": MODEL, "prompt": question, "options": {"temperature": 0}, "stream": False}
        async with http.post("/api/generate", json=body) as resp:
            assert resp.headers["X-Corral-Cache"] == "exact-hit"
    await oai.close()


async def test_generated_malformed_bodies_against_the_router(stack: LiveStack) -> None:
    @st.composite
    def requests(draw: st.DrawFn) -> tuple[str, bytes]:
        path = draw(st.sampled_from(ENDPOINTS))
        return path, draw(raw_body_for(path))

    failures: list[tuple[str, bytes, int, str]] = []

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request=requests())
    def run(request: tuple[str, bytes]) -> None:
        path, body = request
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            resp = client.post(path, content=body)
        if resp.status_code >= 500:
            failures.append((path, body, resp.status_code, resp.text))
        elif resp.status_code >= 400:
            assert "error" in resp.json()

    await asyncio.to_thread(run)
    assert not failures, failures[:3]


async def test_failover_when_a_node_is_killed_mid_stream(stack: LiveStack) -> None:
    solo = stack.nodes[-1]
    others = [n.node_id for n in stack.nodes[:-1]]
    # NOTE: the router prefers nodes with the model loaded; loading it on every node (not only on the
    # solo one) lets the undrained nodes take requests again whether or not other tests loaded it.
    async with aiohttp.ClientSession() as http:
        for node in stack.nodes:
            async with http.post(node.url + "/api/generate", json={"model": MODEL}) as resp:
                assert resp.status == 200
    client = ollama.AsyncClient(host=stack.base_url)
    async with aiohttp.ClientSession(base_url=stack.base_url) as http:

        async def routed(to_solo: bool) -> bool:
            body = {"model": MODEL, "prompt": "ping", "stream": False, "options": {"num_predict": 1}}
            headers = {"X-Corral-Cache-Mode": "bypass"}
            async with http.post("/api/generate", json=body, headers=headers) as resp:
                return (resp.headers.get("X-Corral-Node") == solo.node_id) == to_solo

        # NOTE: the other nodes take requests before the drain (they have the model loaded and the
        # router knows it), so that taking them back after the undrain below is this test's doing.
        await wait_until(lambda: routed(False), timeout_s=20, what="requests routed to the other nodes")
        # NOTE: draining the other nodes makes the router start the stream on the solo node.
        await stack.drain(others, True)
        try:
            await wait_until(lambda: routed(True), timeout_s=10)
            # NOTE: the stream has to outlive the undrain and the wait for routing to come back below; a
            # natural answer (20-60 tokens) takes 0.3-1 s at time scale 1, 17-50 s at 50x slower.
            async with http.post(solo.admin_url + "/_sim/faults", json={"slow_factor": 50}) as resp:
                assert resp.status == 200, await resp.text()
            stream = await client.chat(
                model=MODEL,
                messages=[{"role": "user", "content": "write a long essay about failover"}],
                options={"num_predict": 400, "seed": 7},
                stream=True,
            )
            parts = [await anext(stream)]
        finally:
            await stack.drain(others, False)
        await wait_until(lambda: routed(False), timeout_s=10, what="the undrained nodes routed again")
        async with http.get(solo.admin_url + "/_sim/stats") as resp:
            assert (await resp.json())["in_flight"] >= 1, (
                "the stream should still be running on the solo node"
            )
    await solo.proc.kill()
    parts += [part async for part in stream]
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert len("".join(p.message.content or "" for p in parts)) > 0
    # After the kill, both clients keep working on the remaining nodes.
    assert (await client.generate(model=MODEL, prompt="after the kill")).response
    oai = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)
    reply = await oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "still there?"}]
    )
    assert reply.choices[0].message.content
    await oai.close()
