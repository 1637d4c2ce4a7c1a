"""Steady client traffic through the router, every call recorded and every answer checked."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from corral.v1 import common_pb2, router_service_pb2, router_service_pb2_grpc

from tests.router.stack import MODEL

# NOTE: the documented client policy for the router (docs/reliability.md): retry UNAVAILABLE a few
# times with backoff, and wait for the channel to be ready instead of failing fast while it reconnects.
RETRY_SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": "corral.v1.RouterService"}],
            "waitForReady": True,
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
_WORDS = (
    "amber basil cedar delta ember fjord garnet harbor indigo juniper kelp lantern meadow nickel "
    "orchid pepper quartz raven saffron tundra umber velvet willow xenon yarrow zephyr acorn bramble "
    "cobalt dune falcon glacier hazel iris jasper kestrel lichen marble nectar onyx pebble quill"
).split()
SEED_OPTION = 7
# NOTE: the nodes' admin API answers at once unless the node is stopped or dead.
_NODE_READ_S = 2.0


def make_prompts(count: int, seed: int = 1) -> list[str]:
    """Prompts with no words in common, so no two are semantically close (no legitimate cross-hits)."""
    rng = random.Random(seed)
    words = list(_WORDS)
    rng.shuffle(words)
    prompts = []
    for i in range(count):
        picked = [words[(i * 3 + k) % len(words)] for k in range(3)]
        prompts.append(f"describe {' and '.join(picked)} in one paragraph, variant {i}")
    return prompts


@dataclass
class Call:
    """One recorded call."""

    kind: str
    prompt: str
    started: float
    latency_ms: float = 0.0
    code: str = "OK"
    outcome: str = ""
    resumed: bool = False
    complete: bool = True
    text: str = ""
    detail: str = ""
    node_id: str = ""
    failed_node_ids: list[str] = field(default_factory=list)
    continuation: str = ""  # for a resumed call: "exact", "consistent", or why its text is wrong


@dataclass
class Traffic:
    """Workers sending Generate and GenerateStream calls in a loop until stopped.

    Args:
        address: The router.
        prompts: The prompt pool (repeats make cache hits).
        unary_workers: Concurrent unary loops.
        stream_workers: Concurrent streaming loops.
        think_s: Pause between two calls of one worker.
        retrying: Use the documented retry policy (else a plain channel, no retries).
        wait_for_ready: Calls wait for the channel to connect instead of failing fast (implied by retrying).
        timeout_s: Deadline of each call.
        nodes: Node id -> (API URL, admin URL) of simulated nodes. When given, every answer continued
            on another node after a failure is checked against what the nodes sent (`check_continuation`).
    """

    address: str
    prompts: list[str]
    unary_workers: int = 3
    stream_workers: int = 1
    think_s: float = 0.02
    retrying: bool = False
    wait_for_ready: bool = False
    timeout_s: float = 15.0
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)
    wrong: list[Call] = field(default_factory=list)
    continued: list[Call] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _channel: grpc.aio.Channel | None = None
    _http: aiohttp.ClientSession | None = None
    _answers: dict[str, str] = field(default_factory=dict)

    async def start(self) -> None:
        options: list[tuple[str, Any]] = (
            [("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG))] if self.retrying else []
        )
        options.append(("grpc.enable_retries", 1 if self.retrying else 0))
        self._channel = grpc.aio.insecure_channel(self.address, options=options)
        if self.nodes:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_NODE_READ_S))
        stub = router_service_pb2_grpc.RouterServiceStub(self._channel)
        for i in range(self.unary_workers):
            self._tasks.append(asyncio.create_task(self._unary_loop(stub, i)))
        for i in range(self.stream_workers):
            self._tasks.append(asyncio.create_task(self._stream_loop(stub, 100 + i)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
        if self._http is not None:
            await self._http.close()

    def _request(self, rng: random.Random) -> tuple[str, common_pb2.GenerateSpec, common_pb2.CachePolicy]:
        prompt = rng.choice(self.prompts)
        options = common_pb2.ModelOptions(seed=SEED_OPTION)
        spec = common_pb2.GenerateSpec(model=MODEL, prompt=prompt, options=options)
        mode = common_pb2.CACHE_MODE_BYPASS if rng.random() < 0.5 else common_pb2.CACHE_MODE_UNSPECIFIED
        return prompt, spec, common_pb2.CachePolicy(mode=mode)

    def _check(self, call: Call) -> None:
        """A live answer sets what the prompt's answer is; every later answer must be the same text."""
        if call.code != "OK" or call.resumed or not call.complete:
            return
        live = call.outcome in ("CACHE_OUTCOME_MISS", "CACHE_OUTCOME_BYPASS", "CACHE_OUTCOME_DEGRADED")
        known = self.expected.get(call.prompt)
        if known is None:
            if live:
                self.expected[call.prompt] = call.text
            return
        if call.text != known:
            self.wrong.append(call)

    @property
    def broken_continuations(self) -> list[Call]:
        """Resumed calls whose text is not the failed node's partial answer followed by the continuation."""
        return [c for c in self.continued if c.continuation not in ("exact", "consistent")]

    async def _records(self, node_id: str) -> list[dict[str, Any]] | None:
        """A node's latest completions (GET /_sim/requests), or None when it does not answer."""
        assert self._http is not None
        try:
            async with self._http.get(self.nodes[node_id][1] + "/_sim/requests") as resp:
                records: list[dict[str, Any]] = (await resp.json())["requests"]
                return records
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _whole_answer(self, node_id: str, prompt: str) -> str:
        """The prompt's whole answer (the same on every node: seed pinned), asked of a node directly."""
        known = self._answers.get(prompt)
        if known is None:
            assert self._http is not None
            body = {"model": MODEL, "prompt": prompt, "stream": False, "options": {"seed": SEED_OPTION}}
            async with self._http.post(self.nodes[node_id][0] + "/api/generate", json=body) as resp:
                known = self._answers[prompt] = str((await resp.json())["response"])
        return known

    async def check_continuation(self, call: Call) -> str:
        """How a resumed answer was checked: "exact", "consistent", or why its text is wrong.

        The node that finished the answer was asked to continue the prompt after a partial answer
        (services/router/forward.py): its record must hold that partial answer, and the client's text
        must be that partial answer followed by what the node sent, nothing repeated, nothing lost.
        The partial answer must be the start of the prompt's whole answer. "exact" when the failed
        node's own record shows it sent exactly that partial answer before its stream was cut; a
        killed or stopped node cannot tell, so there the check is "consistent".
        """
        records = await self._records(call.node_id)
        if records is None:
            return f"{call.node_id}, which finished the answer, does not answer its admin API"
        user = {"role": "user", "content": call.prompt}
        partial: str | None = None
        for record in records:
            messages = record["request"].get("messages") or []
            if record["outcome"] != "done" or messages[:-1] != [user] or messages[-1]["role"] != "assistant":
                continue
            if messages[-1]["content"] + record["sent"] == call.text:
                partial = messages[-1]["content"]
                break
        if partial is None:
            return f"no continuation on {call.node_id} is the text's end (repeated, lost or reordered text)"
        whole = await self._whole_answer(call.node_id, call.prompt)
        if not partial or not whole.startswith(partial):
            return f"the partial answer {partial[:60]!r} is not the start of the prompt's answer"
        for failed in reversed(call.failed_node_ids):
            cut = await self._records(failed) if failed in self.nodes else None
            mine = [
                r for r in cut or [] if r["request"].get("prompt") == call.prompt and r["outcome"] == "cut"
            ]
            if any(r["sent"] == partial for r in mine):
                return "exact"
            if mine:
                sent = mine[-1]["sent"]
                return f"{failed} cut its answer after {sent!r}, but the continuation followed {partial!r}"
        return "consistent"

    async def _finish(self, call: Call) -> None:
        self.calls.append(call)
        self._check(call)
        if self.nodes and call.resumed and call.code == "OK" and call.complete:
            try:
                call.continuation = await self.check_continuation(call)
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                call.continuation = f"could not be checked: {type(exc).__name__}: {exc}"
            self.continued.append(call)

    async def _unary_loop(self, stub: router_service_pb2_grpc.RouterServiceStub, seed: int) -> None:
        rng = random.Random(seed)
        wait_for_ready = True if (self.retrying or self.wait_for_ready) else None
        while not self._stop.is_set():
            prompt, spec, policy = self._request(rng)
            call = Call("unary", prompt, time.monotonic())
            try:
                reply = await stub.Generate(
                    router_service_pb2.GenerateRequest(spec=spec, cache=policy),
                    timeout=self.timeout_s,
                    wait_for_ready=wait_for_ready,
                )
                call.text = reply.response
                call.outcome = common_pb2.CacheOutcome.Name(reply.routing.cache_outcome)
                call.resumed = reply.routing.resumed
                call.node_id = reply.routing.node_id
                call.failed_node_ids = list(reply.routing.failed_node_ids)
            except grpc.aio.AioRpcError as exc:
                call.code = exc.code().name
                call.detail = exc.details() or ""
            call.latency_ms = (time.monotonic() - call.started) * 1000
            await self._finish(call)
            await asyncio.sleep(self.think_s)

    async def _stream_loop(self, stub: router_service_pb2_grpc.RouterServiceStub, seed: int) -> None:
        rng = random.Random(seed)
        wait_for_ready = True if (self.retrying or self.wait_for_ready) else None
        while not self._stop.is_set():
            prompt, spec, policy = self._request(rng)
            call = Call("stream", prompt, time.monotonic(), complete=False)
            pieces: list[str] = []
            try:
                request = router_service_pb2.GenerateStreamRequest(spec=spec, cache=policy)
                stream = stub.GenerateStream(request, timeout=self.timeout_s, wait_for_ready=wait_for_ready)
                async for chunk in stream:
                    pieces.append(chunk.response)
                    if chunk.done:
                        call.complete = True
                        call.outcome = common_pb2.CacheOutcome.Name(chunk.routing.cache_outcome)
                        call.resumed = chunk.routing.resumed
                        call.node_id = chunk.routing.node_id
                        call.failed_node_ids = list(chunk.routing.failed_node_ids)
            except grpc.aio.AioRpcError as exc:
                call.code = exc.code().name
                call.detail = exc.details() or ""
            call.text = "".join(pieces)
            call.latency_ms = (time.monotonic() - call.started) * 1000
            await self._finish(call)
            await asyncio.sleep(self.think_s)

    # --- analysis -----------------------------------------------------------------------------------
    def between(self, start: float, end: float, kind: str | None = None) -> list[Call]:
        """Calls that started in [start, end)."""
        return [c for c in self.calls if start <= c.started < end and (kind is None or c.kind == kind)]

    def recovered_at(self, since: float, threshold_ms: float, window: int = 5) -> float | None:
        """Start of the first run of `window` consecutive good calls started after `since`."""
        after = sorted((c for c in self.calls if c.started >= since), key=lambda c: c.started)
        run = 0
        for i, call in enumerate(after):
            good = call.code == "OK" and call.complete and call.latency_ms <= threshold_ms
            run = run + 1 if good else 0
            if run == window:
                return after[i - window + 1].started
        return None


