"""Result files of a scenario: JSON (machine, versions, parameters, figures, targets), Markdown and a PNG."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.systems import LITELLM_VERSION, litellm_installed
from tests.helpers.procs import ROOT

REQUIRED_KEYS = ("scenario", "systems")
SYSTEM_KEYS = ("p50_ms", "p99_ms", "throughput_rps", "errors")


@dataclass
class Target:
    """A target of the issue checked on one run: `value` compared with `threshold` (<= unless stated)."""

    name: str
    value: float | None
    threshold: float
    detail: str
    higher_is_better: bool = False

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "comparison": ">=" if self.higher_is_better else "<=",
            "met": self.met,
            "detail": self.detail,
        }


@dataclass
class Result:
    """Everything a scenario reports."""

    scenario: str
    title: str
    description: str
    parameters: dict[str, Any]
    systems: dict[str, dict[str, Any]]
    columns: list[tuple[str, str]]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    smoke: bool = False
    with_litellm: bool = True


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The 1-minute load average when each scenario started (mark_start), so that a result shows whether
# its run began on a quiet machine; the load at the end also holds the run's own work.
_LOAD_AT_START: dict[str, float] = {}


def mark_start(scenario: str) -> float:
    """Record, and return, the load average as `scenario` starts (bench.run calls it before each
    scenario; a benchmark with its own entry point, such as bench/rag.py, calls it itself)."""
    load = _LOAD_AT_START[scenario] = round(os.getloadavg()[0], 2)
    return load


def machine(scenario: str | None = None) -> dict[str, Any]:
    """The machine the run was on, with the load average at the start of `scenario` when recorded."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m_at_start": _LOAD_AT_START.get(scenario) if scenario else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def versions() -> dict[str, Any]:
    """Versions of the systems and of the client libraries."""
    import aiohttp
    import grpc

    return {
        "corral_commit": _git_commit(),
        "litellm": LITELLM_VERSION if litellm_installed() else None,
        "aiohttp": aiohttp.__version__,
        "grpcio": grpc.__version__,
    }


def to_json(result: Result) -> dict[str, Any]:
    """The JSON document of a result (the schema the README table and the smoke test read)."""
    return {
        "scenario": result.scenario,
        "title": result.title,
        "smoke": result.smoke,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(result.scenario),
        "versions": versions(),
        "litellm_included": result.with_litellm,
        "parameters": result.parameters,
        "systems": result.systems,
        "targets": [t.as_dict() for t in result.targets],
        "notes": result.notes,
        **result.extra,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "–"
    return str(value)


def to_markdown(result: Result, doc: dict[str, Any]) -> str:
    """The Markdown summary the README links."""
    lines = [f"# {result.title}", "", result.description, ""]
    if result.smoke:
        lines += ["**Smoke run** (seconds-long, tiny load): checks the harness, not the systems.", ""]
    if not result.with_litellm:
        lines += ["**LiteLLM was not installed for this run: Corral only.**", ""]
    header = [label for _, label in result.columns]
    lines += ["| system | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for name, figures in result.systems.items():
        lines.append(f"| {name} | " + " | ".join(_cell(figures.get(key)) for key, _ in result.columns) + " |")
    if result.targets:
        lines += ["", "## Targets", ""]
        for t in result.targets:
            verdict = {True: "met", False: "**MISSED**", None: "not measured"}[t.met]
            value = "–" if t.value is None else f"{t.value:.3g}"
            lines.append(f"- {t.name}: {value} (target {'>=' if t.higher_is_better else '<='} "
                         f"{t.threshold:g}) — {verdict}. {t.detail}")  # fmt: skip
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    m, v = doc["machine"], doc["versions"]
    start = m.get("load_average_1m_at_start")
    load = f"load average {m['load_average_1m']} at the end"
    if start is not None:
        load = f"load average {start} at the start, {m['load_average_1m']} at the end"
    lines += [
        "",
        "## Run",
        "",
        f"- {doc['date_utc']}, {m['cpus']} × {m['cpu_model']}, Python {m['python']}, "
        f"{load}; Corral {v['corral_commit']}, "
        f"LiteLLM {v['litellm'] or 'not installed'}.",
        f"- Parameters: `{json.dumps(result.parameters, sort_keys=True)}`",
        f"- Raw figures: [{result.scenario}.json]({result.scenario}.json); plot: "
        f"![{result.scenario}]({result.scenario}.png)",
        "- Reproduce: `make bench` or "
        f"`PYTHONPATH=.:gen/python .venv/bin/python -m bench.run {result.scenario}`.",
        "",
    ]
    return "\n".join(lines)


def write(result: Result, out_dir: Path, plot: Callable[[Any], None] | None) -> dict[str, Any]:
    """Writes <scenario>.json, .md and .png into `out_dir`; returns the JSON document."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = to_json(result)
    check_schema(doc)
    (out_dir / f"{result.scenario}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / f"{result.scenario}.md").write_text(to_markdown(result, doc))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 5.5), dpi=100)
    if plot is not None:
        plot(fig)
    fig.suptitle(result.title + (" (smoke)" if result.smoke else ""))
    fig.tight_layout()
    fig.savefig(out_dir / f"{result.scenario}.png")
    plt.close(fig)
    return doc


def check_schema(doc: dict[str, Any]) -> None:
    """Raises ValueError naming the missing key when a result document lacks the issue's keys."""
    for key in REQUIRED_KEYS:
        if key not in doc:
            raise ValueError(f"result: missing top-level key {key!r}")
    if not doc["systems"]:
        raise ValueError("result: systems is empty")
    for name, figures in doc["systems"].items():
        for key in SYSTEM_KEYS:
            if key not in figures:
                raise ValueError(f"result: systems.{name} lacks {key!r}")
