"""The Grafana dashboard is valid JSON, uses the provisioned datasource and only metrics Corral exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "corral.json"
# NOTE: metrics observed as they happen are declared in services/common/metrics.py; the ones read at
# scrape time by each service's own collector (services/<name>/collector.py).
SOURCES = [ROOT / "services" / "common" / "metrics.py", *sorted(ROOT.glob("services/*/collector.py"))]
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def _exported_names() -> set[str]:
    assert len(SOURCES) == 5, SOURCES  # metrics.py and the four services' collectors
    text = "\n".join(p.read_text(encoding="utf-8") for p in SOURCES)
    return set(re.findall(r'"(corral_[a-z0-9_]+)"', text))


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_panel_queries_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = _exported_names()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and dashboard["uid"] == "corral-overview"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\b(corral_[a-z0-9_]+)", target["expr"]))
            unknown = {name for name in used if _base(name) not in exported}
            assert not unknown, f"{panel['title']}: {unknown}"
