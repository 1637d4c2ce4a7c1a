"""cache: repeated and paraphrased questions through Corral with and without its cache."""

from __future__ import annotations

import json
import shutil
from typing import Any

from bench.harness import report, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.systems import EMBED_MODEL, MODEL, run_load, start_corral, start_nodes, target_of, warm
from bench.harness.workload import as_jsonable, cache_script

TITLE = "Cache: repeated and paraphrased questions"
HITS = ("exact-hit", "semantic-hit")


def _rate(records: list[dict[str, Any]], label: str | None = None) -> float | None:
    chosen = [r for r in records if r["ok"] and (label is None or r["label"] == label)]
    if not chosen:
        return None
    return round(sum(r["cache"] in HITS for r in chosen) / len(chosen), 3)


async def run(ctx: Context) -> dict[str, Any]:
    """Runs the same script without the cache and with it (Redis exact tier + pgvector semantic tier)."""
    from devstack import migrate
    from devstack.config import make_temp_state_dir
    from devstack.postgres import PostgresServer
    from devstack.redis import RedisServer

    time_scale = ctx.pick(0.2, 0.01)
    count = ctx.pick(240, 20)
    p: dict[str, Any] = {
        "time_scale": time_scale,
        "requests": count,
        "distinct_questions": ctx.pick(40, 6),
        "rate_rps": ctx.pick(6.0, 10.0),
        "request": "non-streamed chat; repeats are byte-identical, paraphrases change case, punctuation "
        "or add a polite word",
        "embedder": f"{EMBED_MODEL} on the simulated nodes (the simulator's hashed bag-of-words vectors)",
    }
    items = cache_script(count, p["distinct_questions"], seed=7)
    p["mix"] = {label: sum(i.label == label for i in items) for label in ("first", "repeat", "paraphrase")}
    work = ctx.scratch("cache")
    nodes = await start_nodes([1.0] * 4, time_scale)
    systems: dict[str, dict[str, Any]] = {}
    hit_latencies: dict[str, list[float]] = {}
    miss_latencies: dict[str, list[float]] = {}
    state = make_temp_state_dir("corral-bench-cache-")
    try:
        await warm(nodes, (MODEL, EMBED_MODEL))
        with RedisServer(port=0, state_dir=state) as redis, PostgresServer(port=0, state_dir=state) as pg:
            migrate.apply(pg.dsn)
            cache_env = {
                "CORRAL_REDIS__URL": redis.url,
                "CORRAL_POSTGRES__DSN": pg.dsn,
                "CORRAL_CACHE__EMBEDDER__MODEL": EMBED_MODEL,
                "CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([n.url for n in nodes]),
            }
            for name, env in (("corral (no cache)", None), ("corral (cache)", cache_env)):
                gateway = await start_corral(nodes, cache_env=env)
                try:
                    spec = poisson_spec(
                        target_of(gateway, timeout_s=60),
                        p["rate_rps"],
                        count / p["rate_rps"] + 60,
                        requests={"kind": "script", "items": as_jsonable(items)},
                    )
                    result = await run_load(spec, work, name.split()[1].strip("()"))
                finally:
                    await gateway.close()
                records = stats.measured(result)
                figures = stats.summarise(result)
                hits = [r["latency_ms"] for r in records if r["ok"] and r["cache"] in HITS]
                misses = [r["latency_ms"] for r in records if r["ok"] and r["cache"] not in HITS]
                figures.update(
                    {
                        "hit_rate": _rate(records),
                        "repeat_hit_rate": _rate(records, "repeat"),
                        "paraphrase_hit_rate": _rate(records, "paraphrase"),
                        "exact_hits": sum(r["cache"] == "exact-hit" for r in records),
                        "semantic_hits": sum(r["cache"] == "semantic-hit" for r in records),
                        "hit_p50_ms": stats.percentile(hits, 50),
                        "hit_p99_ms": stats.percentile(hits, 99),
                        "miss_p50_ms": stats.percentile(misses, 50),
                    }
                )
                systems[name] = figures
                hit_latencies[name], miss_latencies[name] = hits, misses
    finally:
        for node in nodes:
            await node.kill()
        shutil.rmtree(state, ignore_errors=True)
    result_doc = report.Result(
        scenario="cache",
        title=TITLE,
        description=(
            f"Four 1x simulated nodes (time scale {time_scale:g}). A script of {count} questions drawn from "
            f"{p['distinct_questions']} distinct ones ({p['mix']['first']} first asks, {p['mix']['repeat']} "
            f"byte-identical repeats, {p['mix']['paraphrase']} paraphrases) sent as Poisson arrivals at "
            f"{p['rate_rps']:g}/s to Corral's `POST /api/chat`, once without the cache service and once with "
            "it (exact tier in Redis, semantic tier in PostgreSQL + pgvector with the near-miss guard). "
            "Hits are read from the `X-Corral-Cache` response header. LiteLLM is not part of this scenario."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("hit_rate", "hit rate"),
            ("repeat_hit_rate", "repeats hit"),
            ("paraphrase_hit_rate", "paraphrases hit"),
            ("hit_p50_ms", "hit p50 ms"),
            ("hit_p99_ms", "hit p99 ms"),
            ("miss_p50_ms", "miss p50 ms"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("errors", "errors"),
        ],
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
    )

    def plot(fig: Any) -> None:
        ax = fig.subplots()
        for name in systems:
            for kind, values in (("hits", hit_latencies[name]), ("misses", miss_latencies[name])):
                if values:
                    xs, ys = stats.cdf_points(values)
                    ax.plot(xs, ys, label=f"{name}: {kind}")
        ax.set_xscale("log")
        ax.set_xlabel("latency ms (log)")
        ax.set_ylabel("CDF")
        ax.legend(fontsize=8)

    return report.write(result_doc, ctx.out_dir, plot)
