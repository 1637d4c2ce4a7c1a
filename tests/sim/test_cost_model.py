"""Cost model as a client sees it: load once, slots and queue, KV-cache reuse, keep-alive, eviction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import ollama
import pytest

from sim.engine import BusyError
from sim.node import SimNode

LLM = "llama3.2:1b"
BUSY = "server busy, please try again.  maximum pending requests exceeded"
LONG_SYSTEM = " ".join(f"rule{i} says to answer briefly and politely" for i in range(40))


async def test_cold_model_pays_load_once_and_shows_in_ps(node: SimNode) -> None:
    client = ollama.AsyncClient(host=node.url)
    load_s = node.engine.load_s(node.engine.resolve(LLM))  # type: ignore[arg-type]
    first = await client.generate(LLM, "one")
    second = await client.generate(LLM, "two")
    assert first.load_duration is not None and second.load_duration is not None
    assert first.load_duration >= int(load_s * 1e9) > 0
    assert second.load_duration < first.load_duration / 100
    assert node.stats()["loads"] == 1
    ps = await client.ps()
    assert [m.model for m in ps.models] == [LLM]


async def test_bigger_model_loads_slower(node: SimNode) -> None:
    client = ollama.AsyncClient(host=node.url)
    small = await client.generate(LLM, "hi")
    big = await client.generate("mistral:7b", "hi")
    assert big.load_duration and small.load_duration and big.load_duration > 2 * small.load_duration
    assert big.eval_duration and small.eval_duration and big.eval_count and small.eval_count
    assert big.eval_duration / big.eval_count > small.eval_duration / small.eval_count


async def _hold(session: aiohttp.ClientSession, url: str, text: str) -> int:
    body = {"model": LLM, "prompt": text, "stream": False, "options": {"num_predict": 1000}}
    async with session.post(f"{url}/api/generate", json=body) as resp:
        await resp.read()
        return resp.status


async def test_parallel_slots_and_queue_give_503_exactly_on_overflow(make_node: Callable[..., Any]) -> None:
    # Real time and slow generation: requests hold their slot until the test cancels them.
    node: SimNode = await make_node(
        num_parallel=2, max_queue=3, time_scale=1.0, eval_tok_s=1.0, load_base_s=0, load_s_per_gb=0
    )
    await node.load_model(LLM)
    async with aiohttp.ClientSession() as session:
        held = [asyncio.create_task(_hold(session, node.url, f"request {i}")) for i in range(5)]
        await node.wait_for(lambda s: s["in_flight"] == 2 and s["queued"] == 3)
        body = {"model": LLM, "prompt": "one too many", "stream": False}
        async with session.post(f"{node.url}/api/generate", json=body) as resp:
            assert resp.status == 503
            assert await resp.json() == {"error": BUSY}
        streamed = {**body, "stream": True}
        async with session.post(f"{node.url}/api/generate", json=streamed) as resp:
            assert resp.status == 503
        assert node.stats()["busy_rejections"] == 2
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        # Client disconnects free the slots and the queue.
        await node.wait_for(lambda s: s["in_flight"] == 0 and s["queued"] == 0)


async def test_load_queue_mode_bounds_only_loads(make_node: Callable[..., Any]) -> None:
    node: SimNode = await make_node(
        num_parallel=1, max_queue=1, queue_mode="load", time_scale=1.0, load_base_s=3600, eval_tok_s=1.0
    )
    async with aiohttp.ClientSession() as session:
        waiting = asyncio.create_task(_hold(session, node.url, "first"))
        await node.wait_for(lambda s: s["queued"] == 1)
        body = {"model": LLM, "prompt": "second", "stream": False}
        async with session.post(f"{node.url}/api/generate", json=body) as resp:
            assert resp.status == 503 and (await resp.json())["error"] == BUSY
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


async def test_load_queue_mode_never_rejects_a_loaded_model(make_node: Callable[..., Any]) -> None:
    node: SimNode = await make_node(
        num_parallel=1,
        max_queue=1,
        queue_mode="load",
        time_scale=1.0,
        eval_tok_s=1.0,
        load_base_s=0,
        load_s_per_gb=0,
    )
    await node.load_model(LLM)
    async with aiohttp.ClientSession() as session:
        held = [asyncio.create_task(_hold(session, node.url, f"r{i}")) for i in range(4)]
        await node.wait_for(lambda s: s["requests_total"] == 4)
        assert node.stats()["busy_rejections"] == 0 and node.stats()["in_flight"] == 1
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)


async def test_shared_prefix_cuts_prompt_eval(make_node: Callable[..., Any]) -> None:
    node: SimNode = await make_node(num_parallel=1)
    client = ollama.AsyncClient(host=node.url)
    turn1: list[dict[str, Any]] = [
        {"role": "system", "content": LONG_SYSTEM},
        {"role": "user", "content": "What is a cluster?"},
    ]
    first = await client.chat(LLM, messages=turn1)
    turn2: list[dict[str, Any]] = [
        *turn1,
        {"role": "assistant", "content": first.message.content},
        {"role": "user", "content": "And why?"},
    ]
    second = await client.chat(LLM, messages=turn2)
    assert first.prompt_eval_count and second.prompt_eval_count
    assert first.prompt_eval_duration and second.prompt_eval_duration
    assert second.prompt_eval_count <= 6  # only the new user turn and the assistant header
    assert second.prompt_eval_duration < first.prompt_eval_duration / 10
    # The same second turn on a node without that conversation pays for the whole prompt.
    cold: SimNode = await make_node(num_parallel=1)
    fresh = await ollama.AsyncClient(host=cold.url).chat(LLM, messages=turn2)
    assert fresh.prompt_eval_count and fresh.prompt_eval_count > first.prompt_eval_count
    assert node.stats()["prompt_tokens_cached"][LLM] >= first.prompt_eval_count - 1


async def test_prefix_cache_is_per_slot(make_node: Callable[..., Any]) -> None:
    node: SimNode = await make_node(num_parallel=2)
    client = ollama.AsyncClient(host=node.url)
    a = await client.generate(LLM, LONG_SYSTEM + " question A")
    other = await client.generate(LLM, "something unrelated entirely")
    again = await client.generate(LLM, LONG_SYSTEM + " question B")
    assert a.prompt_eval_count and other.prompt_eval_count and again.prompt_eval_count
    # The slot that served A is chosen again for the shared prefix.
    assert again.prompt_eval_count < a.prompt_eval_count / 10


async def test_keep_alive_zero_unloads(node: SimNode) -> None:
    client = ollama.AsyncClient(host=node.url)
    reply = await client.generate(LLM, "answer then unload", keep_alive=0)
    assert reply.done_reason == "stop"
    assert (await client.ps()).models == []
    await client.generate(LLM, "load again")
    assert len((await client.ps()).models) == 1
    await client.generate(LLM, keep_alive=0)
    assert (await client.ps()).models == []
    assert node.stats()["unloads"] == 2


async def test_keep_alive_expiry(node: SimNode) -> None:
    client = ollama.AsyncClient(host=node.url)
    await client.generate(LLM, "short lived", keep_alive="50ms")
    await node.wait_for(lambda s: s["loaded_models"] == [], timeout_s=10)
    assert (await client.ps()).models == []


async def test_negative_keep_alive_is_forever(node: SimNode) -> None:
    client = ollama.AsyncClient(host=node.url)
    await client.generate(LLM, "keep me", keep_alive=-1)
    ps = await client.ps()
    assert ps.models[0].expires_at is not None and ps.models[0].expires_at.year == 2318


async def test_max_loaded_models_evicts_idle_model(make_node: Callable[..., Any]) -> None:
    node: SimNode = await make_node(max_loaded_models=2)
    client = ollama.AsyncClient(host=node.url)
    await client.generate(LLM, "a", keep_alive="1m")
    await client.embed("nomic-embed-text:v1.5", "b", keep_alive="10m")
    await client.generate("mistral:7b", "c")
    loaded = {m.model for m in (await client.ps()).models}
    # The runner with the shortest keep-alive goes first.
    assert loaded == {"nomic-embed-text:v1.5", "mistral:7b"}
    assert node.stats()["evictions"] == 1


async def test_eviction_waits_for_a_busy_model(make_node: Callable[..., Any]) -> None:
    node: SimNode = await make_node(
        max_loaded_models=1, time_scale=1.0, eval_tok_s=1.0, load_base_s=0, load_s_per_gb=0
    )
    await node.load_model(LLM)
    async with aiohttp.ClientSession() as session:
        busy = asyncio.create_task(_hold(session, node.url, "long"))
        await node.wait_for(lambda s: s["in_flight"] == 1)
        other = asyncio.create_task(
            ollama.AsyncClient(host=node.url).generate("mistral:7b", "hi", options={"num_predict": 1})
        )
        await node.wait_for(lambda s: s["queued"] == 1)
        assert not other.done()
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)
        reply = await other
    assert reply.done and node.stats()["loaded_models"] == ["mistral:7b"]


async def test_two_models_that_take_turns_on_one_slot_of_memory_all_get_served(
    make_node: Callable[..., Any],
) -> None:
    # NOTE: a load hands its runner to the requests that waited for it; before, the other model's
    # load (next in line) evicted the fresh runner before they resumed, and both models' requests
    # waited forever.
    node: SimNode = await make_node(max_loaded_models=1, time_scale=0.05, num_parallel=2)
    await node.load_model(LLM)
    client = ollama.AsyncClient(host=node.url)
    models = ["mistral:7b" if i % 5 == 1 else LLM for i in range(30)]
    calls = []
    async with asyncio.timeout(60):  # a guard against the hang, not a measurement
        for i, model in enumerate(models):
            calls.append(asyncio.create_task(client.chat(model, [{"role": "user", "content": f"q{i}"}])))
            await asyncio.sleep(0.05)  # NOTE: arrivals spread over time (the workload), not a wait for state
        replies = await asyncio.gather(*calls)
    assert all(r.done for r in replies)
    assert node.stats()["loads"] <= 1 + len(models)


async def test_no_delay_mode_and_determinism(make_node: Callable[..., Any]) -> None:
    a: SimNode = await make_node(time_scale=0, seed=7)
    b: SimNode = await make_node(time_scale=0, seed=7)
    c: SimNode = await make_node(time_scale=0, seed=8)
    ra = await ollama.AsyncClient(host=a.url).generate(LLM, "same prompt")
    rb = await ollama.AsyncClient(host=b.url).generate(LLM, "same prompt")
    rc = await ollama.AsyncClient(host=c.url).generate(LLM, "same prompt")
    assert ra.response == rb.response != rc.response
    assert ra.eval_duration == rb.eval_duration and ra.load_duration == rb.load_duration
    seeded = await ollama.AsyncClient(host=a.url).generate(LLM, "same prompt", options={"seed": 8})
    assert seeded.response == rc.response


async def test_speed_factor_changes_rates(make_node: Callable[..., Any]) -> None:
    fast: SimNode = await make_node(speed_factor=2.0)
    slow: SimNode = await make_node(speed_factor=0.5)
    rf = await ollama.AsyncClient(host=fast.url).generate(LLM, "speed")
    rs = await ollama.AsyncClient(host=slow.url).generate(LLM, "speed")
    assert rf.eval_count == rs.eval_count
    assert rs.eval_duration == pytest.approx(4 * (rf.eval_duration or 0), rel=1e-3)


def test_busy_error_message() -> None:
    assert str(BusyError()) == BUSY
