"""overhead: what a gateway adds over a direct call to a no-delay node, and its maximum throughput."""

from __future__ import annotations

from typing import Any

from bench.harness import report, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.rounds import run_rounds
from bench.harness.systems import MODEL, Gateway, Node, start_corral, start_litellm, warm

TITLE = "Gateway overhead over a direct node call"


def _figures(latency: dict[str, Any], saturation: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    low = stats.summarise(latency, p["duration_s"])
    high = stats.summarise(saturation, p["saturation_s"])
    return {
        "p50_ms": low["p50_ms"],
        "p99_ms": low["p99_ms"],
        "p90_ms": low["p90_ms"],
        "throughput_rps": high["throughput_rps"],
        "errors": low["errors"] + high["errors"],
        "error_kinds": {**low["error_kinds"], **high["error_kinds"]},
        "requests": low["requests"],
        "saturation_p50_ms": high["p50_ms"],
        "saturation_p99_ms": high["p99_ms"],
        "_latencies": [r["latency_ms"] for r in stats.measured(latency) if r["ok"]],
    }


async def run(ctx: Context) -> dict[str, Any]:
    """Runs the scenario and writes its result files."""
    p: dict[str, Any] = {
        "rate_rps": ctx.pick(5.0, 20.0),
        "duration_s": ctx.pick(40.0, 1.5),
        "warmup_s": ctx.pick(1.0, 0.3),
        "saturation_concurrency": ctx.pick(32, 8),
        "saturation_s": ctx.pick(12.0, 1.0),
        "rounds": ctx.pick(4, 1),
        "request": "non-streamed chat, one unique user question, num_predict 8",
        "node": "one simulator node, profile no-delay (time scale 0, 64 slots)",
    }
    node = await Node(node_id="node-1", args=("--profile", "no-delay", "--seed", "1")).start()
    gateways: list[Gateway] = []
    work = ctx.scratch("overhead")
    try:
        await warm([node])
        corral = await start_corral([node])
        gateways.append(corral)
        endpoints = {
            "direct": {"protocol": "ollama", "base": node.url, "model": MODEL, "num_predict": 8},
            "corral/http": _target(corral),
            "corral/openai": {**_target(corral), "protocol": "openai"},
            "corral/grpc": {"protocol": "grpc", "base": corral.grpc_addr, "model": MODEL, "num_predict": 8},
        }
        if ctx.litellm:
            litellm = await start_litellm([node], "simple-shuffle", work)
            gateways.append(litellm)
            endpoints["litellm"] = _target(litellm)
        rounds = p["rounds"]

        def latency_spec(name: str, target: dict[str, Any], round_no: int) -> dict[str, Any]:
            unique = {"kind": "unique", "tag": f"lat-{name}-{round_no}"}
            return poisson_spec(
                target, p["rate_rps"], p["duration_s"] / rounds, warmup_s=p["warmup_s"], requests=unique,
                seed=round_no + 1,
            )  # fmt: skip

        def saturation_spec(name: str, target: dict[str, Any], round_no: int) -> dict[str, Any]:
            return {
                "target": target,
                "mode": "closed",
                "concurrency": p["saturation_concurrency"],
                "duration_s": p["saturation_s"] / rounds,
                "warmup_s": p["warmup_s"],
                "requests": {"kind": "unique", "tag": f"sat-{name}-{round_no}"},
            }

        latency = await run_rounds(endpoints, latency_spec, rounds, work, "latency")
        saturation = await run_rounds(endpoints, saturation_spec, rounds, work, "saturation")
    finally:
        for gateway in gateways:
            await gateway.close()
        await node.kill()
    systems = {name: _figures(latency[name], saturation[name], p) for name in endpoints}
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
            f"{p['rate_rps']:g} requests/s for {p['duration_s']:g} s (below every system's saturation); "
            "`added` is the system's percentile minus the direct call's. Throughput: a closed loop of "
            f"{p['saturation_concurrency']} concurrent clients for {p['saturation_s']:g} s. Every system is "
            f"up for the whole run and measured in {p['rounds']} interleaved rounds (a segment each in "
            "turn), so the machine's background load falls on all of them alike. "
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
