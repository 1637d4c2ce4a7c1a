"""Generates the README's results block from bench/results/<scenario>.json (never typed by hand).

    PYTHONPATH=.:gen/python .venv/bin/python -m scripts.results_table [--check] [--print]

Rewrites what lies between `<!-- results:start -->` and `<!-- results:end -->` in README.md (nothing
else; without the markers the README is left alone). `--check` exits 1 when the block is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
SCENARIOS = (
    "overhead",
    "heterogeneous",
    "heterogeneous-90",
    "slowdown",
    "bursty",
    "mixed-models",
    "node-failure",
    "multi-turn",
    "cache",
    "cold-start",
    "rag",
)
# The scenario-specific figure shown next to the common ones.
EXTRA: dict[str, tuple[str, str]] = {
    "overhead": ("added_p99_ms", "added p99 {} ms"),
    "heterogeneous": ("requests_by_node", "{}"),
    "heterogeneous-90": ("requests_by_node", "{}"),
    "slowdown": ("time_to_halve_s", "share to the slowed node halved in {} s"),
    "bursty": ("refusals_in_burst", "{} refused in the overload"),
    "mixed-models": ("swaps", "{} model loads"),
    "node-failure": ("time_to_readmit_s", "re-admitted after {} s"),
    "multi-turn": ("ttft_mean_ms", "TTFT mean {} ms"),
    "cache": ("hit_rate", "hit rate {}"),
    "cold-start": ("ttft_mean_ms", "TTFT mean {} ms"),
    "rag": ("answer_hit_rate", "answer hits {}"),
}


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def load(results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """The result documents present, by scenario."""
    docs = {}
    for name in SCENARIOS:
        path = results / f"{name}.json"
        if path.exists():
            docs[name] = json.loads(path.read_text())
    return docs


def render(docs: dict[str, dict[str, Any]]) -> str:
    """The Markdown block: targets first, then each scenario's systems."""
    if not docs:
        return "No benchmark results yet: run `make bench`."
    versions = next(iter(docs.values()))["versions"]
    machine = next(iter(docs.values()))["machine"]
    lines = [
        f"Measured on one {machine['cpus']}-core machine ({machine['cpu_model']}), every system on the same "
        f"simulated fleet and workload; LiteLLM proxy {versions.get('litellm') or '(not installed)'} with "
        "`num_retries: 2`, `allowed_fails: 3`, `cooldown_time: 5`, one worker. Details and method: "
        "[docs/benchmarks.md](docs/benchmarks.md).",
        "",
        "| target | measured | goal | verdict |",
        "|---|---:|---:|---|",
    ]
    for doc in docs.values():
        for t in doc.get("targets", []):
            verdict = {True: "met", False: f"**missed** ({_num(t['value'])})", None: "not measured"}[t["met"]]
            lines.append(
                f"| {t['name']} | {_num(t['value'])} | {t['comparison']} {t['threshold']:g} | {verdict} |"
            )
    lines += [
        "",
        "| scenario | system | p50 ms | p99 ms | rps | errors | also |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, doc in docs.items():
        key, fmt = EXTRA[name]
        link = f"[{name}](bench/results/{name}.md)"
        for system, f in doc["systems"].items():
            extra = fmt.format(_num(f.get(key))) if f.get(key) is not None else ""
            lines.append(
                f"| {link} | {system} | {_num(f['p50_ms'])} | {_num(f['p99_ms'])} | "
                f"{_num(f['throughput_rps'])} | {f['errors']} | {extra} |"
            )
            link = ""
        if doc.get("smoke"):
            lines.append(f"| | *{name} is a smoke run* | | | | | |")
    return "\n".join(lines)


def rewrite(text: str, block: str) -> str:
    """`text` with the block between the markers replaced (unchanged without the markers)."""
    if START not in text or END not in text:
        return text
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def update_readme(readme: Path = README, results: Path = RESULTS) -> bool:
    """Rewrites the README block; returns True when it changed."""
    text = readme.read_text()
    new = rewrite(text, render(load(results)))
    if new != text:
        readme.write_text(new)
        return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md's block is stale")
    parser.add_argument("--print", action="store_true", help="print the block, change nothing")
    args = parser.parse_args()
    block = render(load())
    if args.print:
        print(block)
        return
    if args.check:
        sys.exit(0 if rewrite(README.read_text(), block) == README.read_text() else 1)
    if START not in README.read_text():
        print(f"README.md has no {START} marker: nothing rewritten")
        return
    print("README.md updated" if update_readme() else "README.md already up to date")


if __name__ == "__main__":
    main()
