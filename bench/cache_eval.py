"""Evaluates the semantic tier's threshold and near-miss guard on the labelled pairs with MiniLM.

Two measurements on bench/data/cache_pairs.jsonl (paraphrases that should hit, near-misses that
must not):

- pairwise: each pair alone, `a` stored and `b` looked up;
- retrieval: every distinct `a` stored in one namespace, each `b` looked up against all of them
  (nearest `--candidates` above the threshold, guard applied in order, as the service does); a
  paraphrase counts as a hit only when it finds its own `a`, any hit of a near-miss is wrong.

`--set guard-eval --split tune|test` measures the current guard on the near-miss evaluation set
instead (bench/data/guard_eval/pairs.jsonl, bench/guard_eval.py), at the operating threshold only:
paraphrase hits and wrong hits overall, by kind and by domain, pairwise and in retrieval over every
`a` of the split; the two sets above, unchanged, at the same threshold for comparison; the guard's
cost per check (bench/guard_cost.py) and the machine's load. It writes guard_eval_<split>.json and
.md. Only the tune split may guide changes to the guard; test is for reporting. `--words THRESHOLD`
gives the guard the optional word judge (services/cache/guard_words.py, MiniLM vectors of the
replaced words) for the run.

Run: `make bench-cache-eval` (installs the `eval` extra) or
`PYTHONPATH=.:gen/python .venv/bin/python bench/cache_eval.py [--set guard-eval --split tune]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from bench import guard_cost, guard_eval  # noqa: E402
from services.cache import guard  # noqa: E402
from services.cache.embedders import MiniLMEmbedder  # noqa: E402
from services.cache.guard_words import EmbeddingWordJudge  # noqa: E402

DATA = ROOT / "bench" / "data" / "cache_pairs.jsonl"
# NOTE: written after the guard's rules were frozen, and never used to change them.
HOLDOUT = ROOT / "bench" / "data" / "cache_pairs_holdout.jsonl"
RESULTS = ROOT / "bench" / "results"
THRESHOLDS = (0.75, 0.78, 0.80, 0.82, 0.84, 0.86, 0.88, 0.90)
# NOTE: `--words` sets the guard's word judge (guard_words.py) for every check of this run.
WORDS: EmbeddingWordJudge | None = None


def check(query: str, stored: str) -> str | None:
    """guard.check with the run's word judge, if any."""
    return guard.check(query, stored, WORDS)


def prepare_words(
    embedder: MiniLMEmbedder,
    rows: list[dict[str, Any]],
    anchors: list[str],
    sims: np.ndarray,
    candidates: int,
) -> None:
    """Embeds the spans the word judge will be asked about: each `b` against its `a` and its
    nearest `candidates` anchors."""
    if WORDS is None:
        return
    judge = WORDS
    pairs = {(r["b"], r["a"]) for r in rows}
    for i, r in enumerate(rows):
        pairs.update((r["b"], anchors[j]) for j in np.argsort(-sims[i])[:candidates])

    texts = sorted({text for query, stored in pairs for text in judge.missing(query, stored)})
    if texts:
        judge.remember(texts, embedder.encode(texts))


