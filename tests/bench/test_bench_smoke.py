"""`make bench-smoke` in CI: every scenario for seconds with tiny loads writes its files with the schema."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bench.harness.report import check_schema
from bench.run import SCENARIOS
from scripts.results_table import END, START, render, rewrite
from tests.helpers.procs import ROOT, base_env

pytestmark = pytest.mark.timeout(240)
# NOTE: the plots need the `bench` extra (matplotlib); `make setup` installs it.
pytest.importorskip("matplotlib", reason="the bench extra is not installed (pip install -e '.[bench]')")


async def test_every_scenario_writes_json_markdown_and_png(tmp_path: Path) -> None:
    # NOTE: Corral only: CI never installs LiteLLM, and its start-up alone takes ~15 s per proxy.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.run", "--smoke", "--no-litellm", "--out", str(tmp_path),
        cwd=str(ROOT), env=base_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-4000:]
    assert "Corral only" in out.decode()
    docs = {}
    for name in SCENARIOS:
        for ext in ("json", "md", "png"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext} missing"
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        check_schema(doc)
        assert doc["scenario"] == name and doc["smoke"] is True
        assert {"machine", "versions", "parameters"} <= doc.keys()
        # The load as the scenario began is what tells a quiet run from a busy one.
        assert doc["machine"]["load_average_1m_at_start"] >= 0
        assert "at the start" in (tmp_path / f"{name}.md").read_text()
        docs[name] = doc
    block = render(docs)
    assert all(f"bench/results/{name}.md" in block for name in SCENARIOS)


def test_schema_check_names_the_missing_key() -> None:
    with pytest.raises(ValueError, match="systems"):
        check_schema({"scenario": "x"})
    with pytest.raises(ValueError, match="p99_ms"):
        check_schema({"scenario": "x", "systems": {"a": {"p50_ms": 1, "throughput_rps": 1, "errors": 0}}})


def test_readme_block_is_replaced_between_the_markers_only() -> None:
    text = f"intro\n{START}\nold\n{END}\nafter\n"
    assert rewrite(text, "new") == f"intro\n{START}\nnew\n{END}\nafter\n"
    assert rewrite("no markers here\n", "new") == "no markers here\n"


async def test_router_overhead_rows_run_and_are_tabulated(tmp_path: Path) -> None:
    # NOTE: `--smoke`: a few requests per row: this checks the harness (processes, both ingresses, the
    # hit rows' hits, the table), not the figures, which need `bench/router_overhead.py` on a quiet
    # machine. Without LiteLLM, as the scenarios' smoke test: CI never installs it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "bench/router_overhead.py", "--smoke", "--no-litellm", "--out", str(tmp_path),
        cwd=str(ROOT), env=base_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-4000:]
    doc = json.loads((tmp_path / "router_overhead.json").read_text())
    summary = doc["summary"]
    near_rows = {"router_near_hit", "router_near_hit_http"}
    hit_rows = {"router_exact_hit", "router_exact_hit_http", *near_rows, "floor_hit_http"}
    assert set(summary) == {"direct", "grpc_floor", "router_no_cache", "router_no_cache_http", *hit_rows}
    assert doc["skipped"] == {"litellm_exact_hit": "disabled (--no-litellm)"}
    for name, levels in summary.items():
        for level in ("c1", "c32"):
            row = levels[level]["median"]
            assert row["requests"] == 40, name
            cpu = row["cpu_ms_per_request"]
            assert cpu["loadgen"] > 0
            assert row["server"] in cpu, name
            if row["server"] == "router":
                assert cpu["router"] > 0, name
            if name not in hit_rows:
                assert "hits" not in row, name
                continue
            hits = row["hits"]
            assert sum(hits["outcomes"].values()) == 40, (name, level, hits)
            answered_by_node = 40 - round(hits["hit_fraction"] * 40)
            assert hits["node_chat_calls"] <= answered_by_node, (name, level, hits)
            if name == "floor_hit_http":
                assert hits == {**hits, "outcomes": {"hit": 40}, "hit_fraction": 1.0, "node_chat_calls": 0}
            else:
                # NOTE: a busy machine may still let a lookup outlive the smoke run's 1 s budget. A hit
                # is `exact-hit` or any later exact-tier outcome (bench/router_overhead.py, is_hit).
                assert hits["hit_fraction"] >= 0.5, (name, level, hits)
            if name in near_rows:
                assert hits["outcomes"].get("near-hit", 0) > 0, (name, level, hits)
            else:
                assert "near-hit" not in hits["outcomes"], (name, level, hits)
    table = (tmp_path / "router_overhead.md").read_text()
    assert "| router_no_cache_http | 32 |" in table
    assert "| router_exact_hit_http | 32 |" in table and "| floor_hit_http | 32 | " in table
    assert "| router_near_hit_http | 32 |" in table and "% near |" in table
    assert "| litellm_exact_hit | – | not run: disabled (--no-litellm) |" in table
    assert "x the floor row" in table


async def test_tracing_overhead_runs_both_settings_and_reports_them(tmp_path: Path) -> None:
    # NOTE: `--smoke`: 40 requests per row, one round of tracing off and on, into tmp_path: this
    # checks the harness (the router with the OTLP exporter pointed at the in-process receiver), not
    # the figures, which need `bench/tracing_overhead.py` on a quiet machine.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "bench/tracing_overhead.py", "--smoke", "--out", str(tmp_path),
        cwd=str(ROOT), env=base_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-4000:]
    doc = json.loads((tmp_path / "tracing_overhead.json").read_text())
    assert doc["smoke"] is True and doc["requests_per_row"] == 40
    for level in ("c1", "c32"):
        row = doc["summary"][level]
        assert row["off_rps"] > 0 and row["on_rps"] > 0
        assert row["on_router_cpu_ms"] > 0 and row["off_router_cpu_ms"] > 0
    for setting in ("off", "on"):
        assert [r["requests"] for r in doc["rounds"][setting]["c1"]] == [40]
    report = (tmp_path / "tracing_overhead.md").read_text()
    assert "Smoke run" in report and "| 32 |" in report
