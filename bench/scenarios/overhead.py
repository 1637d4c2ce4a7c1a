"""overhead: what a gateway adds over a direct call to a no-delay node, and its maximum throughput."""

from __future__ import annotations

from typing import Any

from bench.harness import report, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.systems import MODEL, Gateway, Node, run_load, start_corral, start_litellm, warm

TITLE = "Gateway overhead over a direct node call"


async def _measure(ctx: Context, name: str, target: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    work = ctx.scratch("overhead")
    slug = name.replace("/", "_")
    unique = {"kind": "unique", "tag": f"lat-{slug}"}
    spec = poisson_spec(target, p["rate_rps"], p["duration_s"], warmup_s=p["warmup_s"], requests=unique)
    latency = await run_load(spec, work, f"{slug}-latency")
    saturation = await run_load(
        {
            "target": target,
            "mode": "closed",
            "concurrency": p["saturation_concurrency"],
            "duration_s": p["saturation_s"],
            "warmup_s": p["warmup_s"],
            "requests": {"kind": "unique", "tag": f"sat-{slug}"},
        },
        work,
        f"{slug}-saturation",
    )
    low = stats.summarise(latency)
    high = stats.summarise(saturation, p["saturation_s"])
    return {
        "p50_ms": low["p50_ms"],
        "p99_ms": low["p99_ms"],
        "p90_ms": low["p90_ms"],
        "throughput_rps": high["throughput_rps"],
        "errors": low["errors"] + high["errors"],
        "requests": low["requests"],
        "saturation_p50_ms": high["p50_ms"],
        "saturation_p99_ms": high["p99_ms"],
        "_latencies": [r["latency_ms"] for r in stats.measured(latency) if r["ok"]],
    }


async def run(ctx: Context) -> dict[str, Any]:
    """Runs the scenario and writes its result files."""
    p = {
        "rate_rps": ctx.pick(10.0, 20.0),
        "duration_s": ctx.pick(30.0, 1.5),
        "warmup_s": ctx.pick(2.0, 0.3),
        "saturation_concurrency": ctx.pick(32, 8),
        "saturation_s": ctx.pick(8.0, 1.0),
        "request": "non-streamed chat, one unique user question, num_predict 8",
        "node": "one simulator node, profile no-delay (time scale 0, 64 slots)",
    }
    node = await Node(node_id="node-1", args=("--profile", "no-delay", "--seed", "1")).start()
    systems: dict[str, dict[str, Any]] = {}
    try:
        await warm([node])
        direct = {"protocol": "ollama", "base": node.url, "model": MODEL, "num_predict": 8}
        systems["direct"] = await _measure(ctx, "direct", direct, p)
        corral = await start_corral([node])
        try:
            http = _target(corral)
            systems["corral/http"] = await _measure(ctx, "corral/http", http, p)
            systems["corral/openai"] = await _measure(ctx, "corral/openai", {**http, "protocol": "openai"}, p)
            grpc = {"protocol": "grpc", "base": corral.grpc_addr, "model": MODEL, "num_predict": 8}
            systems["corral/grpc"] = await _measure(ctx, "corral/grpc", grpc, p)
        finally:
            await corral.close()
        if ctx.litellm:
            litellm = await start_litellm([node], "simple-shuffle", ctx.scratch("overhead"))
            try:
                systems["litellm"] = await _measure(ctx, "litellm", _target(litellm), p)
            finally:
                await litellm.close()
    finally:
        await node.kill()
    base = systems["direct"]
    for figures in systems.values():
        for q in ("p50", "p99"):
            mine, direct_q = figures[f"{q}_ms"], base[f"{q}_ms"]
            figures[f"added_{q}_ms"] = None if mine is None or direct_q is None else round(mine - direct_q, 2)
    latencies = {name: f.pop("_latencies") for name, f in systems.items()}
    targets = []
    if "litellm" in systems:
        mine, theirs = systems["corral/http"]["added_p99_ms"], systems["litellm"]["added_p99_ms"]
        ratio = round(mine / theirs, 3) if mine is not None and theirs else None
        targets.append(
            report.Target(
                "overhead: Corral's added p99 / LiteLLM's added p99",
                ratio,
                0.5,
                f"Corral HTTP /api/chat adds {mine} ms at p99, LiteLLM /v1/chat/completions adds {theirs} ms "
                f"(Corral's OpenAI endpoint adds {systems['corral/openai']['added_p99_ms']} ms, "
                f"gRPC {systems['corral/grpc']['added_p99_ms']} ms).",
            )
        )
    result = report.Result(
        scenario="overhead",
        title=TITLE,
        description=(
            "One no-delay simulated node. Latency: open-loop Poisson arrivals at "
            f"{p['rate_rps']:g} requests/s for {p['duration_s']:g} s (well below every system's "
            "saturation); `added` is the system's percentile minus the direct call's. Throughput: a "
            f"closed loop of {p['saturation_concurrency']} concurrent clients for {p['saturation_s']:g} s. "
            "Corral is one router process with health (no cache); LiteLLM is one proxy worker. Endpoints: "
            "direct and corral/http `POST /api/chat`, corral/openai and litellm `POST /v1/chat/completions`, "
            "corral/grpc `RouterService.Chat`."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("added_p50_ms", "added p50 ms"),
            ("added_p99_ms", "added p99 ms"),
            ("throughput_rps", "max rps"),
            ("saturation_p50_ms", "p50 ms at max"),
            ("errors", "errors"),
        ],
        targets=targets,
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
    )

    def plot(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        for name, values in latencies.items():
            xs, ys = stats.cdf_points(values)
            ax1.plot(xs, ys, label=name)
        ax1.set_xscale("log")
        ax1.set_xlabel(f"latency ms at {p['rate_rps']:g} rps (log)")
        ax1.set_ylabel("CDF")
        ax1.legend(fontsize=8)
        names = list(systems)
        ax2.bar(names, [systems[n]["throughput_rps"] or 0 for n in names], color="tab:blue")
        ax2.set_ylabel(f"requests/s, {p['saturation_concurrency']} clients")
        ax2.tick_params(axis="x", rotation=30, labelsize=8)

    return report.write(result, ctx.out_dir, plot)


def _target(gateway: Gateway) -> dict[str, Any]:
    return {
        "protocol": gateway.protocol,
        "base": gateway.base,
        "model": MODEL,
        "headers": gateway.headers,
        "num_predict": 8,
    }