def load_pairs(path: Path) -> list[dict[str, str]]:
    """The labelled pairs."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rates(rows: list[dict[str, Any]], hits: list[bool]) -> dict[str, Any]:
    """Hit rate on paraphrases and wrong-hit rate on near-misses (overall and by kind)."""
    para = [h for r, h in zip(rows, hits, strict=True) if r["label"] == "paraphrase"]
    near = [h for r, h in zip(rows, hits, strict=True) if r["label"] == "near_miss"]
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for r, h in zip(rows, hits, strict=True):
        if r["label"] == "near_miss":
            by_kind[r["kind"]].append(h)
    return {
        "paraphrase_hit_pct": round(100 * float(np.mean(para)), 1) if para else None,
        "near_miss_wrong_hit_pct": round(100 * float(np.mean(near)), 1) if near else None,
        "paraphrases": len(para),
        "near_misses": len(near),
        "wrong_hits_by_kind": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by_kind.items())},
    }


def pairwise(rows: list[dict[str, Any]], cos: np.ndarray, threshold: float, use_guard: bool) -> list[bool]:
    """Per pair: would `b` hit the stored `a`?"""
    return [
        bool(c >= threshold) and (not use_guard or check(r["b"], r["a"]) is None)
        for r, c in zip(rows, cos, strict=True)
    ]


def retrieval(
    rows: list[dict[str, Any]],
    anchors: list[str],
    sims: np.ndarray,
    threshold: float,
    use_guard: bool,
    candidates: int,
) -> tuple[list[bool], list[str]]:
    """Per probe `b`: the anchor served from a store holding every `a` (wrong ones count as misses
    for paraphrases and as wrong hits for near-misses)."""
    good: list[bool] = []
    served: list[str] = []
    for i, r in enumerate(rows):
        order = np.argsort(-sims[i])[:candidates]
        hit = ""
        for j in order:
            if sims[i, j] < threshold:
                break
            if not use_guard or check(r["b"], anchors[j]) is None:
                hit = anchors[j]
                break
        served.append(hit)
        good.append(hit == r["a"] if r["label"] == "paraphrase" else hit != "")
    return good, served


def evaluate(
    embedder: MiniLMEmbedder, path: Path, operating: float, candidates: int, show_errors: bool
) -> dict[str, Any]:
    """Sweeps thresholds over one labelled file; prints its table."""
    rows = load_pairs(path)
    anchors = sorted({r["a"] for r in rows})
    started = time.perf_counter()
    a_vec = np.stack(embedder.encode([r["a"] for r in rows]))
    b_vec = np.stack(embedder.encode([r["b"] for r in rows]))
    anchor_vec = np.stack(embedder.encode(anchors))
    embed_ms = (time.perf_counter() - started) * 1000 / (2 * len(rows) + len(anchors))
    cos = (a_vec * b_vec).sum(axis=1)
    sims = b_vec @ anchor_vec.T
    started = time.perf_counter()
    for r in rows:
        guard.analyse.cache_clear()
        check(r["b"], r["a"])
    guard_us = (time.perf_counter() - started) * 1e6 / len(rows)
    splits = ["all", *sorted({r["split"] for r in rows} - {"all"})]
    report: dict[str, Any] = {
        "data": str(path.relative_to(ROOT)),
        "pairs": len(rows),
        "paraphrases": sum(r["label"] == "paraphrase" for r in rows),
        "near_misses": sum(r["label"] == "near_miss" for r in rows),
        "embed_ms_per_text_batched": round(embed_ms, 2),
        "guard_us_per_check_uncached": round(guard_us, 1),
        "sweep": [],
    }
    for threshold in sorted({*THRESHOLDS, operating}):
        entry: dict[str, Any] = {"threshold": threshold}
        for mode in ("pairwise", "retrieval"):
            for use_guard in (False, True):
                for split in splits:
                    picked = [i for i, r in enumerate(rows) if split == "all" or r["split"] == split]
                    sub = [rows[i] for i in picked]
                    if mode == "pairwise":
                        hits = pairwise(sub, cos[picked], threshold, use_guard)
                    else:
                        hits, _ = retrieval(sub, anchors, sims[picked], threshold, use_guard, candidates)
                    entry[f"{mode}/{'guard' if use_guard else 'cosine'}/{split}"] = rates(sub, hits)
        report["sweep"].append(entry)

    print(f"\n{report['data']}: {report['paraphrases']} paraphrases, {report['near_misses']} near-misses")
    print(
        f"{'threshold':>9}  {'mode':<9} {'split':<7} "
        f"{'cosine: para hit / wrong':>26} {'guard: para hit / wrong':>26}"
    )
    for entry in report["sweep"]:
        for mode in ("pairwise", "retrieval"):
            for split in splits:
                c = entry[f"{mode}/cosine/{split}"]
                g = entry[f"{mode}/guard/{split}"]
                mark = (
                    " <" if entry["threshold"] == operating and mode == "retrieval" and split == "all" else ""
                )
                print(
                    f"{entry['threshold']:>9.2f}  {mode:<9} {split:<7} "
                    f"{c['paraphrase_hit_pct']:>12.1f}% / {c['near_miss_wrong_hit_pct']:>5.1f}%      "
                    f"{g['paraphrase_hit_pct']:>12.1f}% / {g['near_miss_wrong_hit_pct']:>5.1f}%{mark}"
                )
    if show_errors:
        _, served = retrieval(rows, anchors, sims, operating, True, candidates)
        for i, r in enumerate(rows):
            wrong = (served[i] != r["a"]) if r["label"] == "paraphrase" else served[i] != ""
            if wrong:
                reason = check(r["b"], r["a"])
                print(f"  {r['id']} {r['split']} cos={cos[i]:.3f} guard={reason} {r['a']!r} -> {r['b']!r}")
                if served[i] and served[i] != r["a"]:
                    print(f"      served {served[i]!r}")
    return report


def _pct(hits: list[bool]) -> float | None:
    return round(100 * float(np.mean(hits)), 1) if hits else None


def breakdown(rows: list[dict[str, Any]], hits: list[bool]) -> dict[str, Any]:
    """Overall rates, plus per kind (hit % of a paraphrase kind, wrong-hit % of a near-miss kind)
    and per domain (both)."""
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_domain: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r, h in zip(rows, hits, strict=True):
        by_kind[r["kind"]].append(h)
        by_domain[r["domain"]][r["label"]].append(h)
    return {
        "overall": rates(rows, hits),
        "by_kind": {
            kind: {
                "label": guard_eval.KIND_LABEL[kind],
                "pct": _pct(by_kind[kind]),
                "count": f"{sum(by_kind[kind])}/{len(by_kind[kind])}",
            }
            for kind in guard_eval.KINDS
            if by_kind[kind]
        },
        "by_domain": {
            domain: {
                "paraphrase_hit_pct": _pct(by_domain[domain]["paraphrase"]),
                "near_miss_wrong_hit_pct": _pct(by_domain[domain]["near_miss"]),
            }
            for domain in guard_eval.DOMAINS
            if domain in by_domain
        },
    }


def embed_set(
    embedder: MiniLMEmbedder, rows: list[dict[str, Any]], candidates: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A labelled set's anchors (its distinct `a`s), each pair's cosine and each `b`'s similarity to
    every anchor, with the word judge's spans embedded (prepare_words)."""
    anchors = sorted({r["a"] for r in rows})
    a_vec = np.stack(embedder.encode([r["a"] for r in rows]))
    b_vec = np.stack(embedder.encode([r["b"] for r in rows]))
    anchor_vec = np.stack(embedder.encode(anchors))
    cos = (a_vec * b_vec).sum(axis=1)
    sims = b_vec @ anchor_vec.T
    prepare_words(embedder, rows, anchors, sims, candidates)
    return anchors, cos, sims


