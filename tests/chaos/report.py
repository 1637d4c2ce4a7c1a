"""Per-fault results of the chaos suite: JSON and a Markdown table."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RECORD_ENV = "CORRAL_CHAOS_RECORD"


def output_dir(default: Path) -> Path:
    """bench/results when CORRAL_CHAOS_RECORD=1 (to commit a run), else `default` (a temporary folder)."""
    return ROOT / "bench" / "results" if os.environ.get(RECORD_ENV) == "1" else default


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if value is None:
        return "-"
    return str(value)


def _continued(counts: dict[str, int] | None) -> str:
    if not counts:
        return "-"
    return f"{counts['checked']} ({counts['exact']}, {counts['wrong']})"


def write_report(results: list[dict[str, Any]], out: Path) -> Path:
    """Writes chaos.json and chaos.md into `out`; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "CORRAL_CHAOS_RECORD=1 .venv/bin/pytest tests/chaos",
    }
    (out / "chaos.json").write_text(json.dumps({"meta": meta, "faults": results}, indent=2) + "\n")
    lines = [
        "# Chaos suite results",
        "",
        f"Recorded {meta['recorded_at']} on {meta['machine']} with `{meta['command']}`.",
        "Steady traffic through the router (3 unary loops and 1 streaming loop, half of the calls bypass",
        "the cache) while one fault is injected and removed. *During* covers calls started between the",
        "injection and the end of recovery. Recovery is from the removal of the fault (or the restart",
        "command) until 5 consecutive calls succeed within 3x the baseline p99 (at least 250 ms).",
        "",
        "A *continued* answer (a node failed mid-answer, another one continued it) is checked against the",
        "nodes' records: the client's text must be the failed node's partial answer (*exact*: that node's",
        "record shows it sent exactly that much; a killed or stopped node cannot tell) followed by the",
        "continuation the other node sent, nothing repeated or lost; *wrong* counts those that are not.",
        "",
        "| fault | calls | unary failed | stream errors | truncated | wrong answers "
        "| continued (exact, wrong) | baseline p50 ms | during p50 / p99 / max ms | recovery s "
        "| first cache hit after s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        during = r["during"]
        lines.append(
            f"| {r['fault']} | {r['total']['unary'] + r['total']['streams']} "
            f"| {r['total']['unary_failed']} {_cell(r['total']['unary_errors'])} "
            f"| {_cell(r['total']['stream_errors'])} | {r['total']['streams_truncated']} "
            f"| {r['wrong_answers']} | {_continued(r.get('continued'))} | {_cell(r['baseline']['p50_ms'])} "
            f"| {_cell(during['p50_ms'])} / {_cell(during['p99_ms'])} / {_cell(during['max_ms'])} "
            f"| {_cell(r['recovery_s'])} | {_cell(r.get('first_hit_after_s'))} |"
        )
    notes = [r for r in results if r.get("note")]
    if notes:
        lines += ["", "Notes:", ""] + [f"- **{r['fault']}**: {r['note']}" for r in notes]
    path = out / "chaos.md"
    path.write_text("\n".join(lines) + "\n")
    return path
