"""The near-miss guard's cost per check on CPU, p50 and p99 (no embedder, no services).

Every pair of the labelled sets (bench/data/guard_eval/pairs.jsonl, bench/data/cache_pairs*.jsonl)
is checked as the service checks a candidate, in three ways:

- cold: both prompts analysed afresh (the analysis cache cleared before each check), the cost of a
  lookup whose query and candidate the process has never seen;
- service: the candidate's analysis cached, the query's not (a stored prompt comes back as a
  candidate again and again; the engine analyses the query while PostgreSQL searches);
- warm: both analyses cached, the comparison of the rules alone.

`--words` also times the optional word judge (services/cache/guard_words.py) with MiniLM (the
`eval` extra): per pair, with an empty LRU, the replaced spans it embeds (none unless the prompts
differ in one replaced span) and the time to embed them in one batch, the extra cost of a lookup
whose candidate reaches the judge.

Run: `PYTHONPATH=.:gen/python .venv/bin/python bench/guard_cost.py [--repeat 5] [--words]`. It prints
the table; bench/cache_eval.py records the rules' measurement in its guard-eval results.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from bench import guard_eval  # noqa: E402
from services.cache import guard  # noqa: E402

CACHE_PAIRS = (
    ROOT / "bench" / "data" / "cache_pairs.jsonl",
    ROOT / "bench" / "data" / "cache_pairs_holdout.jsonl",
)


def pairs() -> list[tuple[str, str]]:
    """(query, stored prompt) of every labelled pair: the guard-eval set (both splits: cost does
    not depend on the labels) and the two older sets."""
    rows = [(r["b"], r["a"]) for r in guard_eval.load()]
    for path in CACHE_PAIRS:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append((row["b"], row["a"]))
    return rows


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_us": round(_percentile(samples, 0.50), 1),
        "p99_us": round(_percentile(samples, 0.99), 1),
        "max_us": round(max(samples), 1),
        "mean_us": round(sum(samples) / len(samples), 1),
    }


def measure(repeat: int = 3, rows: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Times guard.check per (query, stored) pair (default: every labelled pair), cold, as in the
    service and warm; p50/p99 in microseconds."""
    rows = rows if rows is not None else pairs()
    cold: list[float] = []
    service: list[float] = []
    warm: list[float] = []
    clock = time.perf_counter_ns
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    gc.disable()
    try:
        for _ in range(repeat):
            for query, stored in rows:
                guard.analyse.cache_clear()
                started = clock()
                guard.check(query, stored)
                cold.append((clock() - started) / 1000)
                guard.analyse.cache_clear()
                guard.analyse(stored)
                started = clock()
                guard.check(query, stored)
                service.append((clock() - started) / 1000)
                started = clock()
                guard.check(query, stored)
                warm.append((clock() - started) / 1000)
    finally:
        gc.enable()
    return {
        "pairs": len(rows),
        "repeat": repeat,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cold": _summary(cold),
        "service": _summary(service),
        "warm": _summary(warm),
    }


def measure_words(rows: list[tuple[str, str]] | None = None, repeat: int = 3) -> dict[str, Any]:
    """The word judge's extra cost per pair with MiniLM: how many pairs embed spans, and the time to
    embed them (an empty LRU each time, the worst case); p50/p99 over the pairs that embed."""
    from services.cache.embedders import MiniLMEmbedder
    from services.cache.guard_words import EmbeddingWordJudge

    rows = rows if rows is not None else pairs()
    embedder = MiniLMEmbedder()
    embedder.load()
    embedder.encode(["warm up"])
    spans: list[int] = []
    embed: list[float] = []
    query_embed: list[float] = []
    clock = time.perf_counter_ns
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    for query, stored in rows:
        texts = EmbeddingWordJudge(embedder).missing(query, stored)
        spans.append(len(texts))
        if not texts:
            continue
        for _ in range(repeat):
            started = clock()
            embedder.encode(texts)
            embed.append((clock() - started) / 1000)
            # NOTE: the lookup's own embedding of the query, for comparison on the same machine.
            started = clock()
            embedder.encode([query])
            query_embed.append((clock() - started) / 1000)
    return {
        "pairs": len(rows),
        "repeat": repeat,
        "pairs_embedding_spans": sum(1 for n in spans if n),
        "spans_per_embedding_pair": round(sum(spans) / max(1, sum(1 for n in spans if n)), 2),
        "embed": _summary(embed) if embed else None,
        "query_embed": _summary(query_embed) if query_embed else None,
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    """Prints the guard's cost per check."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes over the pairs")
    parser.add_argument("--words", action="store_true", help="also time the word judge with MiniLM")
    args = parser.parse_args()
    result = measure(args.repeat)
    print(
        f"{result['pairs']} pairs × {result['repeat']}; {result['machine']}; "
        f"load {result['load_average_at_start']} → {result['load_average_at_end']}"
    )
    print(f"{'guard.check':<36} {'p50':>9} {'p99':>9} {'max':>9}")
    for key, what in (
        ("cold", "cold (both prompts analysed)"),
        ("service", "service (stored prompt cached)"),
        ("warm", "warm (rules only)"),
    ):
        s = result[key]
        print(f"{what:<36} {s['p50_us']:>7.1f}µs {s['p99_us']:>7.1f}µs {s['max_us']:>7.1f}µs")

    if args.words:
        words = measure_words(repeat=args.repeat)
        print(
            f"word judge (MiniLM): {words['pairs_embedding_spans']} of {words['pairs']} pairs embed spans "
            f"({words['spans_per_embedding_pair']} texts each); load {words['load_average_at_start']} → "
            f"{words['load_average_at_end']}"
        )
        e = words["embed"]
        if e:
            for what, s in (
                ("embedding them (one batch, cold LRU)", e),
                ("the query's own embedding", words["query_embed"]),
            ):
                print(f"{what:<36} {s['p50_us']:>7.1f}µs {s['p99_us']:>7.1f}µs {s['max_us']:>7.1f}µs")


if __name__ == "__main__":
    main()
