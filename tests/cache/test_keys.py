"""Key derivation and tier policy (pure functions)."""

from __future__ import annotations

from corral.v1 import common_pb2 as c
from google.protobuf.duration_pb2 import Duration

from services.cache import keys


def _gen(**fields: object) -> c.GenerateSpec:
    base: dict[str, object] = {"model": "llama3.2:1b", "prompt": "How do I enable TLS?"}
    base.update(fields)
    return c.GenerateSpec(**base)  # type: ignore[arg-type]


def _chat(*turns: tuple[str, str], **fields: object) -> c.ChatSpec:
    messages = [c.ChatMessage(role=r, content=t) for r, t in turns]
    return c.ChatSpec(model="llama3.2:1b", messages=messages, **fields)  # type: ignore[arg-type]


def test_runner_options_and_keep_alive_do_not_change_the_key() -> None:
    plain = keys.derive("t", _gen())
    tuned = keys.derive(
        "t",
        _gen(
            options=c.ModelOptions(num_ctx=8192, num_batch=64, num_gpu=1, num_thread=4),
            keep_alive=Duration(seconds=300),
        ),
    )
    assert plain.exact_key == tuned.exact_key


def test_output_changing_fields_change_the_key() -> None:
    base = keys.derive("t", _gen()).exact_key
    variants = [
        _gen(options=c.ModelOptions(temperature=0.5)),
        _gen(options=c.ModelOptions(seed=7)),
        _gen(options=c.ModelOptions(num_predict=10)),
        _gen(system="Answer in French."),
        _gen(format="json"),
        _gen(prompt="How do I enable TLS? "),
        _gen(think=c.THINK_MODE_ON),
        _gen(think=c.THINK_MODE_OFF),
        _gen(format='{"type":"object","properties":{"a":{"type":"integer"}}}'),
        _gen(context=[1, 2, 3]),
        _gen(images=[b"\x89PNG"]),
    ]
    derived = {keys.derive("t", spec).exact_key for spec in variants}
    assert base not in derived
    assert len(derived) == len(variants)


def test_tenant_and_model_are_part_of_the_key() -> None:
    assert keys.derive("a", _gen()).exact_key != keys.derive("b", _gen()).exact_key
    assert keys.derive("a", _gen()).exact_key != keys.derive("a", _gen(model="mistral:7b")).exact_key


def test_model_without_tag_is_latest_and_empty_tenant_is_default() -> None:
    assert (
        keys.derive("", _gen(model="llama3.2")).exact_key
        == keys.derive("default", _gen(model="llama3.2:latest")).exact_key
    )
    assert keys.normalise_model("registry.example/ns/model") == "registry.example/ns/model:latest"
    assert keys.normalise_model("host:5000/model:7b") == "host:5000/model:7b"


def test_generate_and_chat_never_share_a_key() -> None:
    assert keys.derive("t", _gen(prompt="hi")).exact_key != keys.derive("t", _chat(("user", "hi"))).exact_key


def test_semantic_text_and_namespace_of_generate() -> None:
    a = keys.derive("t", _gen(prompt="How do I enable TLS?"))
    b = keys.derive("t", _gen(prompt="How can I turn on TLS?"))
    with_system = keys.derive("t", _gen(prompt="How do I enable TLS?", system="Be brief."))
    assert a.semantic_text == "How do I enable TLS?"
    assert a.context_key == b.context_key
    assert a.context_key != with_system.context_key


def test_chat_semantic_text_is_the_last_user_turn_and_history_is_namespace() -> None:
    first = keys.derive("t", _chat(("user", "What is TLS?")))
    again = keys.derive("t", _chat(("user", "Explain TLS")))
    later = keys.derive("t", _chat(("user", "Hi"), ("assistant", "Hello!"), ("user", "What is TLS?")))
    assert first.semantic_text == "What is TLS?"
    assert first.context_key == again.context_key
    assert later.semantic_text == "What is TLS?"
    assert later.context_key != first.context_key


def test_chat_offering_tools_has_no_semantic_text_and_its_own_key() -> None:
    chat = _chat(("user", "Weather in Tokyo?"))
    tool = c.Tool(type="function", function=c.ToolFunction(name="get_weather"))
    with_tools = _chat(("user", "Weather in Tokyo?"))
    with_tools.tools.append(tool)
    assert keys.derive("t", with_tools).semantic_text is None
    assert keys.derive("t", chat).semantic_text == "Weather in Tokyo?"
    assert keys.derive("t", with_tools).exact_key != keys.derive("t", chat).exact_key


def test_chat_ending_in_assistant_turn_has_no_semantic_text() -> None:
    assert keys.derive("t", _chat(("user", "Hi"), ("assistant", "Hello"))).semantic_text is None
    assert keys.derive("t", _chat()).semantic_text is None


def _plan(
    mode: int = c.CACHE_MODE_UNSPECIFIED, deterministic: bool = True, **policy: object
) -> keys.TierPlan:
    options = c.ModelOptions(temperature=0) if deterministic else c.ModelOptions(temperature=0.8)
    view = keys.derive("t", _gen(options=options))
    return keys.plan(
        c.CachePolicy(mode=mode, **policy),  # type: ignore[arg-type]
        view,
        default_ttl_s=60,
        max_ttl_s=3600,
        semantic_enabled=True,
    )


def test_default_policy_semantic_only_at_temperature_zero() -> None:
    assert _plan().lookup_semantic and _plan().store_semantic
    warm = _plan(deterministic=False)
    assert warm.lookup_exact and not warm.lookup_semantic and not warm.store_semantic
    unset = keys.plan(
        c.CachePolicy(), keys.derive("t", _gen()), default_ttl_s=60, max_ttl_s=3600, semantic_enabled=True
    )
    assert not unset.lookup_semantic


def test_modes() -> None:
    bypass = _plan(c.CACHE_MODE_BYPASS)
    assert not bypass.looks_up and not bypass.store_exact and not bypass.store_semantic
    refresh = _plan(c.CACHE_MODE_REFRESH)
    assert not refresh.looks_up and refresh.store_exact and refresh.store_semantic
    exact = _plan(c.CACHE_MODE_EXACT)
    assert exact.lookup_exact and not exact.lookup_semantic
    semantic = _plan(c.CACHE_MODE_SEMANTIC, deterministic=False)
    assert semantic.lookup_semantic and semantic.store_semantic


def test_ttl_and_max_age() -> None:
    assert _plan().ttl_s == 60
    assert _plan(ttl=Duration(seconds=5)).ttl_s == 5
    assert _plan(ttl=Duration(seconds=10**6)).ttl_s == 3600
    assert _plan(max_age=Duration(seconds=30)).max_age_s == 30
    assert _plan().max_age_s is None
