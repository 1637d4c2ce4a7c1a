"""Summaries of load-generator records: percentiles, throughput, errors."""

from __future__ import annotations

import math
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by the nearest-rank method; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 2) -> float | None:
    """`value` rounded to `digits`, None kept."""
    return None if value is None else round(value, digits)


def round_spread(result: dict[str, Any], q: float = 99) -> str | None:
    """The q-th latency percentile of each round (records carry `round`), as "lowest–highest" ms."""
    by_round: dict[int, list[float]] = {}
    for r in measured(result):
        if r["ok"] and "round" in r:
            by_round.setdefault(r["round"], []).append(r["latency_ms"])
    values = [v for v in (percentile(lat, q) for lat in by_round.values()) if v is not None]
    if not values:
        return None
    return f"{min(values):,.0f}–{max(values):,.0f}"


def measured(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the measurement phase (warm-up excluded)."""
    return [r for r in result["records"] if r["phase"] == "measure"]


def summarise(result: dict[str, Any], duration_s: float | None = None) -> dict[str, Any]:
    """The standard figures of one run: latency and TTFT percentiles, throughput, errors.

    Latency percentiles are over successful requests; `errors` counts every request the client saw
    fail (HTTP or gRPC error, timeout, a stream cut short), `dropped` the arrivals the client shed
    because too many requests were outstanding.
    """
    records = measured(result)
    ok = [r for r in records if r["ok"]]
    latencies = [r["latency_ms"] for r in ok]
    ttfts = [r["ttft_ms"] for r in ok if r.get("ttft_ms") is not None]
    if duration_s is None:
        starts = [r["t"] for r in records]
        ends = [r["t"] + r["latency_ms"] / 1000 for r in records]
        duration_s = (max(ends) - min(starts)) if records else 0.0
    errors = [r for r in records if not r["ok"]]
    kinds: dict[str, int] = {}
    for r in errors:
        kind = (r["error"] or f"status {r['status']}").split(":")[0][:60]
        kinds[kind] = kinds.get(kind, 0) + 1
    summary: dict[str, Any] = {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(errors),
        "error_kinds": kinds,
        "dropped": result.get("dropped", 0),
        "throughput_rps": rounded(len(ok) / duration_s if duration_s else None, 1),
        "p50_ms": rounded(percentile(latencies, 50)),
        "p90_ms": rounded(percentile(latencies, 90)),
        "p99_ms": rounded(percentile(latencies, 99)),
        "max_ms": rounded(max(latencies) if latencies else None),
        "mean_ms": rounded(sum(latencies) / len(latencies) if latencies else None),
    }
    if ttfts:
        summary.update(
            {
                "ttft_mean_ms": rounded(sum(ttfts) / len(ttfts)),
                "ttft_p50_ms": rounded(percentile(ttfts, 50)),
                "ttft_p90_ms": rounded(percentile(ttfts, 90)),
                "ttft_p99_ms": rounded(percentile(ttfts, 99)),
            }
        )
    return summary


def by_node(records: list[dict[str, Any]], names: dict[str, str]) -> dict[str, int]:
    """Successful requests per serving node (`names` maps a node URL to its id for LiteLLM's header)."""
    counts: dict[str, int] = {}
    for r in records:
        if r["ok"] and r["node"]:
            node = names.get(r["node"].rstrip("/"), r["node"])
            counts[node] = counts.get(node, 0) + 1
    return dict(sorted(counts.items()))


def cdf_points(values: list[float], points: int = 200) -> tuple[list[float], list[float]]:
    """(x, y) of an empirical CDF, thinned to about `points` points."""
    ordered = sorted(values)
    if not ordered:
        return [], []
    step = max(1, len(ordered) // points)
    xs = [*ordered[::step], ordered[-1]]
    ys = [min(1.0, (i * step + 1) / len(ordered)) for i in range(len(xs) - 1)] + [1.0]
    return xs, ys


def share_timeline(
    sends: list[tuple[float, bool]], until_s: float, window_s: float = 2.0, step_s: float = 0.5
) -> list[tuple[float, float | None]]:
    """The share of requests that went to one node, in sliding windows over a run.

    Args:
        sends: (seconds into the run, sent to the node) per request, in any order.
        until_s: The run's length.
        window_s: Each point counts the requests sent in the `window_s` seconds before it.
        step_s: Distance between points.

    Returns:
        (end of the window, share or None when no request was sent in it) every `step_s` seconds.
    """
    points = []
    ordered = sorted(sends)
    lo = hi = hits = 0
    end = window_s
    while end <= until_s + 1e-9:
        while hi < len(ordered) and ordered[hi][0] < end:
            hits += ordered[hi][1]
            hi += 1
        while lo < hi and ordered[lo][0] < end - window_s:
            hits -= ordered[lo][1]
            lo += 1
        points.append((round(end, 3), hits / (hi - lo) if hi > lo else None))
        end += step_s
    return points


def time_to_share(
    timeline: list[tuple[float, float | None]], since_s: float, below: bool, level: float
) -> float | None:
    """Seconds from `since_s` to the end of the first window ending after it whose share is at or
    below (or, with `below` False, at or above) `level`; None when none is."""
    for end, share in timeline:
        if share is None or end <= since_s:
            continue
        if (share <= level) if below else (share >= level):
            return round(end - since_s, 2)
    return None
