"""OpenAI's Responses API, `POST /v1/responses`, as Ollama's compatibility layer serves it: a chat underneath.

Input: `input` (a string, or items: messages, `function_call`, `function_call_output`, `reasoning`, whose
`encrypted_content` is the thinking of the next assistant message), `instructions`,
flat function `tools`, `max_output_tokens`, `reasoning.effort`, `text.format`, `stream`. Output: a
`response` object with `reasoning`, `message` and `function_call` items; streamed, `response.*` events.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from aiohttp import web

from sim.api_infer import check_tools, completion_model, parse_format, render_chat, resolve_think, tool_prompt
from sim.completion import CompletionRequest, CompletionResult, Delta, run_completion
from sim.engine import BusyError, Engine
from sim.wire import ApiError, encode, json_response, start_sse

_ids = itertools.count(1)


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                raise ApiError(400, f"{where}[{index}]: unsupported content part")
            texts.append(str(part.get("text") or ""))
        return "\n".join(texts)
    raise ApiError(400, f"{where}: invalid content type")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        out.append({"role": "system", "content": body["instructions"]})
    raw = body.get("input")
    if isinstance(raw, str):
        return [*out, {"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise ApiError(400, "input: must be a string or an array of items")
    thinking = ""
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ApiError(400, f"input[{index}]: must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = "system" if item.get("role") == "developer" else item.get("role")
            message = {"role": role, "content": _text(item.get("content"), f"input[{index}].content")}
            if role == "assistant" and thinking:
                message["thinking"], thinking = thinking, ""
            out.append(message)
        elif kind == "reasoning":
            # NOTE: as Ollama: the reasoning's encrypted_content (its thinking as plain text) goes with
            # the next assistant message; one left at the end is an assistant message of its own.
            thinking = str(item.get("encrypted_content") or "")
        elif kind == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except ValueError:
                raise ApiError(400, f"input[{index}].arguments: invalid JSON") from None
            call = {"function": {"index": 0, "name": item.get("name"), "arguments": arguments}}
            out.append({"role": "assistant", "content": "", "tool_calls": [call]})
            if thinking:
                out[-1]["thinking"], thinking = thinking, ""
        elif kind == "function_call_output":
            output = item.get("output")
            out.append({"role": "tool", "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise ApiError(400, f"input[{index}].type: unsupported input item type {kind!r}")
    if thinking:
        out.append({"role": "assistant", "content": "", "thinking": thinking})
    return out


class ResponsesApi:
    """The /v1/responses handler bound to one node's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses."""
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise ApiError(400, f"invalid request body: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "missing request body" if body is None else "invalid request body")
        name, spec = completion_model(self.engine, body, "chat")
        messages = _messages(body)
        if not messages:
            raise ApiError(400, "input: must not be empty")
        ids, key = render_chat(messages)
        tools = [
            {"type": "function", "function": {k: t.get(k) for k in ("name", "description", "parameters")}}
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function"
        ]
        check_tools(spec, tools)
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        effort = {"none": False, "minimal": "low"}.get(effort, effort) if isinstance(effort, str) else None
        fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
        format_value: Any = None
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            format_value = "json"
        elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            format_value = fmt.get("schema") or "json"
        max_tokens = body.get("max_output_tokens")
        req = CompletionRequest(
            spec=spec,
            prompt_ids=ids,
            key=f"{spec.key}\x01{key}",
            keep_alive_s=self.engine.cfg.keep_alive_s,
            seed=self.engine.cfg.seed,
            num_predict=max_tokens
            if isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
            else None,
            json_format=parse_format(format_value),
            think=resolve_think(spec, name, effort),
            tools=tools,
            tool_prompt=tool_prompt(messages),
            transcript=self.engine.transcript(request.path, body),
        )
        n = next(_ids)
        base = {
            "id": f"resp_{n}",
            "object": "response",
            "created_at": int(time.time()),
            "model": name,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "error": None,
        }
        if not body.get("stream"):
            try:
                result = await run_completion(self.engine, req, None)
            except BusyError as exc:
                raise ApiError(503, str(exc)) from None
            return json_response(_response(base, n, result))
        response: web.StreamResponse | None = None
        seq = itertools.count()
        opened: list[str] = []

        async def send(kind: str, **fields: Any) -> None:
            nonlocal response
            if response is None:
                response = await start_sse(request)
                started = {**base, "status": "in_progress", "output": []}
                for opening in ("response.created", "response.in_progress"):
                    event = {"type": opening, "sequence_number": next(seq), "response": started}
                    await response.write(f"event: {opening}\ndata: {encode(event)}\n\n".encode())
            event = {"type": kind, "sequence_number": next(seq), **fields}
            await response.write(f"event: {kind}\ndata: {encode(event)}\n\n".encode())

        async def sink(piece: Delta) -> None:
            if piece.thinking:
                if "reasoning" not in opened:
                    opened.append("reasoning")
                    item = {"id": f"rs_{n}", "type": "reasoning", "summary": []}
                    await send("response.output_item.added", output_index=len(opened) - 1, item=item)
                await send(
                    "response.reasoning_summary_text.delta",
                    item_id=f"rs_{n}",
                    output_index=opened.index("reasoning"),
                    summary_index=0,
                    delta=piece.thinking,
                )
            if piece.content:
                if "message" not in opened:
                    opened.append("message")
                    item = {"id": f"msg_{n}", "type": "message", "role": "assistant", "status": "in_progress"}
                    await send(
                        "response.output_item.added",
                        output_index=len(opened) - 1,
                        item={**item, "content": []},
                    )
                await send(
                    "response.output_text.delta",
                    item_id=f"msg_{n}",
                    output_index=opened.index("message"),
                    content_index=0,
                    delta=piece.content,
                    logprobs=[],
                )

        try:
            result = await run_completion(self.engine, req, sink)
        except BusyError as exc:
            raise ApiError(503, str(exc)) from None
        final = _response(base, n, result)
        for index, item in enumerate(final["output"]):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                await send(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
            if item["type"] == "function_call":
                await send("response.output_item.added", output_index=index, item={**item, "arguments": ""})
                await send(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            await send("response.output_item.done", output_index=index, item=item)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        await send(kind, response=final)
        assert response is not None
        await response.write_eof()
        return response


def _response(base: dict[str, Any], n: int, result: CompletionResult) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if result.thinking:
        summary = [{"type": "summary_text", "text": result.thinking_text}]
        output.append({"id": f"rs_{n}", "type": "reasoning", "summary": summary})
    if result.pieces or not result.tool_calls:
        content = [{"type": "output_text", "text": result.text, "annotations": [], "logprobs": []}]
        output.append(
            {
                "id": f"msg_{n}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": content,
            }
        )
    for call in result.tool_calls:
        output.append(
            {
                "id": f"fc_{call['id']}",
                "type": "function_call",
                "call_id": f"call_{call['id']}",
                "name": call["function"]["name"],
                "arguments": json.dumps(call["function"]["arguments"]),
                "status": "completed",
            }
        )
    incomplete = result.done_reason == "length"
    usage = {
        "input_tokens": result.prompt_eval_count,
        "output_tokens": result.eval_count,
        "total_tokens": result.prompt_eval_count + result.eval_count,
    }
    return {
        **base,
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "output": output,
        "usage": usage,
    }
