"""OpenAI's Responses API, `POST /v1/responses`, translated to a chat as Ollama's compatibility layer does.

Request: `input` (a string, or items: messages with text parts, `function_call`, `function_call_output`),
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
from services.router.http.decode import Fields, to_struct
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
            out.append(cpb.ChatMessage(role=role, content=_text(item.get("content"), f"{where}.content")))
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
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ApiError(400, f"{name}: must be a number")
            setattr(opts, name, float(value))
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise ApiError(400, "max_output_tokens: must be an integer")
        opts.num_predict = max_tokens
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


class ResponseBuilder:
    """The `response` object and its stream events, built as the answer arrives."""

    def __init__(self, spec: cpb.ChatSpec) -> None:
        suffix = f"{random.randrange(16**12):012x}"
        self.id = f"resp_{suffix}"
        self._msg_id = f"msg_{suffix}"
        self._rs_id = f"rs_{suffix}"
        self._created = int(time.time())
        self._spec = spec
        self._seq = 0
        self._thinking = ""
        self._text = ""
        self._calls: list[dict[str, Any]] = []
        self._items: list[str] = []  # "reasoning", "message", or a function_call item id, in output order
        self._closed: set[str] = set()  # the reasoning and message items already done

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _reasoning_item(self) -> dict[str, Any]:
        summary = [{"type": "summary_text", "text": self._thinking}] if self._thinking else []
        return {"id": self._rs_id, "type": "reasoning", "summary": summary}

    def _message_item(self, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": self._text, "annotations": [], "logprobs": []}]
        return {
            "id": self._msg_id,
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
        for item in self._items:
            if item == "reasoning":
                output.append(self._reasoning_item())
            elif item == "message":
                output.append(self._message_item("completed" if status != "in_progress" else "in_progress"))
            else:
                output.append(next(c for c in self._calls if c["id"] == item))
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
                "id": f"fc_{call_id[5:]}_{len(self._calls)}",
                "type": "function_call",
                "call_id": call_id,
                "name": call.name,
                "arguments": arguments,
                "status": "completed",
            }
            self._calls.append(item)
            self._items.append(item["id"])
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

    def _close_open(self) -> list[dict[str, Any]]:
        """Ends the reasoning or message item still open (the last one)."""
        if not self._items:
            return []
        last = self._items[-1]
        index = len(self._items) - 1
        if last == "reasoning" and last not in self._closed:
            self._closed.add(last)
            part: dict[str, Any] = {"type": "summary_text", "text": self._thinking}
            return [
                self._event(
                    "response.reasoning_summary_text.done",
                    item_id=self._rs_id,
                    output_index=index,
                    summary_index=0,
                    text=self._thinking,
                ),
                self._event(
                    "response.reasoning_summary_part.done",
                    item_id=self._rs_id,
                    output_index=index,
                    summary_index=0,
                    part=part,
                ),
                self._event("response.output_item.done", output_index=index, item=self._reasoning_item()),
            ]
        if last == "message" and last not in self._closed:
            self._closed.add(last)
            part = {"type": "output_text", "text": self._text, "annotations": [], "logprobs": []}
            common: dict[str, Any] = {"item_id": self._msg_id, "output_index": index, "content_index": 0}
            return [
                self._event("response.output_text.done", **common, text=self._text, logprobs=[]),
                self._event("response.content_part.done", **common, part=part),
                self._event(
                    "response.output_item.done", output_index=index, item=self._message_item("completed")
                ),
            ]
        return []

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
            if "reasoning" not in self._items:
                events += self._close_open()
                self._items.append("reasoning")
                index = len(self._items) - 1
                events.append(
                    self._event(
                        "response.output_item.added",
                        output_index=index,
                        item={"id": self._rs_id, "type": "reasoning", "summary": []},
                    )
                )
                events.append(
                    self._event(
                        "response.reasoning_summary_part.added",
                        item_id=self._rs_id,
                        output_index=index,
                        summary_index=0,
                        part={"type": "summary_text", "text": ""},
                    )
                )
            self._thinking += message.thinking
            events.append(
                self._event(
                    "response.reasoning_summary_text.delta",
                    item_id=self._rs_id,
                    output_index=self._items.index("reasoning"),
                    summary_index=0,
                    delta=message.thinking,
                )
            )
        if message.content:
            if "message" not in self._items:
                events += self._close_open()
                self._items.append("message")
                index = len(self._items) - 1
                events.append(
                    self._event(
                        "response.output_item.added",
                        output_index=index,
                        item=self._message_item("in_progress"),
                    )
                )
                events.append(
                    self._event(
                        "response.content_part.added",
                        item_id=self._msg_id,
                        output_index=index,
                        content_index=0,
                        part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                    )
                )
            self._text += message.content
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self._msg_id,
                    output_index=self._items.index("message"),
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
            self._thinking = msg.thinking
            self._items.append("reasoning")
        if msg.content or not msg.tool_calls:
            self._text = msg.content
            self._items.append("message")
        self._add_calls(msg.tool_calls)
        return self.response("completed", resp.stats, resp.done_reason)
