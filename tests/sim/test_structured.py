"""The simulator's structured output: every value it makes for a schema of the common subset validates."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.structured import json_pieces, pick_tool, schema_value, tool_call

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    bounds = st.integers(min_value=-50, max_value=50)
    integer = st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span}, bounds, st.integers(0, 20)
    ) | st.just({"type": "integer"})
    number = st.builds(
        lambda lo, span: {"type": "number", "minimum": lo, "maximum": lo + span}, bounds, st.integers(1, 20)
    ) | st.just({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1})
    string = st.builds(
        lambda lo, span: {"type": "string", "minLength": lo, "maxLength": lo + span},
        st.integers(0, 10),
        st.integers(0, 10),
    )
    fixed: list[dict[str, Any]] = [
        {"type": "string"},
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "email"},
        {"type": "string", "enum": ["a", "b", "c"]},
        {"const": "fixed"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": ["string", "null"]},
        {"anyOf": [{"type": "null"}, {"type": "integer"}]},
    ]
    return integer | number | string | st.sampled_from(fixed)


def _schema(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    obj = st.dictionaries(_names, children, min_size=1, max_size=4).map(
        lambda props: {
            "type": "object",
            "properties": props,
            "required": sorted(props),
            "additionalProperties": False,
        }
    )
    array = st.builds(
        lambda items, lo, span: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + span},
        children,
        st.integers(0, 3),
        st.integers(0, 3),
    )
    return obj | array


schemas = st.recursive(_leaf(), _schema, max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(schemas, st.integers(0, 2**31), st.text(max_size=20))
def test_every_value_validates_against_its_schema(schema: dict[str, Any], seed: int, key: str) -> None:
    value = schema_value(schema, seed, key)
    jsonschema.validate(value, schema)
    assert json.loads("".join(json_pieces(value))) == value
    assert schema_value(schema, seed, key) == value  # deterministic


def test_refs_and_defs_as_pydantic_writes_them() -> None:
    schema = {
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1}},
        "required": ["items"],
    }
    jsonschema.validate(schema_value(schema, 1, "k"), schema)


def test_tool_choice_and_arguments_from_the_prompt() -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
                "required": ["city"],
            },
        },
    }
    search = {"type": "function", "function": {"name": "searchFlights", "parameters": {"type": "object"}}}
    assert pick_tool([search, weather], "What's the weather in Oslo?") is weather
    assert pick_tool([search, weather], "Find me flights to Rome") is search
    assert pick_tool([search, weather], "Tell me a joke") is None
    call = tool_call(weather, "Will it rain in New York tomorrow?", 3, "key")
    assert call["function"]["arguments"]["city"] == "New York"
    assert call["function"]["arguments"]["days"] >= 1 and len(call["id"]) == 8
