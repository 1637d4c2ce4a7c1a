"""Registry validation: node ids, addresses, labels, duplicates and model names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.health.config import HealthConfig, NodeSpec
from services.health.registry import (
    DuplicateNode,
    InvalidField,
    Registry,
    UnknownNode,
    normalize_model_name,
    validate_address,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
        ("https://gpu-1.example.com:443", "https://gpu-1.example.com:443"),
        ("http://[::1]:11434", "http://[::1]:11434"),
    ],
)
def test_valid_addresses_are_normalised(address: str, expected: str) -> None:
    assert validate_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "",
        "127.0.0.1:11434",
        "ftp://host:21",
        "http://host",
        "http://:11434",
        "http://host:99999",
        "http://host:11434/api",
        "http://user:pw@host:1",
        "http://host:1?x=1",
        "not a url",
    ],
)
def test_malformed_addresses_name_the_field(address: str) -> None:
    registry = Registry()
    with pytest.raises(InvalidField) as err:
        registry.add("node-1", address, {})
    assert err.value.field == "address"


@pytest.mark.parametrize("node_id", ["", "a" * 65, "node 1", "node/1", "nöde", "node:1"])
def test_malformed_ids_name_the_field(node_id: str) -> None:
    with pytest.raises(InvalidField) as err:
        Registry().add(node_id, "http://127.0.0.1:1", {})
    assert err.value.field == "node_id"


def test_bad_labels_name_the_field() -> None:
    with pytest.raises(InvalidField) as err:
        Registry().add("n1", "http://127.0.0.1:1", {"bad key": "x"})
    assert err.value.field == "labels"


def test_duplicates_by_id_and_by_address() -> None:
    registry = Registry()
    registry.add("n1", "http://127.0.0.1:1", {"gpu": "a10"})
    with pytest.raises(DuplicateNode, match="n1"):
        registry.add("n1", "http://127.0.0.1:2", {})
    with pytest.raises(DuplicateNode, match="already as node 'n1'"):
        registry.add("n2", "http://127.0.0.1:1/", {})
    assert registry.ids() == ["n1"]


def test_unknown_node() -> None:
    registry = Registry()
    with pytest.raises(UnknownNode):
        registry.remove("ghost")
    with pytest.raises(UnknownNode):
        registry.get("ghost")


def test_model_names_are_normalised() -> None:
    assert normalize_model_name("Llama3.2") == "llama3.2:latest"
    assert normalize_model_name("registry.ollama.ai/library/mistral:7b") == "mistral:7b"
    assert normalize_model_name("me/model") == "me/model:latest"


def test_config_defaults_and_duplicate_nodes() -> None:
    cfg = HealthConfig()
    assert cfg.port == 50053
    assert [n.id for n in cfg.nodes] == ["node-1", "node-2", "node-3", "node-4"]
    assert cfg.nodes[0].address == "http://127.0.0.1:11434"
    with pytest.raises(ValidationError, match="duplicate node id"):
        HealthConfig(nodes=[NodeSpec(id="a", address="http://h:1"), NodeSpec(id="a", address="http://h:2")])
    with pytest.raises(ValidationError, match="address"):
        NodeSpec(id="a", address="h:1")
