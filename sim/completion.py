"""One simulated completion: runner, slot, KV-cache reuse, prompt evaluation and paced generation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sim import textgen
from sim.config import ModelSpec
from sim.engine import BusyError, Engine, Transcript, common_prefix

TokenSink = Callable[[str], Awaitable[None]]

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
    json_key: str | None = None  # set when `format` asks for JSON output
    transcript: Transcript | None = None  # what the node sends is recorded here (GET /_sim/requests)


@dataclass(slots=True)
class CompletionResult:
    """Output and the numbers of the final chunk (durations in nanoseconds)."""

    pieces: list[str]
    done_reason: str
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


def _json_pieces(pieces: list[str], key: str) -> list[str]:
    body = [p.replace('"', "") for p in pieces]
    return ["{", '"', key, '"', ":", ' "', *body, '"', "}"]


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
            pieces = gen.pieces if req.json_key is None else _json_pieces(gen.pieces, req.json_key)
            per_token_s = engine.eval_s_per_token(spec)
            if transcript is not None:
                transcript.pieces = pieces
            await _emit(engine, pieces, per_token_s, sink, transcript)
            output_ids = textgen.token_ids("".join(pieces))
            new_cache = prompt_ids + output_ids
            engine.account_prompt(spec, evaluated, cached, len(pieces))
        finally:
            engine.release_slot(runner, slot, new_cache)
    finally:
        engine.release_runner(runner)
    prompt_ns = int(prompt_s * 1e9)
    eval_ns = int(per_token_s * len(pieces) * 1e9)
    return CompletionResult(
        pieces=pieces,
        done_reason=gen.done_reason,
        context=new_cache,
        load_ns=load_ns,
        prompt_eval_count=evaluated,
        prompt_eval_ns=prompt_ns,
        eval_count=len(pieces),
        eval_ns=eval_ns,
        total_ns=load_ns + int(waited_s * 1e9) + prompt_ns + eval_ns,
    )


async def _emit(
    engine: Engine,
    pieces: list[str],
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
            if transcript is not None:
                transcript.sent = count + 1
    if cut is not None and cut <= len(pieces):
        raise StreamCut()
    if debt_s > 0:
        await asyncio.sleep(debt_s)
