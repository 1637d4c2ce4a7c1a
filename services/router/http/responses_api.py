"""OpenAI's Responses API, `POST /v1/responses`, translated to a chat as Ollama's compatibility layer does.

Request: `input` (a string, or items: messages with text parts, `function_call`, `function_call_output`,
`reasoning` (its thinking goes with the next assistant message, as Ollama's layer does)),
`instructions` (a system message first), `tools` (flat function tools), `max_output_tokens`,
`temperature`, `top_p`, `reasoning.effort` (think), `text.format` (json_object / json_schema), `stream`.
Reply: a `response` object whose `output` holds a `reasoning` item (thinking), a `message` item (text)
and `function_call` items (tool calls); streamed, the `response.*` events the openai client reads.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from corral.v1 import common_pb2 as cpb
from corral.v1 import router_service_pb2 as rpb

from services.router.http import encode
from services.router.http.decode import Fields, number, to_struct
from services.router.http.errors import ApiError, dumps

_EFFORT = {
    "none": cpb.THINK_MODE_OFF,
    "minimal": cpb.THINK_MODE_LOW,
    "low": cpb.THINK_MODE_LOW,
    "medium": cpb.THINK_MODE_MEDIUM,
    "high": cpb.THINK_MODE_HIGH,
}


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ApiError(400, f"{where}: invalid content type")
    texts: list[str] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise ApiError(400, f"{where}[{index}]: unsupported content part type: {kind!r}")
    return "\n".join(texts)


def _reasoning(item: dict[str, Any], where: str) -> str:
    """The thinking of a `reasoning` input item: `encrypted_content` (where Ollama puts the thinking
    as plain text), else its `summary_text` parts (what this router's own replies carry)."""
    encrypted = item.get("encrypted_content")
    if encrypted is not None and not isinstance(encrypted, str):
        raise ApiError(400, f"{where}.encrypted_content: must be a string")
    if encrypted:
        return encrypted
    summary = item.get("summary")
    if summary is None:
        return ""
    if not isinstance(summary, list):
        raise ApiError(400, f"{where}.summary: must be an array")
    texts: list[str] = []
    for index, part in enumerate(summary):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise ApiError(400, f"{where}.summary[{index}]: must be a summary_text part with a text")
        texts.append(part["text"])
    return "\n".join(texts)


def _messages(body: dict[str, Any]) -> list[cpb.ChatMessage]:
    out: list[cpb.ChatMessage] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        out.append(cpb.ChatMessage(role="system", content=instructions))
    raw = body.get("input")
    if isinstance(raw, str):
        out.append(cpb.ChatMessage(role="user", content=raw))
        return out
    if not isinstance(raw, list):
        raise ApiError(400, "input: must be a string or an array of items")
    names: dict[str, str] = {}
    # NOTE: a reasoning item's thinking belongs to the assistant turn that follows it (a message or a
    # function call), as in Ollama's compatibility layer; one left at the end is an assistant turn of
    # its own.
    thinking = ""
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{where}: must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            role = "system" if role == "developer" else role
            if role not in ("system", "user", "assistant"):
                raise ApiError(400, f"{where}.role: invalid role {role!r}")
            message = cpb.ChatMessage(role=role, content=_text(item.get("content"), f"{where}.content"))
            if role == "assistant" and thinking:
                message.thinking, thinking = thinking, ""
            out.append(message)
        elif kind == "reasoning":
            thinking = _reasoning(item, where) or thinking
        elif kind == "function_call":
            arguments = item.get("arguments") or "{}"
            try:
                parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
            except ValueError:
                raise ApiError(400, f"{where}.arguments: invalid JSON") from None
            if not isinstance(parsed, dict) or not isinstance(item.get("name"), str):
                raise ApiError(400, f"{where}: a function_call needs a name and object arguments")
            call_id = str(item.get("call_id") or "")
            names[call_id] = item["name"]
            call = cpb.ToolCall(id=call_id, name=item["name"])
            call.arguments.CopyFrom(to_struct(parsed, f"{where}.arguments"))
            if out and out[-1].role == "assistant" and not out[-1].content:
                call.index = len(out[-1].tool_calls)
                out[-1].tool_calls.append(call)
            else:
                out.append(cpb.ChatMessage(role="assistant", tool_calls=[call]))
            if thinking:
                out[-1].thinking, thinking = thinking, ""
        elif kind == "function_call_output":
            call_id = str(item.get("call_id") or "")
            output = item.get("output")
            content = output if isinstance(output, str) else dumps(output)
            out.append(
                cpb.ChatMessage(
                    role="tool", content=content, tool_call_id=call_id, tool_name=names.get(call_id, "")
                )
            )
        else:
            raise ApiError(400, f"{where}.type: unsupported input item type {kind!r}")
    if thinking:
        out.append(cpb.ChatMessage(role="assistant", thinking=thinking))
    if not out:
        raise ApiError(400, "input: must not be empty")
    return out


def _tools(raw: Any) -> list[cpb.Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ApiError(400, "tools: must be an array")
    out: list[cpb.Tool] = []
    for index, item in enumerate(raw):
        if (
            not isinstance(item, dict)
            or item.get("type") != "function"
            or not isinstance(item.get("name"), str)
        ):
            raise ApiError(400, f"tools[{index}]: only function tools with a name are supported")
        tool = cpb.Tool(type="function")
        tool.function.name = item["name"]
        tool.function.description = str(item.get("description") or "")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ApiError(400, f"tools[{index}].parameters: must be an object")
        tool.function.parameters.CopyFrom(to_struct(parameters, f"tools[{index}].parameters"))
        out.append(tool)
    return out


def parse_responses(body: dict[str, Any]) -> tuple[cpb.ChatSpec, bool]:
    """A /v1/responses body as a ChatSpec, and whether to stream."""
    fields = Fields(body, "ResponsesRequest")
    spec = cpb.ChatSpec(model=fields.string("model"))
    spec.messages.extend(_messages(body))
    spec.tools.extend(_tools(body.get("tools")))
    opts = spec.options
    for name in ("temperature", "top_p"):
        value = number(body, name, float)
        if value is not None:
            setattr(opts, name, float(value))
    max_tokens = number(body, "max_output_tokens", int)
    if max_tokens is not None:
        opts.num_predict = int(max_tokens)
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        effort = reasoning["effort"]
        if effort not in _EFFORT:
            raise ApiError(400, f"reasoning.effort: invalid value {effort!r}")
        spec.think = _EFFORT[effort]
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            spec.format = "json"
        elif fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            spec.format = json.dumps(schema, separators=(",", ":")) if isinstance(schema, dict) else "json"
    return spec, bool(fields.boolean("stream"))


def _tools_echo(spec: cpb.ChatSpec) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": tool.function.name,
            "description": tool.function.description,
            "parameters": encode.struct_to_json(tool.function.parameters),
            "strict": False,
        }
        for tool in spec.tools
    ]


