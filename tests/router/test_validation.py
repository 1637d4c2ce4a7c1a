"""Unit tests of request validation: INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import pytest
from corral.v1 import common_pb2, router_service_pb2
from google.protobuf.duration_pb2 import Duration

from services.common.errors import InvalidArgument
from services.router.validation import validate_chat, validate_embed, validate_generate

KNOWN = {"llama3.2:1b", "nomic-embed-text:latest"}
MSG = common_pb2.ChatMessage


def gen(**kw: object) -> common_pb2.GenerateSpec:
    return common_pb2.GenerateSpec(**{"model": "llama3.2:1b", "prompt": "hi", **kw})  # type: ignore[arg-type]


def chat(**kw: object) -> common_pb2.ChatSpec:
    return common_pb2.ChatSpec(**{"model": "llama3.2:1b", "messages": [MSG(role="user", content="hi")], **kw})  # type: ignore[arg-type]


def field_of(exc: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return exc.value.field


def test_valid_requests_pass_and_normalise_the_model() -> None:
    assert validate_generate(gen(model="LLAMA3.2:1b"), KNOWN, 1000) == "llama3.2:1b"
    assert validate_chat(chat(), KNOWN, 1000) == "llama3.2:1b"
    assert validate_generate(gen(model="nomic-embed-text"), KNOWN, 1000) == "nomic-embed-text:latest"
    assert validate_generate(gen(model="anything"), None, 1000) == "anything:latest"
    # NOTE: a negative keep_alive is Ollama's "keep the model loaded forever".
    assert validate_generate(gen(keep_alive=Duration(seconds=-1)), KNOWN, 1000) == "llama3.2:1b"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (gen(model=""), "spec.model"),
        (gen(model="has space"), "spec.model"),
        (gen(model="unknown:1b"), "spec.model"),
        (gen(options=common_pb2.ModelOptions(temperature=-0.5)), "spec.options.temperature"),
        (gen(options=common_pb2.ModelOptions(top_p=1.5)), "spec.options.top_p"),
        (gen(options=common_pb2.ModelOptions(top_k=-1)), "spec.options.top_k"),
        (gen(options=common_pb2.ModelOptions(num_predict=-5)), "spec.options.num_predict"),
        (gen(options=common_pb2.ModelOptions(num_ctx=0)), "spec.options.num_ctx"),
        (gen(options=common_pb2.ModelOptions(temperature=float("nan"))), "spec.options.temperature"),
        (gen(format="yaml"), "spec.format"),
        (gen(format="[1, 2]"), "spec.format"),
        (gen(raw=True, system="s"), "spec.raw"),
        (gen(prompt="x" * 2000), "spec.prompt"),
        (gen(keep_alive=Duration(seconds=315_576_000_001)), "spec.keep_alive"),
        (gen(keep_alive=Duration(seconds=-1, nanos=5)), "spec.keep_alive"),
    ],
)
def test_generate_rejections_name_the_field(spec: common_pb2.GenerateSpec, field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_generate(spec, KNOWN, 1000)
    assert field_of(exc) == field


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (chat(messages=[]), "spec.messages"),
        (
            chat(messages=[MSG(role="user", content="a"), MSG(role="robot", content="b")]),
            "spec.messages[1].role",
        ),
        (chat(messages=[MSG(role="", content="a")]), "spec.messages[0].role"),
        (chat(messages=[MSG(role="user", content="x" * 2000)]), "spec.messages"),
        (chat(tools=[common_pb2.Tool(type="function")]), "spec.tools[0].function.name"),
        (
            chat(tools=[common_pb2.Tool(type="web", function=common_pb2.ToolFunction(name="f"))]),
            "spec.tools[0].type",
        ),
        (chat(options=common_pb2.ModelOptions(repeat_penalty=-1)), "spec.options.repeat_penalty"),
        (chat(keep_alive=Duration(nanos=1_000_000_000)), "spec.keep_alive"),
    ],
)
def test_chat_rejections_name_the_field(spec: common_pb2.ChatSpec, field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_chat(spec, KNOWN, 1000)
    assert field_of(exc) == field


def test_json_schema_format_is_accepted() -> None:
    validate_generate(gen(format='{"type": "object"}'), KNOWN, 1000)
    validate_generate(gen(format="json"), KNOWN, 1000)


def test_unknown_model_has_its_reason() -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_chat(chat(model="gpt-9"), KNOWN, 1000)
    assert exc.value.reason == "MODEL_NOT_FOUND"
    assert "gpt-9" in exc.value.message


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (router_service_pb2.EmbedRequest(model="nomic-embed-text", inputs=[]), "inputs"),
        (router_service_pb2.EmbedRequest(model="", inputs=["a"]), "model"),
        (router_service_pb2.EmbedRequest(model="nomic-embed-text", inputs=["a"] * 11), "inputs"),
        (
            router_service_pb2.EmbedRequest(model="nomic-embed-text", inputs=["a"], dimensions=-1),
            "dimensions",
        ),
        (router_service_pb2.EmbedRequest(model="nomic-embed-text", inputs=["x" * 2000]), "inputs"),
    ],
)
def test_embed_rejections(req: router_service_pb2.EmbedRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_embed(req, KNOWN, 1000, 10)
    assert field_of(exc) == field
