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
