"""The Ollama embedder against simulated nodes: micro-batching, node failover, wiring into the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c

from devstack.redis import RedisServer
from services.cache.config import EmbedderConfig
from services.cache.embedders import EmbedderError, OllamaEmbedder
from services.cache.server import start_in_process
from services.health.config import HealthConfig
from services.health.server import start_in_process as start_health
from sim.config import NodeConfig
from sim.node import SimNode
from tests.cache.helpers import gen, lookup, make_config, store
from tests.helpers.procs import free_port

MODEL = "nomic-embed-text:v1.5"


@pytest.fixture
async def sim_node() -> AsyncIterator[SimNode]:
    """One simulated Ollama node at 1000x speed."""
    node = SimNode(NodeConfig.model_validate({"time_scale": 0.001}))
    await node.start()
    yield node
    await node.stop()


def _config(*urls: str) -> EmbedderConfig:
    return EmbedderConfig(kind="ollama", model=MODEL, dims=768, node_urls=list(urls), timeout_s=5.0)


async def test_texts_are_sent_in_batches_of_five(sim_node: SimNode) -> None:
    embedder = OllamaEmbedder(_config(sim_node.url))
    try:
        vectors = await asyncio.gather(*(embedder.embed(f"question number {i}", 5) for i in range(12)))
        assert embedder.batches_sent == 3
        assert all(v.shape == (768,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4 for v in vectors)
        again = await embedder.embed("question number 3", 5)
        assert float(again @ vectors[3]) > 0.999
    finally:
        await embedder.close()


async def test_a_dead_node_is_skipped_and_all_dead_is_an_error(sim_node: SimNode) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    embedder = OllamaEmbedder(_config(dead, sim_node.url))
    try:
        assert (await embedder.embed("hello", 5)).shape == (768,)
    finally:
        await embedder.close()
    nothing = OllamaEmbedder(_config(dead))
    try:
        with pytest.raises(EmbedderError):
            await nothing.embed("hello", 5)
    finally:
        await nothing.close()


async def test_cache_with_the_ollama_embedder(
    sim_node: SimNode, redis_server: RedisServer, migrated_dsn: str
) -> None:
    cfg = make_config(embedder=_config(sim_node.url))
    running = await start_in_process(cfg, redis_server.url, migrated_dsn)
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = cache_service_pb2_grpc.CacheServiceStub(channel)
            tenant = "ollama-embedder"
            await stub.Invalidate(pb.InvalidateRequest(tenant=tenant))
            question = gen("What is the capital city of France?")
            stored = await stub.Store(store(tenant, question, b"Paris"))
            assert stored.stored_semantic
            # NOTE: a trailing space changes the exact key but not the (stripped) question.
            hit = await stub.Lookup(lookup(tenant, gen("What is the capital city of France? ")))
            assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT and hit.similarity > 0.99
            stats = await stub.Stats(pb.StatsRequest(tenant=tenant))
            assert stats.embedder == f"ollama:{MODEL}" and stats.semantic.entries == 1
            forced = c.CachePolicy(mode=c.CACHE_MODE_SEMANTIC)
            miss = await stub.Lookup(lookup(tenant, gen("Bake a chocolate cake"), policy=forced))
            assert not miss.hit
    finally:
        await running.stop()


async def test_a_question_a_client_already_embedded_is_not_embedded_again(
    sim_node: SimNode, redis_server: RedisServer, migrated_dsn: str
) -> None:
    cfg = make_config(embedder=_config(sim_node.url))
    running = await start_in_process(cfg, redis_server.url, migrated_dsn)
    client = OllamaEmbedder(_config(sim_node.url))
    question = "How do I rotate an API key without downtime?"
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = cache_service_pb2_grpc.CacheServiceStub(channel)
            tenant = "shared-vectors"
            await stub.Invalidate(pb.InvalidateRequest(tenant=tenant))
            # A RAG application embeds its question (through the router, which stores the vector
            # in the embedding cache), then asks it.
            vector = await client.embed(question, 5)
            key = pb.EmbeddingKey(tenant=tenant, model=MODEL)
            cached = pb.CachedVector(hit=True, values=[float(x) for x in vector])
            await stub.StoreEmbeddings(
                pb.StoreEmbeddingsRequest(key=key, inputs=[question], vectors=[cached])
            )
            calls = sim_node.stats()["requests_total"]
            forced = c.CachePolicy(mode=c.CACHE_MODE_SEMANTIC)
            miss = await stub.Lookup(lookup(tenant, gen(question), policy=forced))
            assert not miss.hit
            stats = await stub.Stats(pb.StatsRequest(tenant=tenant))
            assert stats.shared_vectors == 1
            assert sim_node.stats()["requests_total"] == calls  # no embedding call for it
            # The answer's semantic entry has that vector: a paraphrase finds it.
            stored = await stub.Store(store(tenant, gen(question), b"use two keys"))
            assert stored.stored_semantic
            hit = await stub.Lookup(lookup(tenant, gen(question + " "), policy=forced))
            assert hit.outcome in (c.CACHE_OUTCOME_EXACT_HIT, c.CACHE_OUTCOME_SEMANTIC_HIT)
            # Another tenant's vector is not shared: its question is embedded on a node.
            other = "shared-vectors-other"
            await stub.Invalidate(pb.InvalidateRequest(tenant=other))
            shared = (await stub.Stats(pb.StatsRequest())).shared_vectors
            calls = sim_node.stats()["requests_total"]
            await stub.Lookup(lookup(other, gen(question), policy=forced))
            assert sim_node.stats()["requests_total"] > calls
            assert (await stub.Stats(pb.StatsRequest())).shared_vectors == shared
    finally:
        await client.close()
        await running.stop()


async def test_the_embedder_follows_the_nodes_health_reports(
    sim_node: SimNode, redis_server: RedisServer, migrated_dsn: str
) -> None:
    health = await start_health(HealthConfig(port=0, nodes=[], probe_interval_s=0.2, probe_timeout_s=1.0))
    dead = f"http://127.0.0.1:{free_port()}"
    embedder = EmbedderConfig(
        kind="ollama", model=MODEL, dims=768, node_urls=[dead], timeout_s=5.0, warmup_timeout_s=0,
        health_addr=f"127.0.0.1:{health.port}",
    )  # fmt: skip
    running = await start_in_process(make_config(embedder=embedder), redis_server.url, migrated_dsn)
    assert running.feed is not None and isinstance(running.engine.embedder, OllamaEmbedder)
    nodes = running.engine.embedder
    changed = asyncio.Event()
    running.feed.watcher.listeners.append(lambda before, after: changed.set())

    async def until(urls: list[str]) -> None:
        async with asyncio.timeout(10):
            while nodes.urls != urls:
                changed.clear()
                await changed.wait()

    try:
        # Health lists no node yet: the configured one serves.
        assert nodes.urls == [dead]
        # A node added to health at run time, once probed with the model installed, embeds.
        await health.engine.admin_add("sim-1", sim_node.url, {})
        await until([sim_node.url])
        assert (await nodes.embed("a question", 5)).shape == (768,)
        # Drained: back to the configured list (no node from health can embed).
        await health.engine.admin_drain("sim-1", True)
        await until([dead])
    finally:
        await running.stop()
        await health.stop()
