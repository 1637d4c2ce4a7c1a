"""Hypothesis strategies that build any protobuf message from its descriptor: odd, huge and nested values."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

KNOWN_MODELS = ("llama3.2:1b", "nomic-embed-text:v1.5", "mistral:7b", "llama3.2", "")
_INT_BOUNDS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}

# NOTE: strings mix the plausible (model names, roles) with the hostile: control characters, lone
# surrogate-free unicode, and now and then a string big enough to pass the router's prompt limit.
_texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(KNOWN_MODELS),
    st.sampled_from(("user", "system", "assistant", "tool", "json", "5m", "-1", "0s", "bogus")),
    st.integers(min_value=1_000_000, max_value=1_300_000).map(lambda n: "x" * n),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8).map(lambda s: s * 50),
)


def _json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def _deep_struct() -> st.SearchStrategy[dict[str, Any]]:
    """A Struct nested `depth` levels (deeply nested input)."""

    def nest(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {"leaf": 1}
        for _ in range(depth):
            value = {"n": value}
        return value

    return st.integers(min_value=1, max_value=90).map(nest)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp in _INT_BOUNDS:
        low, high = _INT_BOUNDS[cpp]
        return st.one_of(st.integers(min_value=low, max_value=high), st.sampled_from((0, 1, -1, low, high)))
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if cpp == FieldDescriptor.CPPTYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        # NOTE: proto3 enums are open: unknown numbers arrive as they are.
        return st.integers(min_value=-3, max_value=12)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    return _texts


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        return st.dictionaries(_field(key_field, depth + 1), _field(value_field, depth + 1), max_size=4)
    if field.message_type is not None:
        single = message_values(field.message_type, depth + 1)
    else:
        single = _scalar(field)
    if field.is_repeated:
        return st.lists(single, max_size=6 if depth < 2 else 2)
    return single


def message_values(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy of messages of this type (or dicts for Struct), fields set at random."""
    if descriptor.full_name == "google.protobuf.Struct":
        return st.one_of(
            st.dictionaries(st.text(max_size=6), _json_values(), max_size=4), _deep_struct()
        ).map(_struct)
    if depth > 4:
        return st.just(GetMessageClass(descriptor)())
    fields = {f.name: _field(f, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(descriptor, values))


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _build(descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message = GetMessageClass(descriptor)()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        try:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    if isinstance(item, Message):
                        target[key].CopyFrom(item)
                    else:
                        target[key] = item
            elif field.is_repeated:
                if field.message_type is not None:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif field.message_type is not None:
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        except (ValueError, TypeError):
            # NOTE: values protobuf itself refuses to hold (e.g. an out-of-range float32) cannot
            # reach a server; skip them.
            continue
    return message


def requests_of(message_class: type[Message]) -> st.SearchStrategy[Message]:
    """Messages of a request type."""
    return message_values(message_class.DESCRIPTOR)  # type: ignore[arg-type]
