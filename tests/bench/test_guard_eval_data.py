"""The guard's evaluation set (bench/data/guard_eval/pairs.jsonl) is valid, reproducible and split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import guard_eval
from bench.data.guard_eval.build import build


def test_the_committed_set_is_valid() -> None:
    summary = guard_eval.validate()
    assert summary["pairs"] >= guard_eval.MIN_TOTAL
    assert set(summary["kinds"]) == set(guard_eval.KINDS)


def test_the_committed_file_is_what_build_writes() -> None:
    # NOTE: the pairs live in build.py; an edit to pairs.jsonl alone would be lost on the next build.
    expected = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in build())
    assert guard_eval.DATA.read_text() == expected


def test_load_returns_disjoint_splits_that_make_up_the_set() -> None:
    tune, test, every = guard_eval.load("tune"), guard_eval.load("test"), guard_eval.load()
    assert {r["split"] for r in tune} == {"tune"} and {r["split"] for r in test} == {"test"}
    assert not {r["id"] for r in tune} & {r["id"] for r in test}
    assert len(tune) + len(test) == len(every)
    with pytest.raises(ValueError, match="split"):
        guard_eval.load("dev")


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_validate_names_the_problems(tmp_path: Path) -> None:
    rows = guard_eval.load()
    bad = [dict(row) for row in rows]
    bad[0]["kind"] = "antonym"
    bad[1]["id"] = bad[2]["id"]
    bad[3]["b"] = bad[4]["a"]
    with pytest.raises(ValueError, match="unknown kind 'antonym'"):
        guard_eval.validate(_write(tmp_path / "kind.jsonl", bad))
    bad[0]["kind"] = rows[0]["kind"]
    with pytest.raises(ValueError) as raised:
        guard_eval.validate(_write(tmp_path / "dupes.jsonl", bad))
    assert f"id {bad[1]['id']} occurs 2 times" in str(raised.value)
    assert "repeats a question" in str(raised.value)

    tuned = json.loads(guard_eval.TUNED_ON[0].read_text().splitlines()[0])
    leaked = [dict(row) for row in rows]
    leaked[5]["a"] = tuned["a"].upper()
    with pytest.raises(ValueError, match="occurs in bench/data/cache_pairs"):
        guard_eval.validate(_write(tmp_path / "leak.jsonl", leaked))

    one_split = [dict(row, split="tune") for row in rows]
    with pytest.raises(ValueError, match="missing from the test split"):
        guard_eval.validate(_write(tmp_path / "split.jsonl", one_split))

    too_few = [row for row in rows if row["kind"] != "scalar" or row["split"] == "tune"]
    with pytest.raises(ValueError, match="kind scalar has"):
        guard_eval.validate(_write(tmp_path / "few.jsonl", too_few))
