"""The routing scenarios' common targets: the default strategy against every other, LiteLLM and the oracle."""

from __future__ import annotations

from typing import Any

from bench.harness import report, stats
from bench.harness.systems import DEFAULT_STRATEGY

# NOTE: a p99 is over the answered requests; a system that failed more than this share of its
# requests is not a yardstick for latency (its fast failures are not in its p99).
MAX_ERROR_SHARE = 0.01


def best_p99(systems: dict[str, dict[str, Any]], prefix: str, skip: str = "") -> tuple[str, float] | None:
    """The system whose name starts with `prefix` (other than `skip`) with the lowest p99, and that p99.

    Systems that failed more than `MAX_ERROR_SHARE` of their requests (client-visible errors) are
    left out.
    """
    p99s = {
        n: f["p99_ms"]
        for n, f in systems.items()
        if n.startswith(prefix) and n != skip and f["p99_ms"] and _error_share(f) <= MAX_ERROR_SHARE
    }
    if not p99s:
        return None
    best = min(p99s, key=lambda n: p99s[n])
    return best, p99s[best]


def targets(
    scenario: str, systems: dict[str, dict[str, Any]], errors_key: str = "errors"
) -> list[report.Target]:
    """The default's p99 against the best other Corral strategy (<= 0.8x), round robin (<= 0.5x),
    LiteLLM's best (<= 0.5x) and the oracle (<= 1.3x); its p50 against the oracle's (<= 1.1x); and
    no client-visible error (counted by `errors_key`: a scenario with an overload counts those
    outside it)."""
    default = DEFAULT_STRATEGY
    mine = f"corral/{default}"
    corral = systems[mine]
    found: list[report.Target] = []

    def ratio(name: str, key: str, other: float | None, limit: float, detail: str) -> None:
        if corral[key] is not None and other:
            found.append(report.Target(name, round(corral[key] / other, 3), limit, detail))

    rr = systems.get("corral/round_robin", {}).get("p99_ms")
    for label, best, limit in (
        ("best other Corral strategy's", best_p99(systems, "corral/", skip=mine), 0.8),
        ("round-robin", ("round_robin", rr) if rr else None, 0.5),
        ("LiteLLM's best", best_p99(systems, "litellm"), 0.5),
    ):
        if best is not None:
            name, p99 = best
            ratio(
                f"{scenario}: Corral default p99 / {label} p99", "p99_ms", p99, limit,
                f"{default} p99 {corral['p99_ms']} ms, {name} p99 {p99} ms"
                f" (systems that failed over {MAX_ERROR_SHARE:.0%} of their requests left out).",
            )  # fmt: skip
    yardstick = systems.get("oracle", {})
    for key, label, limit in (("p99_ms", "p99", 1.3), ("p50_ms", "p50", 1.1)):
        ratio(
            f"{scenario}: Corral default {label} / oracle {label}", key, yardstick.get(key), limit,
            f"{default} {label} {corral[key]} ms, oracle {label} {yardstick.get(key)} ms (same arrivals).",
        )  # fmt: skip
    where = "" if errors_key == "errors" else f" ({errors_key.removeprefix('errors_').replace('_', ' ')})"
    found.append(
        report.Target(
            f"{scenario}: Corral default client-visible errors{where}",
            float(corral[errors_key]),
            0,
            f"{corral[errors_key]} of {corral['requests']} requests failed at the client{where}.",
        )
    )
    return found


def figures(result: dict[str, Any], duration_s: float, names: dict[str, str]) -> dict[str, Any]:
    """A routing scenario's figures of one system: `stats.summarise`, the requests each node served
    (`names`: node URL to id) and the spread of the p99 between rounds."""
    found = stats.summarise(result, duration_s)
    found["requests_by_node"] = stats.by_node(stats.measured(result), names)
    found["p99_by_round"] = stats.round_spread(result)
    return found


def _error_share(figures: dict[str, Any]) -> float:
    requests = figures.get("requests") or 0
    errors = figures.get("errors") or 0
    return errors / requests if requests else 0.0
