"""One simulated completion: runner, slot, KV-cache reuse, prompt evaluation and paced generation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sim import structured, textgen
from sim.config import ModelSpec
from sim.engine import BusyError, Engine, Transcript, common_prefix


@dataclass(slots=True)
class Delta:
    """One streamed step: a token of content or of thinking, or the tool calls (sent whole, as Ollama)."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] | None = None


TokenSink = Callable[[Delta], Awaitable[None]]

# NOTE: below this much real time, sleeps are batched; asyncio.sleep cannot honour shorter ones.
_MIN_SLEEP_S = 0.001


class StreamCut(Exception):
    """The `cut_after_tokens` fault fired: the connection must be dropped."""


@dataclass(slots=True)
class CompletionRequest:
    """What the API layer hands to the cost model."""

    spec: ModelSpec
    prompt_ids: list[int]
    key: str
    keep_alive_s: float
    seed: int
    num_predict: int | None = None
    stop: list[str] = field(default_factory=list)
    json_format: str | dict[str, Any] | None = None  # "json" or a JSON Schema when `format` asks for JSON
    think: bool = False  # a thinking model thinks before it answers
    tools: list[dict[str, Any]] = field(default_factory=list)  # tools the request offers
    tool_prompt: str | None = None  # the user turn a tool call may answer (None: no call this turn)
    transcript: Transcript | None = None  # what the node sends is recorded here (GET /_sim/requests)


@dataclass(slots=True)
class CompletionResult:
    """Output and the numbers of the final chunk (durations in nanoseconds)."""

    pieces: list[str]
    done_reason: str
    thinking: list[str]
    tool_calls: list[dict[str, Any]]
    context: list[int]
    load_ns: int
    prompt_eval_count: int
    prompt_eval_ns: int
    eval_count: int
    eval_ns: int
    total_ns: int

    @property
    def text(self) -> str:
        """The whole answer."""
        return "".join(self.pieces)

    @property
    def thinking_text(self) -> str:
        """The whole reasoning (empty when the model did not think)."""
        return "".join(self.thinking)


def _json_pieces(pieces: list[str], key: str) -> list[str]:
    body = [p.replace('"', "") for p in pieces]
    return ["{", '"', key, '"', ":", ' "', *body, '"', "}"]


def _answer(req: CompletionRequest, gen: textgen.Generation) -> tuple[list[str], list[dict[str, Any]]]:
    """The content pieces and tool calls of the answer."""
    if req.tools and req.tool_prompt is not None:
        tool = structured.pick_tool(req.tools, req.tool_prompt)
        if tool is not None:
            return [], [structured.tool_call(tool, req.tool_prompt, req.seed, req.key)]
    fmt = req.json_format
    if isinstance(fmt, dict) and (fmt.get("properties") or fmt.get("type") not in (None, "object")):
        return structured.json_pieces(structured.schema_value(fmt, req.seed, req.key)), []
    if fmt is not None:
        # NOTE: "json" (or a schema without properties): an object holding the generated text.
        return _json_pieces(gen.pieces, "response"), []
    return gen.pieces, []


async def run_completion(engine: Engine, req: CompletionRequest, sink: TokenSink | None) -> CompletionResult:
    """Run a completion through the node's scheduler, calling `sink` per token when streaming.

    Raises:
        BusyError: the queue is full.
        StreamCut: the cut fault fired.
    """
    transcript = req.transcript
    if transcript is None:
        return await _run(engine, req, sink, None)
    try:
        result = await _run(engine, req, sink, transcript)
    except StreamCut:
        transcript.outcome = "cut"
        raise
    except BusyError:
        transcript.outcome = "busy"
        raise
    except (asyncio.CancelledError, ConnectionError):
        transcript.outcome = "cancelled"
        raise
    except BaseException:
        transcript.outcome = "failed"
        raise
    if sink is None:
        transcript.sent = len(transcript.pieces)
    transcript.outcome = "done"
    return result


async def _run(
    engine: Engine, req: CompletionRequest, sink: TokenSink | None, transcript: Transcript | None
) -> CompletionResult:
    spec = req.spec
    runner, load_ns = await engine.acquire_runner(spec, req.keep_alive_s)
    try:
        prompt_ids = req.prompt_ids
        if len(prompt_ids) > engine.cfg.num_ctx:
            prompt_ids = prompt_ids[-engine.cfg.num_ctx :]
        slot, waited_s = await engine.acquire_slot(runner, prompt_ids)
        new_cache: list[int] | None = None
        try:
            # NOTE: like llama.cpp, the last prompt token is always evaluated again, even on a full hit.
            cached = max(0, min(common_prefix(slot.token_ids, prompt_ids), len(prompt_ids) - 1))
            evaluated = len(prompt_ids) - cached
            prompt_s = engine.prompt_eval_s(spec, evaluated)
            await engine.sleep(prompt_s)
            cfg = engine.cfg
            gen = textgen.generate(
                req.key, req.seed, cfg.response_tokens_min, cfg.response_tokens_max, req.num_predict, req.stop
            )
            pieces, calls = _answer(req, gen)
            thinking: list[str] = []
            if req.think:
                thought = textgen.generate(
                    f"{req.key}\x01think", req.seed, cfg.response_tokens_min, cfg.response_tokens_max, None
                )
                thinking = thought.pieces
            deltas = [Delta(thinking=p) for p in thinking] + [Delta(content=p) for p in pieces]
            call_tokens = sum(textgen.count_tokens(json.dumps(c["function"])) for c in calls)
            if calls:
                deltas.append(Delta(tool_calls=calls))
            per_token_s = engine.eval_s_per_token(spec)
            if transcript is not None:
                transcript.pieces = pieces
            await _emit(engine, deltas, per_token_s, sink, transcript)
            output_ids = textgen.token_ids("".join(thinking) + "".join(pieces))
            new_cache = prompt_ids + output_ids
            generated = len(thinking) + len(pieces) + call_tokens
            engine.account_prompt(spec, evaluated, cached, generated)
        finally:
            engine.release_slot(runner, slot, new_cache)
    finally:
        engine.release_runner(runner)
    prompt_ns = int(prompt_s * 1e9)
    eval_ns = int(per_token_s * generated * 1e9)
    return CompletionResult(
        pieces=pieces,
        done_reason=gen.done_reason if not calls else "stop",
        thinking=thinking,
        tool_calls=calls,
        context=new_cache,
        load_ns=load_ns,
        prompt_eval_count=evaluated,
        prompt_eval_ns=prompt_ns,
        eval_count=generated,
        eval_ns=eval_ns,
        total_ns=load_ns + int(waited_s * 1e9) + prompt_ns + eval_ns,
    )


async def _emit(
    engine: Engine,
    pieces: list[Delta],
    per_token_s: float,
    sink: TokenSink | None,
    transcript: Transcript | None = None,
) -> None:
    cut = engine.faults.current.cut_after_tokens
    scale = engine.cfg.time_scale
    if sink is None and cut is None:
        await engine.sleep(per_token_s * len(pieces))
        return
    debt_s = 0.0
    per_token_real_s = per_token_s * scale
    for count, piece in enumerate(pieces):
        if cut is not None and count >= cut:
            raise StreamCut()
        if per_token_real_s > 0:
            debt_s += per_token_real_s
            if debt_s >= _MIN_SLEEP_S:
                await asyncio.sleep(debt_s)
                debt_s = 0.0
        if sink is not None:
            await sink(piece)
            if transcript is not None and piece.content:
                transcript.sent += 1
    if cut is not None and cut <= len(pieces):
        raise StreamCut()
    if debt_s > 0:
        await asyncio.sleep(debt_s)