class _Item:
    """One reasoning or message item of the output, in the order the answer produced them."""

    __slots__ = ("closed", "id", "kind", "text")

    def __init__(self, kind: str, item_id: str) -> None:
        self.kind = kind
        self.id = item_id
        self.text = ""
        self.closed = False


class ResponseBuilder:
    """The `response` object and its stream events, built as the answer arrives."""

    def __init__(self, spec: cpb.ChatSpec) -> None:
        suffix = f"{random.randrange(16**12):012x}"
        self.id = f"resp_{suffix}"
        self._suffix = suffix
        self._created = int(time.time())
        self._spec = spec
        self._seq = 0
        self._call_count = 0
        # NOTE: reasoning and message items, and function_call items (complete when added), in output
        # order. Thinking or text that arrives after its item was closed (say thinking again after
        # some text) opens a new item: a closed item never gets another delta.
        self._items: list[_Item | dict[str, Any]] = []
        self._counts = {"reasoning": 0, "message": 0}

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _new(self, kind: str) -> _Item:
        prefix = "rs" if kind == "reasoning" else "msg"
        count = self._counts[kind]
        self._counts[kind] = count + 1
        item = _Item(kind, f"{prefix}_{self._suffix}" + (f"_{count}" if count else ""))
        self._items.append(item)
        return item

    @staticmethod
    def _reasoning_item(item: _Item) -> dict[str, Any]:
        summary = [{"type": "summary_text", "text": item.text}] if item.text else []
        return {"id": item.id, "type": "reasoning", "summary": summary}

    @staticmethod
    def _message_item(item: _Item, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": item.text, "annotations": [], "logprobs": []}]
        return {
            "id": item.id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content if status == "completed" else [],
        }

    def response(
        self, status: str, stats: cpb.GenerationStats | None = None, done_reason: str = ""
    ) -> dict[str, Any]:
        """The `response` object."""
        output: list[dict[str, Any]] = []
        message_status = "completed" if status != "in_progress" else "in_progress"
        for item in self._items:
            if isinstance(item, dict):
                output.append(item)
            elif item.kind == "reasoning":
                output.append(self._reasoning_item(item))
            else:
                output.append(self._message_item(item, message_status))
        incomplete = status == "completed" and done_reason == "length"
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": "incomplete" if incomplete else status,
            "model": self._spec.model,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": _tools_echo(self._spec),
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        }
        if stats is not None:
            prompt, completion = int(stats.prompt_eval_count), int(stats.eval_count)
            body["usage"] = {
                "input_tokens": prompt,
                "output_tokens": completion,
                "total_tokens": prompt + completion,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            }
        return body

    def _add_calls(self, calls: Any) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for call in calls:
            arguments = dumps(encode.struct_to_json(call.arguments))
            call_id = f"call_{call.id}" if call.id else f"call_{random.randrange(16**8):08x}"
            item = {
                "id": f"fc_{call_id[5:]}_{self._call_count}",
                "type": "function_call",
                "call_id": call_id,
                "name": call.name,
                "arguments": arguments,
                "status": "completed",
            }
            self._call_count += 1
            self._items.append(item)
            index = len(self._items) - 1
            added = {**item, "arguments": "", "status": "in_progress"}
            events.append(self._event("response.output_item.added", output_index=index, item=added))
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=arguments,
                )
            )
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=arguments,
                    name=call.name,
                )
            )
            events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def _open(self, kind: str) -> _Item | None:
        """The last item when it is a `kind` item still open."""
        last = self._items[-1] if self._items else None
        if isinstance(last, _Item) and last.kind == kind and not last.closed:
            return last
        return None

    def _close_open(self) -> list[dict[str, Any]]:
        """Ends the reasoning or message item still open (the last one)."""
        if not self._items:
            return []
        last = self._items[-1]
        if isinstance(last, dict) or last.closed:
            return []
        last.closed = True
        index = len(self._items) - 1
        if last.kind == "reasoning":
            part: dict[str, Any] = {"type": "summary_text", "text": last.text}
            return [
                self._event(
                    "response.reasoning_summary_text.done",
                    item_id=last.id,
                    output_index=index,
                    summary_index=0,
                    text=last.text,
                ),
                self._event(
                    "response.reasoning_summary_part.done",
                    item_id=last.id,
                    output_index=index,
                    summary_index=0,
                    part=part,
                ),
                self._event("response.output_item.done", output_index=index, item=self._reasoning_item(last)),
            ]
        part = {"type": "output_text", "text": last.text, "annotations": [], "logprobs": []}
        common: dict[str, Any] = {"item_id": last.id, "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", **common, text=last.text, logprobs=[]),
            self._event("response.content_part.done", **common, part=part),
            self._event(
                "response.output_item.done", output_index=index, item=self._message_item(last, "completed")
            ),
        ]

    def start(self) -> list[dict[str, Any]]:
        """The opening events."""
        created = self.response("in_progress")
        return [
            self._event("response.created", response=created),
            self._event("response.in_progress", response=created),
        ]

    def add(self, message: cpb.ChatMessage) -> list[dict[str, Any]]:
        """Events for one streamed piece."""
        events: list[dict[str, Any]] = []
        if message.thinking:
            item = self._open("reasoning")
            if item is None:
                events += self._close_open()
                item = self._new("reasoning")
                index = len(self._items) - 1
                events.append(
                    self._event(
                        "response.output_item.added",
                        output_index=index,
                        item={"id": item.id, "type": "reasoning", "summary": []},
                    )
                )
                events.append(
                    self._event(
                        "response.reasoning_summary_part.added",
                        item_id=item.id,
                        output_index=index,
                        summary_index=0,
                        part={"type": "summary_text", "text": ""},
                    )
                )
            item.text += message.thinking
            events.append(
                self._event(
                    "response.reasoning_summary_text.delta",
                    item_id=item.id,
                    output_index=len(self._items) - 1,
                    summary_index=0,
                    delta=message.thinking,
                )
            )
        if message.content:
            item = self._open("message")
            if item is None:
                events += self._close_open()
                item = self._new("message")
                index = len(self._items) - 1
                events.append(
                    self._event(
                        "response.output_item.added",
                        output_index=index,
                        item=self._message_item(item, "in_progress"),
                    )
                )
                events.append(
                    self._event(
                        "response.content_part.added",
                        item_id=item.id,
                        output_index=index,
                        content_index=0,
                        part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                    )
                )
            item.text += message.content
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item.id,
                    output_index=len(self._items) - 1,
                    content_index=0,
                    delta=message.content,
                    logprobs=[],
                )
            )
        if message.tool_calls:
            events += self._close_open()
            events += self._add_calls(message.tool_calls)
        return events

    def finish(self, stats: cpb.GenerationStats, done_reason: str) -> list[dict[str, Any]]:
        """The closing events: open items done, then `response.completed` (or `incomplete`)."""
        events = self._close_open()
        final = self.response("completed", stats, done_reason)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        events.append(self._event(kind, response=final))
        return events

    def whole(self, resp: rpb.ChatResponse) -> dict[str, Any]:
        """The `response` object of a complete answer (not streamed)."""
        msg = resp.message
        if msg.thinking:
            self._new("reasoning").text = msg.thinking
        if msg.content or not msg.tool_calls:
            self._new("message").text = msg.content
        self._add_calls(msg.tool_calls)
        return self.response("completed", resp.stats, resp.done_reason)
