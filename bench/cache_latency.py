"""Lookup latency through the cache's gRPC API at 100,000 stored entries (exact and semantic tiers).

Starts its own Redis and PostgreSQL + pgvector (devstack), loads N entries into both tiers in bulk
(the same keys and rows the service writes), runs the cache service as a separate process, and
measures Lookup from a grpc.aio client at concurrency 1, in rounds (`--rounds`, default 3) in
which the kinds below take turns, so that a slow spell of the machine lands on all of them; the JSON
has the p50 of every round next to the pooled percentiles:

- exact hit: a stored request asked again (one Redis GET);
- semantic hit: a reworded request with its embedding precomputed by the client (LookupRequest.embedding),
  so the time is the exact-tier miss plus the HNSW query plus the guard, without embedding;
- miss: an unknown request (Redis miss plus HNSW query);
- the server-side parts of a semantic hit alone (key derivation, the guard, the prepared HNSW query);
  the index and the table are loaded into shared buffers first (pg_prewarm), as in a cache that has
  been serving for a while;
- embedding time, measured separately: the hashing embedder used for the load, and MiniLM on the CPU
  when the `eval` extra is installed.

Run: `PYTHONPATH=.:gen/python .venv/bin/python bench/cache_latency.py [--entries 100000]`.
Writes bench/results/cache_latency.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import redis
import uvloop
from pgvector.psycopg import register_vector

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from corral.v1 import cache_service_pb2 as pb  # noqa: E402
from corral.v1 import cache_service_pb2_grpc  # noqa: E402
from corral.v1 import common_pb2 as c  # noqa: E402

from devstack import migrate  # noqa: E402
from devstack.config import make_temp_state_dir  # noqa: E402
from devstack.postgres import PostgresServer  # noqa: E402
from devstack.redis import RedisServer  # noqa: E402
from services.cache import guard, keys  # noqa: E402
from services.cache.config import CacheConfig  # noqa: E402
from services.cache.embedders import HashingEmbedder, MiniLMEmbedder  # noqa: E402
from services.cache.exact_store import redis_key  # noqa: E402
from services.cache.semantic_store import SemanticStore  # noqa: E402
from tests.helpers.procs import ServiceProcess  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TENANT = "bench"
MODEL = "llama3.2:1b"
DIMS = 384
VERBS = "configure install upgrade debug monitor secure deploy test profile document back-up migrate".split()
VERBS += "scale tune benchmark containerize index validate compress cache audit".split()
ADJECTIVES = "primary legacy internal public shared staging nightly regional remote local".split()
ADJECTIVES += "encrypted minimal verbose shadow archived experimental default custom read-only hybrid".split()
ADJECTIVES += "replicated partitioned temporary offline".split()
NOUNS = "database queue scheduler gateway cluster pipeline dashboard registry cache firewall".split()
NOUNS += "webhook index worker proxy mailer bucket secret token backup runner logger parser".split()
NOUNS += "crawler exporter balancer".split()
TOOLS = "Terraform Ansible Docker Kubernetes Jenkins Grafana Nginx PostgreSQL".split()


def prompts(n: int) -> list[tuple[str, str]]:
    """n distinct (stored, reworded) prompt pairs without numbers, so the guard lets rewordings hit."""
    combos = itertools.product(VERBS, ADJECTIVES, NOUNS, TOOLS)
    pairs = []
    for verb, adjective, noun, tool in itertools.islice(combos, n):
        pairs.append(
            (
                f"How do I {verb} the {adjective} {noun} with {tool}?",
                f"how can i {verb} the {adjective} {noun} with {tool}",
            )
        )
    if len(pairs) < n:
        raise SystemExit(f"only {len(pairs)} distinct prompts; lower --entries")
    return pairs


def spec(prompt: str) -> c.GenerateSpec:
    """A deterministic generate request (temperature 0: both tiers)."""
    return c.GenerateSpec(model=MODEL, prompt=prompt, options=c.ModelOptions(temperature=0))


def load(
    redis_url: str, dsn: str, pairs: list[tuple[str, str]], embedder: HashingEmbedder
) -> dict[str, float]:
    """Writes every stored prompt to Redis (pipelined SETs) and PostgreSQL (binary COPY) like the service."""
    timings: dict[str, float] = {}
    now = datetime.now(UTC)
    entry = pb.CacheEntry(payload=b"x" * 512, payload_type="corral.v1.GenerateResponse")
    entry.created_at.FromDatetime(now)
    entry.expires_at.FromDatetime(now + timedelta(days=1))
    value = entry.SerializeToString()
    views = [keys.derive(TENANT, spec(stored)) for stored, _ in pairs]

    started = time.perf_counter()
    client = redis.Redis.from_url(redis_url)
    for chunk in range(0, len(views), 2000):
        pipe = client.pipeline(transaction=False)
        for view in views[chunk : chunk + 2000]:
            pipe.set(redis_key(view.tenant, view.model, view.exact_key), value, ex=86400)
        pipe.execute()
    timings["redis_load_s"] = time.perf_counter() - started

    started = time.perf_counter()
    vectors = [embedder.vector(stored) for stored, _ in pairs]
    timings["hashing_embed_load_s"] = time.perf_counter() - started

    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("DROP INDEX IF EXISTS semantic_cache_hnsw_384")
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY semantic_cache (tenant, model, exact_key, context_key, prompt_text, embed_model,"
                " embedding, payload, created_at, expires_at) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(
                [
                    "text",
                    "text",
                    "text",
                    "text",
                    "text",
                    "text",
                    "vector",
                    "bytea",
                    "timestamptz",
                    "timestamptz",
                ]
            )
            for (stored, _), view, vector in zip(pairs, views, vectors, strict=True):
                copy.write_row(
                    (
                        TENANT,
                        view.model,
                        view.exact_key,
                        view.context_key,
                        stored,
                        embedder.name,
                        vector,
                        value,
                        now,
                        now + timedelta(days=1),
                    )
                )
        timings["postgres_copy_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(
            "CREATE INDEX semantic_cache_hnsw_384 ON semantic_cache"
            " USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dims = 384"
        )
        conn.execute("VACUUM ANALYZE semantic_cache")
        timings["hnsw_build_s"] = time.perf_counter() - started
        # NOTE: the steady state of a cache that has been serving: the index and the table in
        # shared buffers (docs/cache.md recommends pg_prewarm's autoprewarm for restarts). Without
        # it the first few hundred lookups read index pages from the OS page cache.
        started = time.perf_counter()
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.execute("SELECT pg_prewarm('semantic_cache_hnsw_384'), pg_prewarm('semantic_cache')")
        timings["prewarm_s"] = time.perf_counter() - started
    return timings


def components(dsn: str, pairs: list[tuple[str, str]], embedder: HashingEmbedder, n: int) -> dict[str, Any]:
    """Server-side parts of a semantic hit, measured alone: key derivation, the guard, the SQL query."""
    rng = random.Random(11)
    sample = [pairs[rng.randrange(len(pairs))] for _ in range(n)]
    derive_ms, guard_ms, query_ms = [], [], []
    store = SemanticStore(dsn, DIMS, 1, 40, 2)
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        register_vector(conn)
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        for stored, reworded in sample:
            started = time.perf_counter()
            view = keys.derive(TENANT, spec(reworded))
            derive_ms.append((time.perf_counter() - started) * 1000)
            params = {
                "q": embedder.vector(reworded),
                "tenant": TENANT,
                "model": view.model,
                "embed_model": embedder.name,
                "context_key": view.context_key,
                "min_created": None,
            }
            started = time.perf_counter()
            conn.execute(store.nearest_sql(4), params).fetchall()
            query_ms.append((time.perf_counter() - started) * 1000)
            guard.analyse.cache_clear()
            started = time.perf_counter()
            guard.check(reworded, stored)
            guard_ms.append((time.perf_counter() - started) * 1000)
    return {
        "derive_keys": summary(derive_ms),
        "guard_two_uncached_prompts": summary(guard_ms),
        "hnsw_query_prepared": summary(query_ms),
    }


def settings(dsn: str) -> dict[str, Any]:
    """The settings the figures depend on: PostgreSQL's buffers and the cache's semantic-tier knobs."""
    cfg = CacheConfig()
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
    return {
        "postgres_shared_buffers": row[0] if row else "?",
        "hnsw_ef_search": cfg.hnsw_ef_search,
        "semantic_candidates": cfg.semantic_candidates,
        "concurrent_tiers": cfg.concurrent_tiers,
    }


def summary(samples_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean in milliseconds."""
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(pick(0.90), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


async def measure(
    address: str, pairs: list[tuple[str, str]], embedder: HashingEmbedder, n: int, rounds: int
) -> dict[str, Any]:
    """Exact hits, semantic hits and misses, n each per round, one at a time."""
    rng = random.Random(7)
    results: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = cache_service_pb2_grpc.CacheServiceStub(channel)
        sample = [pairs[rng.randrange(len(pairs))] for _ in range(n)]
        exact = [pb.LookupRequest(tenant=TENANT, generate=spec(stored)) for stored, _ in sample]
        semantic = [
            pb.LookupRequest(
                tenant=TENANT, generate=spec(reworded), embedding=embedder.vector(reworded).tolist()
            )
            for _, reworded in sample
        ]
        unknown = [
            f"How do I {w} the {a} {x} with Make?" for w, a, x in zip(VERBS, ADJECTIVES, NOUNS, strict=False)
        ]
        misses = [
            pb.LookupRequest(tenant=TENANT, generate=spec(text), embedding=embedder.vector(text).tolist())
            for text in itertools.islice(itertools.cycle(unknown), n)
        ]
        for warm in exact[:200] + semantic[:200]:
            await stub.Lookup(warm, timeout=5)
        kinds = (
            ("exact_hit", exact, c.CACHE_OUTCOME_EXACT_HIT),
            ("semantic_hit", semantic, c.CACHE_OUTCOME_SEMANTIC_HIT),
            ("miss", misses, c.CACHE_OUTCOME_MISS),
        )
        samples: dict[str, list[float]] = {name: [] for name, _, _ in kinds}
        round_p50s: dict[str, list[float]] = {name: [] for name, _, _ in kinds}
        outcomes: dict[str, dict[str, int]] = {name: {} for name, _, _ in kinds}
        # NOTE: the kinds take turns round by round, so that a slow spell of the machine lands on
        # all of them rather than on whichever kind happened to run then.
        for _ in range(rounds):
            for name, requests, _ in kinds:
                taken: list[float] = []
                for request in requests:
                    started = time.perf_counter()
                    reply = await stub.Lookup(request, timeout=5)
                    taken.append((time.perf_counter() - started) * 1000)
                    label = c.CacheOutcome.Name(reply.outcome)
                    outcomes[name][label] = outcomes[name].get(label, 0) + 1
                samples[name] += taken
                round_p50s[name].append(round(statistics.median(taken), 3))
        for name, requests, expected in kinds:
            results[name] = summary(samples[name]) | {
                "round_p50s_ms": round_p50s[name],
                "outcomes": outcomes[name],
                "expected_share": round(
                    outcomes[name].get(c.CacheOutcome.Name(expected), 0) / (len(requests) * rounds), 3
                ),
            }
        stats = await stub.Stats(pb.StatsRequest())
        results["server_stats"] = {
            "exact_entries": stats.exact.entries,
            "semantic_entries": stats.semantic.entries,
            "exact_server_p50_ms": round(stats.exact.lookup_p50_ms, 3),
            "semantic_server_p50_ms": round(stats.semantic.lookup_p50_ms, 3),
        }
    return results


def embedding_times(embedder: HashingEmbedder, texts: list[str]) -> dict[str, Any]:
    """Per-text embedding latency (the part the semantic numbers exclude)."""
    out: dict[str, Any] = {}
    samples = []
    for text in texts[:500]:
        started = time.perf_counter()
        embedder.vector(text)
        samples.append((time.perf_counter() - started) * 1000)
    out[embedder.name] = summary(samples)
    minilm = MiniLMEmbedder()
    try:
        minilm.load()
    except Exception as exc:  # NOTE: the eval extra is optional.
        out["minilm"] = f"not measured: {exc}"
        return out
    samples = []
    for text in texts[:200]:
        started = time.perf_counter()
        minilm.encode([text])
        samples.append((time.perf_counter() - started) * 1000)
    out[minilm.name + " (one text, CPU)"] = summary(samples)
    started = time.perf_counter()
    minilm.encode(texts[:500])
    out[minilm.name + " (batches, per text)"] = round((time.perf_counter() - started) * 1000 / 500, 3)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Sets the stack up, loads, measures, tears down."""
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    pairs = prompts(args.entries)
    embedder = HashingEmbedder(DIMS)
    state = make_temp_state_dir("corral-bench-cache-")
    redis_server = RedisServer(port=0, state_dir=state).start()
    pg = PostgresServer(port=0, state_dir=state).start()
    proc: ServiceProcess | None = None
    try:
        migrate.apply(pg.dsn)
        timings = load(redis_server.url, pg.dsn, pairs, embedder)
        print("loaded:", {k: round(v, 1) for k, v in timings.items()}, flush=True)
        parts = components(pg.dsn, pairs, embedder, 500)
        used = settings(pg.dsn)
        proc = ServiceProcess(
            "services.cache",
            env={
                "CORRAL_CACHE__PORT": "0",
                "CORRAL_REDIS__URL": redis_server.url,
                "CORRAL_POSTGRES__DSN": pg.dsn,
                "CORRAL_CACHE__EMBEDDER__KIND": "hashing",
                "CORRAL_CACHE__EMBEDDER__DIMS": str(DIMS),
                "CORRAL_LOGGING__ACCESS_LOG": "false",
            },
        )
        await proc.start()
        latency = await measure(f"127.0.0.1:{proc.port}", pairs, embedder, args.lookups, args.rounds)
    finally:
        if proc is not None:
            await proc.terminate()
        pg.stop()
        redis_server.stop()
        shutil.rmtree(state, ignore_errors=True)
    return {
        "entries": args.entries,
        "lookups_per_kind": args.lookups * args.rounds,
        "rounds": args.rounds,
        "concurrency": 1,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "load_average_at_start": load_at_start,
        "load": {k: round(v, 2) for k, v in timings.items()},
        "settings": used,
        "latency": latency,
        "semantic_hit_server_parts": parts,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "embedding": embedding_times(embedder, [reworded for _, reworded in pairs[:500]]),
        "targets": {"exact_hit_p50_ms": 2.0, "semantic_hit_p50_ms": 5.0},
    }


def main() -> None:
    """Parses arguments, runs, prints and writes the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000, help="lookups per kind and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the kinds take turns")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    report = uvloop.run(run(args))
    report["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    print(json.dumps(report, indent=2))
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "cache_latency.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