def summarize(calls: list[Call]) -> dict[str, Any]:
    """Counts and latency of a set of calls."""
    unary = [c for c in calls if c.kind == "unary"]
    streams = [c for c in calls if c.kind == "stream"]
    ok_latency = sorted(c.latency_ms for c in calls if c.code == "OK")
    return {
        "unary": len(unary),
        "unary_failed": sum(c.code != "OK" for c in unary),
        "unary_errors": dict(Counter(c.code for c in unary if c.code != "OK")),
        "streams": len(streams),
        "streams_failed": sum(c.code != "OK" for c in streams),
        "stream_errors": dict(Counter(c.code for c in streams if c.code != "OK")),
        "streams_truncated": sum(c.code == "OK" and not c.complete for c in streams),
        "streams_resumed": sum(c.resumed for c in streams),
        "p50_ms": round(statistics.median(ok_latency), 1) if ok_latency else None,
        "p99_ms": round(ok_latency[min(len(ok_latency) - 1, int(len(ok_latency) * 0.99))], 1)
        if ok_latency
        else None,
        "max_ms": round(ok_latency[-1], 1) if ok_latency else None,
        "error_details": sorted({f"{c.kind} {c.code}: {c.detail}"[:200] for c in calls if c.code != "OK"})[
            :5
        ],
    }
