"""`bench/rag.py --smoke` in CI: the rag scenario's rows mean what their columns say."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bench import rag_data
from bench.harness.report import check_schema
from tests.helpers.procs import ROOT, base_env

pytestmark = pytest.mark.timeout(240)
pytest.importorskip("matplotlib", reason="the bench extra is not installed (pip install -e '.[bench]')")

ONE, RR, LITELLM, CORRAL = "one node", "round robin (4 nodes)", "litellm/least-busy + redis cache", "corral"


async def test_rag_smoke_rows_mean_what_they_say(tmp_path: Path) -> None:
    # NOTE: without LiteLLM, as CI (it never installs it); hashed embeddings, as CI has no MiniLM.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "bench/rag.py", "--smoke", "--no-litellm", "--embeddings", "hash",
        "--out", str(tmp_path),
        cwd=str(ROOT), env=base_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-4000:]
    doc = json.loads((tmp_path / "rag.json").read_text())
    check_schema(doc)
    assert doc["smoke"] is True and doc["scenario"] == "rag"
    assert doc["machine"]["load_average_1m"] >= 0 and "load_average_1m_at_start" in doc["parameters"]
    assert "hashed" in doc["parameters"]["embeddings"]
    assert doc["skipped"] == {LITELLM: "disabled (--no-litellm)"}
    systems = doc["systems"]
    assert set(systems) == {ONE, RR, CORRAL}
    trace = doc["parameters"]["trace"]
    assert trace["by_label"]["near-miss"] > 0 and trace["by_label"]["repeat"] > 0
    corpus = doc["parameters"]["corpus"]
    for name, row in systems.items():
        assert row["ingest_calls"] == corpus["ingest_calls"], name
        assert row["near_misses"] == trace["by_label"]["near-miss"], name
        assert row["node_busy_s"] > 0, name
    # Without a cache, every ingestion call reaches a node and no answer comes from a cache.
    for name in (ONE, RR):
        assert systems[name]["ingest_node_calls"] == corpus["ingest_calls"], name
        assert systems[name]["answer_hit_rate"] == 0 and systems[name]["reingest_calls_from_cache"] == 0, name
        assert systems[name]["embed_hit_rate"] is None, name
    assert systems[ONE]["errors"] == 0 and systems[ONE]["requests"] == trace["turns"]
    # One node alone computes every embedding token it was asked for.
    assert systems[ONE]["embed_tokens_saved"] == 0
    # node-4 was killed and restarted under the four-node systems (its counters of both lives kept).
    for name in (RR, CORRAL):
        assert systems[name]["victim_stats_before_kill"] is True, name
        assert systems[name]["timeline"]["restarted_at_s"] > systems[name]["timeline"]["killed_at_s"], name
    corral = systems[CORRAL]
    # The re-ingested third comes from the embedding cache: whole calls, without node calls.
    assert corral["reingest_calls_from_cache"] == 1.0
    assert corral["ingest_node_calls"] == corpus["ingest_calls"] - corpus["reingest_calls"]
    assert corral["ingest_embed_hit_rate"] > 0 and corral["cache_stats"]["embed_hits"] > 0
    # Byte-identical repeats are answered by the cache; no near-miss is; no client saw an error
    # through the kill.
    assert corral["hit_rate_by_label"]["repeat"] > 0 and corral["answer_hit_rate"] > 0
    assert corral["wrong_hits"] == 0 and corral["wrong_hit_turns"] == []
    assert corral["errors"] == 0 and corral["requests"] == trace["turns"]
    assert corral["node_calls"]["chat"] < systems[ONE]["node_calls"]["chat"]
    table = (tmp_path / "rag.md").read_text()
    assert f"| {LITELLM} | not run: disabled (--no-litellm) |" in table
    assert "Redis Stack or Qdrant" in table and "hashed" in table
    assert "not run: disabled (--no-litellm).**" in table
    assert (tmp_path / "rag.png").stat().st_size > 0


def test_trace_is_seeded_and_near_misses_are_asked_once_after_their_anchor() -> None:
    models = ("llama3.2:1b", "mistral:7b")
    a = rag_data.trace(False, 5, 2.0, models, 2)
    b = rag_data.trace(False, 5, 2.0, models, 2)
    assert [(c.at_s, c.model, [t.text for t in c.turns]) for c in a] == [
        (c.at_s, c.model, [t.text for t in c.turns]) for c in b
    ]
    turns = [t for c in a for t in c.turns]
    near = [t.text for t in turns if t.label == "near-miss"]
    assert len(near) == len(set(near))
    assert not set(near) & {t.text for t in turns if t.label != "near-miss"}
    seen: set[str] = set()
    for conv in a:
        first = conv.turns[0]
        if first.label == "first":
            seen.add(first.group)
        else:
            assert first.group in seen, first.text
    share = sum(len(c.turns) for c in a if c.model == models[1]) / len(turns)
    assert 0.1 <= share <= 0.35


def test_ingestion_reingests_a_third_in_calls_of_five() -> None:
    docs = rag_data.corpus(False, 5)
    calls, again = rag_data.ingest_calls(docs, 5)
    assert sum(len(d.chunks) for d in docs) >= 300
    assert all(1 <= len(c) <= 5 for c in calls)
    first = {c.chunk_id for call in calls[: len(calls) - again] for c in call}
    second = {c.chunk_id for call in calls[len(calls) - again :] for c in call}
    assert first == {c.chunk_id for d in docs for c in d.chunks} and second < first
    doc_of = {c.chunk_id: d.doc_id for d in docs for c in d.chunks}
    assert len({doc_of[cid] for cid in second}) == len(docs) // 3
