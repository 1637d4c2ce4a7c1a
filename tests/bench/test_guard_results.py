"""The guard's benchmark tools: the cost measurement's shape and the committed guard-eval reports."""

from __future__ import annotations

import json

import pytest

from bench import cache_eval, guard_cost


def test_the_cost_measurement_times_every_pair_in_three_ways() -> None:
    rows = [
        ("How do I enable TLS?", "How do I disable TLS?"),
        ("How do I move a VM to another host?", "How do I migrate a VM to another host?"),
        ("Once the job ends, what next?", "After the job ends, what next?"),
    ]
    result = guard_cost.measure(repeat=2, rows=rows)
    assert result["pairs"] == 3 and result["repeat"] == 2
    assert len(result["load_average_at_start"]) == 3
    for way in ("cold", "service", "warm"):
        s = result[way]
        assert 0 < s["p50_us"] <= s["p99_us"] <= s["max_us"]


def test_the_default_pairs_are_every_labelled_pair() -> None:
    rows = guard_cost.pairs()
    # NOTE: 622 guard-eval pairs, 189 and 60 in the earlier sets.
    assert len(rows) == 622 + 189 + 60
    assert all(query and stored for query, stored in rows)


@pytest.mark.parametrize("split", ["tune", "test"])
def test_the_committed_markdown_is_what_its_json_renders(split: str) -> None:
    path = cache_eval.RESULTS / f"guard_eval_{split}.json"
    result = json.loads(path.read_text())
    assert path.with_suffix(".md").read_text() == cache_eval.markdown(result)
    assert result["split"] == split and result["pairs"] == result["paraphrases"] + result["near_misses"]
    assert {e["data"] for e in result["earlier_sets"]} == {
        "bench/data/cache_pairs.jsonl",
        "bench/data/cache_pairs_holdout.jsonl",
    }
