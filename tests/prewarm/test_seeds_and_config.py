"""The seed file and the prewarm configuration: valid shapes and clear errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError, load_config
from services.prewarm.config import PrewarmConfig
from services.prewarm.seeds import SeedFileError, load_seed_file

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seeds.yaml"
    path.write_text(text)
    return path


def test_the_shipped_seed_file_is_valid() -> None:
    seeds = load_seed_file(ROOT / "config" / "seed-queries.yaml")
    pairs = seeds.queries()
    assert len(pairs) >= 20
    assert all(q.options.get("temperature") == 0 for _, q in pairs)
    assert any(q.is_chat for _, q in pairs)


def test_queries_merge_options_and_filter_by_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
options: {temperature: 0, num_predict: 64}
models:
  llama3.2:1b:
    - plain prompt
    - {prompt: with system, system: You are terse., options: {temperature: 0.5}}
  qwen2.5:0.5b:
    - messages: [{role: system, content: Be brief.}, {role: user, content: hi}]
""",
    )
    seeds = load_seed_file(path)
    pairs = seeds.queries()
    assert [m for m, _ in pairs] == ["llama3.2:1b", "llama3.2:1b", "qwen2.5:0.5b"]
    assert pairs[1][1].options == {"temperature": 0.5, "num_predict": 64}
    assert pairs[2][1].is_chat and pairs[2][1].label == "hi"
    assert [m for m, _ in seeds.queries(frozenset({"QWEN2.5:0.5b"}))] == ["qwen2.5:0.5b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  m:\n    - {prompt: x, temprature: 0}\n", "'models.m.0.temprature': unknown key"),
        ("models:\n  m:\n    - {prompt: x, options: {temp: 1}}\n", "unknown option 'temp'"),
        ("models:\n  m:\n    - {system: only}\n", "either a non-empty prompt or messages"),
        ("models:\n  m:\n    - messages: [{role: bot, content: x}]\n", "must be one of"),
        (
            "models:\n  m:\n    - messages: [{role: user, content: a}, {role: assistant, content: b}]\n",
            "user's",
        ),
        ("models: [a, b]\n", "'models'"),
        ("- just a list\n", "top level must be a mapping"),
        ("models: {m: [x\n", "not valid YAML at line"),
    ],
)
def test_bad_seed_files_name_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SeedFileError) as err:
        load_seed_file(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_missing_seed_file(tmp_path: Path) -> None:
    with pytest.raises(SeedFileError, match="cannot be read"):
        load_seed_file(tmp_path / "absent.yaml")


def test_config_defaults_and_env_overrides() -> None:
    cfg = load_config(
        None,
        env={
            "CORRAL_PREWARM__MODELS": '[{"name": "mistral:7b", "keep_alive_s": -1, "always_warm": true}]',
            "CORRAL_PREWARM__MAX_LOADED_MODELS": '{"node-1": 1}',
            "CORRAL_PREWARM__SCHEDULE_INTERVAL_S": "60",
        },
    )
    prewarm = cfg.prewarm
    assert prewarm.port == 50054 and prewarm.concurrency == 2 and prewarm.run_on_start
    assert prewarm.models[0].keep_alive_s == -1 and prewarm.models[0].always_warm
    assert prewarm.capacity_of("node-1") == 1 and prewarm.capacity_of("node-2") == 3
    assert prewarm.schedule_interval_s == 60
    assert PrewarmConfig().schedule_interval_s == 1800


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CORRAL_PREWARM__CONCURRENCY": "0"}, "'prewarm.concurrency'"),
        ({"CORRAL_PREWARM__MAX_LOADED_MODELS": '{"a": 0}'}, "capacity must be at least 1"),
        ({"CORRAL_PREWARM__MODELS": '[{"name": "a"}, {"name": "A"}]'}, "listed twice"),
        ({"CORRAL_PREWARM__SEED_CACHE_MODE": "always"}, "'default' or 'refresh'"),
        ({"CORRAL_PREWARM__MODELS": '[{"nam": "a"}]'}, "'prewarm.models.0.name': Field required"),
    ],
)
def test_bad_config_names_the_field(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env=env)
    assert expected in str(err.value)