def evaluate_guard_set(
    embedder: MiniLMEmbedder, split: str, operating: float, candidates: int, show_errors: bool
) -> dict[str, Any]:
    """The current guard on one split of the near-miss evaluation set, at the operating threshold."""
    rows = guard_eval.load(split)
    # NOTE: the store holds the split's own anchors only, so a tune run never reads test questions.
    anchors, cos, sims = embed_set(embedder, rows, candidates)
    reasons = [check(r["b"], r["a"]) for r in rows]
    report: dict[str, Any] = {
        "data": str(guard_eval.DATA.relative_to(ROOT)),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "split": split,
        "pairs": len(rows),
        "paraphrases": sum(r["label"] == "paraphrase" for r in rows),
        "near_misses": sum(r["label"] == "near_miss" for r in rows),
        "anchors": len(anchors),
        "threshold": operating,
        # NOTE: the rule that refuses each paraphrase clearing the threshold (pairwise): where the
        # guard's false refusals come from.
        "guard_refusals_of_paraphrases_above_threshold": dict(
            Counter(
                reason or "accepted"
                for r, c, reason in zip(rows, cos, reasons, strict=True)
                if r["label"] == "paraphrase" and c >= operating
            ).most_common()
        ),
    }
    served: list[str] = []
    for mode in ("pairwise", "retrieval"):
        for use_guard in (False, True):
            if mode == "pairwise":
                hits = pairwise(rows, cos, operating, use_guard)
            else:
                hits, picked = retrieval(rows, anchors, sims, operating, use_guard, candidates)
                if use_guard:
                    served = picked
            report[f"{mode}/{'guard' if use_guard else 'cosine'}"] = breakdown(rows, hits)

    report["guard_refusals_by_reason"] = {
        label: dict(
            Counter(
                reason or "accepted" for r, reason in zip(rows, reasons, strict=True) if r["label"] == label
            )
        )
        for label in ("paraphrase", "near_miss")
    }
    report["earlier_sets"] = [earlier_set(embedder, path, operating, candidates) for path in (DATA, HOLDOUT)]
    # NOTE: timing only (labels unused); the split's own pairs, so a tune run reads no test question.
    report["guard_cost"] = guard_cost.measure(repeat=3, rows=[(r["b"], r["a"]) for r in rows])
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    print(
        f"\n{report['data']} [{split}]: {report['paraphrases']} paraphrases, "
        f"{report['near_misses']} near-misses, threshold {operating:.2f}, {candidates} candidates"
    )
    print(f"{'':<28} {'pairwise':>21} {'retrieval':>21}   (paraphrase hit % / near-miss wrong-hit %)")
    print(f"{'':<28} {'cosine':>10} {'guard':>10} {'cosine':>10} {'guard':>10}")

    def cell(entry: dict[str, Any]) -> str:
        return f"{entry['pct']:>9.1f}%" if entry["pct"] is not None else f"{'-':>10}"

    keys = ("pairwise/cosine", "pairwise/guard", "retrieval/cosine", "retrieval/guard")
    for label, field in (
        ("paraphrase hit", "paraphrase_hit_pct"),
        ("near-miss wrong hit", "near_miss_wrong_hit_pct"),
    ):
        print(f"{label:<28} " + " ".join(f"{report[k]['overall'][field]:>9.1f}%" for k in keys))
    print("by kind:")
    for kind in guard_eval.KINDS:
        entries = [report[k]["by_kind"].get(kind) for k in keys]
        if entries[0] is None:
            continue
        what = "wrong" if guard_eval.KIND_LABEL[kind] == "near_miss" else "hit"
        print(f"  {kind + ' (' + what + ')':<26} " + " ".join(cell(e) for e in entries if e is not None))
    print("by domain (paraphrase hit % / wrong-hit %):")
    for domain in guard_eval.DOMAINS:
        parts = []
        for k in keys:
            d = report[k]["by_domain"].get(domain)
            parts.append(f"{d['paraphrase_hit_pct']:.1f}/{d['near_miss_wrong_hit_pct']:.1f}" if d else "-")
        print(f"  {domain:<26} " + " ".join(f"{p:>10}" for p in parts))
    refusals = report["guard_refusals_of_paraphrases_above_threshold"]
    print(f"guard on paraphrases at or above the threshold: {refusals}")
    for earlier in report["earlier_sets"]:
        print(
            f"{earlier['data']} (unchanged, {earlier['paraphrases']} paraphrases, "
            f"{earlier['near_misses']} near-misses): "
            + ", ".join(
                f"{k} {earlier[k]['paraphrase_hit_pct']:.1f}% / {earlier[k]['near_miss_wrong_hit_pct']:.1f}%"
                for k in keys
            )
        )
    cost = report["guard_cost"]
    print(
        "guard.check per pair: "
        + ", ".join(
            f"{k} p50 {cost[k]['p50_us']:.0f} µs p99 {cost[k]['p99_us']:.0f} µs"
            for k in ("cold", "service", "warm")
        )
        + f"; load {report['load_average_at_start']} → {report['load_average_at_end']}"
    )
    if show_errors:
        for i, r in enumerate(rows):
            wrong = (served[i] != r["a"]) if r["label"] == "paraphrase" else served[i] != ""
            if wrong:
                where = f"{r['id']} {r['kind']} {r['domain']} cos={cos[i]:.3f} guard={reasons[i]}"
                print(f"  {where} {r['a']!r} -> {r['b']!r}")
                if served[i] and served[i] != r["a"]:
                    print(f"      served {served[i]!r}")
    return report


def earlier_set(embedder: MiniLMEmbedder, path: Path, operating: float, candidates: int) -> dict[str, Any]:
    """One of the older labelled sets (unchanged), at the operating threshold: the comparison the
    guard-eval report carries."""
    rows = load_pairs(path)
    anchors, cos, sims = embed_set(embedder, rows, candidates)
    result: dict[str, Any] = {
        "data": str(path.relative_to(ROOT)),
        "paraphrases": sum(r["label"] == "paraphrase" for r in rows),
        "near_misses": sum(r["label"] == "near_miss" for r in rows),
    }
    for use_guard in (False, True):
        mode = "guard" if use_guard else "cosine"
        result[f"pairwise/{mode}"] = rates(rows, pairwise(rows, cos, operating, use_guard))
        result[f"retrieval/{mode}"] = rates(
            rows, retrieval(rows, anchors, sims, operating, use_guard, candidates)[0]
        )
    return result


def markdown(result: dict[str, Any]) -> str:
    """The guard-eval report as Markdown (bench/results/guard_eval_<split>.md)."""
    keys = ("pairwise/cosine", "pairwise/guard", "retrieval/cosine", "retrieval/guard")
    cost = result["guard_cost"]
    lines = [
        f"# Near-miss guard on the guard-eval set, {result['split']} split",
        "",
        f"`{result['data']}`, split `{result['split']}`: {result['paraphrases']} paraphrases, "
        f"{result['near_misses']} near-misses, {result['anchors']} stored prompts in retrieval. "
        f"Embedder {result['embedder']}, threshold {result['threshold']:.2f}, "
        f"{result['candidates']} candidates. "
        f"{result['machine']}; load average {result['load_average_at_start']} at start, "
        f"{result['load_average_at_end']} at end. Written by "
        f"`bench/cache_eval.py --set guard-eval --split {result['split']}`.",
        "",
        "| | pairwise, cosine | pairwise, guard | retrieval, cosine | **retrieval, guard** |",
        "|---|---|---|---|---|",
    ]
    for label, field in (
        ("paraphrase hits", "paraphrase_hit_pct"),
        ("near-miss wrong hits", "near_miss_wrong_hit_pct"),
    ):
        lines.append(
            f"| {label} | " + " | ".join(f"{result[k]['overall'][field]:.1f} %" for k in keys) + " |"
        )
    lines += ["", "By kind (paraphrase kinds: hit %; near-miss kinds: wrong-hit %):", ""]
    lines += [
        "| kind | label | pairwise, cosine | pairwise, guard | retrieval, cosine | **retrieval, guard** |"
    ]
    lines += ["|---|---|---|---|---|---|"]
    for kind in guard_eval.KINDS:
        entries = [result[k]["by_kind"].get(kind) for k in keys]
        if entries[0] is None:
            continue
        cells = " | ".join(f"{e['pct']:.1f} % ({e['count']})" for e in entries if e is not None)
        lines.append(f"| `{kind}` | {guard_eval.KIND_LABEL[kind].replace('_', '-')} | {cells} |")
    lines += ["", "By domain (paraphrase hit % / near-miss wrong-hit %):", ""]
    lines += ["| domain | pairwise, cosine | pairwise, guard | retrieval, cosine | **retrieval, guard** |"]
    lines += ["|---|---|---|---|---|"]
    for domain in guard_eval.DOMAINS:
        parts = []
        for k in keys:
            d = result[k]["by_domain"].get(domain)
            parts.append(f"{d['paraphrase_hit_pct']:.1f} / {d['near_miss_wrong_hit_pct']:.1f}" if d else "-")
        lines.append(f"| `{domain}` | " + " | ".join(parts) + " |")
    lines += ["", "The guard's verdict on each pair (pairwise, before the threshold):", ""]
    for label, counts in result["guard_refusals_by_reason"].items():
        lines.append(f"- {label.replace('_', '-')}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines += ["", "The earlier labelled sets, unchanged, at the same threshold:", ""]
    lines += ["| set | pairwise, cosine | pairwise, guard | retrieval, cosine | **retrieval, guard** |"]
    lines += ["|---|---|---|---|---|"]
    for earlier in result["earlier_sets"]:
        cells = " | ".join(
            f"{earlier[k]['paraphrase_hit_pct']:.1f} % / {earlier[k]['near_miss_wrong_hit_pct']:.1f} %"
            for k in keys
        )
        lines.append(
            f"| `{earlier['data']}` ({earlier['paraphrases']} + {earlier['near_misses']}) | {cells} |"
        )
    lines += [
        "",
        f"Guard cost per check on CPU (`bench/guard_cost.py`, the split's {cost['pairs']} pairs × "
        f"{cost['repeat']}, load {cost['load_average_at_start']} → {cost['load_average_at_end']}):",
        "",
        "| guard.check | p50 | p99 |",
        "|---|---|---|",
        f"| cold: both prompts analysed | {cost['cold']['p50_us']:.0f} µs | "
        f"{cost['cold']['p99_us']:.0f} µs |",
        f"| service: stored prompt's analysis cached | {cost['service']['p50_us']:.0f} µs | "
        f"{cost['service']['p99_us']:.0f} µs |",
        f"| warm: both cached (rules only) | {cost['warm']['p50_us']:.0f} µs | "
        f"{cost['warm']['p99_us']:.0f} µs |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Embeds the pairs, sweeps thresholds, prints tables and writes bench/results/cache_eval.json
    (with `--set guard-eval`: the one split at the operating threshold, guard_eval_<split>.json)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.80, help="the operating point (marked <)")
    parser.add_argument("--candidates", type=int, default=4, help="nearest entries the guard examines")
    parser.add_argument("--data", type=Path, action="append", help="labelled JSONL files (default: both)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--show-errors", action="store_true", help="list the pairs judged wrongly")
    parser.add_argument(
        "--set",
        choices=("cache-pairs", "guard-eval"),
        default="cache-pairs",
        help="cache-pairs: the threshold sweep on --data; guard-eval: the guard's evaluation set",
    )
    parser.add_argument(
        "--split",
        choices=guard_eval.SPLITS,
        default="tune",
        help="guard-eval only; test is for reporting, never for changing the guard",
    )
    parser.add_argument(
        "--words",
        type=float,
        metavar="THRESHOLD",
        help="guard-eval only: a word judge (MiniLM vectors of replaced words) at this cosine",
    )
    args = parser.parse_args()

    global WORDS
    embedder = MiniLMEmbedder()
    if args.words is not None:
        WORDS = EmbeddingWordJudge(embedder, threshold=args.words)
    started = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - started
    print(f"{embedder.name}, {args.candidates} candidates; model load {load_s:.1f} s")
    if args.set == "guard-eval":
        result = evaluate_guard_set(embedder, args.split, args.threshold, args.candidates, args.show_errors)
        result = {
            "embedder": embedder.name,
            "candidates": args.candidates,
            "word_judge": args.words,
            **result,
        }
        if not args.no_write:
            RESULTS.mkdir(parents=True, exist_ok=True)
            out = RESULTS / f"guard_eval_{args.split}.json"
            out.write_text(json.dumps(result, indent=2) + "\n")
            out.with_suffix(".md").write_text(markdown(result))
            print(f"wrote {out} and {out.with_suffix('.md')}")
        return
    report = {
        "embedder": embedder.name,
        "model_load_s": round(load_s, 1),
        "candidates": args.candidates,
        "operating_threshold": args.threshold,
        "datasets": [
            evaluate(embedder, path, args.threshold, args.candidates, args.show_errors)
            for path in (args.data or [DATA, HOLDOUT])
        ],
    }
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "cache_eval.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS / 'cache_eval.json'}")


if __name__ == "__main__":
    main()
