"""Open-loop load generator, run as its own process: Poisson arrivals, per-request latency, TTFT and status.

    python -m bench.harness.loadgen SPEC.json OUT.json

The spec names the target (`protocol`: `ollama` for /api/chat, `openai` for /v1/chat/completions,
`grpc` for Corral's RouterService.Chat), the arrival process (`poisson` with `rate_rps`, or `closed`
with `concurrency` for a saturation measurement), the duration, a warm-up, a cap on outstanding
requests (arrivals beyond it are dropped and counted, never queued in the client) and the requests
(`unique` questions, a `script` of items, or chat `sessions` whose turns carry the growing history).
Unique questions may mix models (`models`: [[name, share], ...], each request's model fixed by the
arrival seed and its index, bench/harness/workload.py `model_of`, so every system and the oracle
get the same sequence); each record keeps its model.
A Poisson run may follow a `rate_profile` ((from s, factor) steps of its rate, bench/harness/workload.py)
and carry `events`: HTTP calls made at set times of the trace (`at_s`, the same
clock as the arrivals, warm-up included; `method`, `url`, optional `json`), e.g. a simulator fault
set and cleared mid-run. The result keeps `t0`, the wall time of the trace's zero, and each event's
wall time and status.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness.workload import Session, make_session, model_of, poisson_arrivals, unique_question

_HEADERS_KEPT = {
    "x-corral-node": "node",
    "x-corral-attempts": "attempts",
    "x-corral-cache": "cache",
    "x-litellm-model-api-base": "node",
    "x-litellm-attempted-retries": "retries",
    "x-litellm-cache-hit": "cache",
}


@dataclass
class Record:
    """One request as the client saw it (times are wall-clock seconds, durations milliseconds)."""

    t: float
    phase: str
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    ok: bool = False
    status: int = 0
    error: str = ""
    label: str = ""
    node: str = ""
    attempts: str = ""
    retries: str = ""
    cache: str = ""
    session: str = ""
    turn: int = -1
    answer: str = ""
    model: str = ""


class Target:
    """Sends one chat request with the target's protocol and fills in a Record."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.protocol: str = spec["protocol"]
        self.base: str = spec["base"]
        self.model: str = spec["model"]
        self.headers: dict[str, str] = dict(spec.get("headers", {}))
        self.session_header: str = spec.get("session_header", "")
        self.stream: bool = bool(spec.get("stream", False))
        self.num_predict: int | None = spec.get("num_predict")
        self.timeout_s: float = float(spec.get("timeout_s", 60))
        self.http: aiohttp.ClientSession | None = None
        self._stub: Any = None
        self._channel: Any = None

    async def open(self) -> None:
        """Opens the pooled HTTP session (no connection limit) or the gRPC channel."""
        if self.protocol == "grpc":
            import grpc
            from corral.v1 import router_service_pb2_grpc

            self._channel = grpc.aio.insecure_channel(self.base)
            self._stub = router_service_pb2_grpc.RouterServiceStub(self._channel)
        else:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)

    async def close(self) -> None:
        """Closes connections."""
        if self.http is not None:
            await self.http.close()
        if self._channel is not None:
            await self._channel.close()

    async def send(self, rec: Record, messages: list[dict[str, str]], session_id: str = "") -> None:
        """Sends the request (to `rec.model`, else the target's model) and records latency, TTFT,
        status and the routing headers."""
        rec.model = rec.model or self.model
        started = time.perf_counter()
        try:
            if self.protocol == "grpc":
                await self._grpc(rec, messages, session_id, started)
            else:
                await self._http(rec, messages, session_id, started)
        except TimeoutError:
            rec.error = "client timeout"
        except aiohttp.ClientError as exc:
            rec.error = f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:
            rec.error = f"{type(exc).__name__}: {exc}"[:200]
        rec.latency_ms = (time.perf_counter() - started) * 1000

    def _body(self, messages: list[dict[str, str]], model: str) -> tuple[str, dict[str, Any]]:
        if self.protocol == "ollama":
            body: dict[str, Any] = {"model": model, "messages": messages, "stream": self.stream}
            if self.num_predict is not None:
                body["options"] = {"num_predict": self.num_predict}
            return "/api/chat", body
        body = {"model": model, "messages": messages, "stream": self.stream}
        if self.num_predict is not None:
            body["max_tokens"] = self.num_predict
        return "/v1/chat/completions", body

    async def _http(
        self, rec: Record, messages: list[dict[str, str]], session_id: str, started: float
    ) -> None:
        assert self.http is not None
        path, body = self._body(messages, rec.model)
        headers = dict(self.headers)
        if session_id and self.session_header:
            headers[self.session_header] = session_id
        async with self.http.post(self.base + path, json=body, headers=headers) as resp:
            rec.status = resp.status
            for name, key in _HEADERS_KEPT.items():
                if name in resp.headers:
                    setattr(rec, key, resp.headers[name])
            if resp.status != 200:
                rec.error = f"HTTP {resp.status}: {(await resp.text())[:160]}"
                return
            if not self.stream:
                reply = await resp.json(content_type=None)
                rec.answer = _answer_of(reply, self.protocol)
                rec.ok = bool(rec.answer) or "error" not in reply
                if "error" in reply:
                    rec.ok, rec.error = False, str(reply["error"])[:160]
                return
            parts: list[str] = []
            done = False
            async for raw in resp.content:
                line = raw.strip()
                if not line:
                    continue
                if self.protocol == "openai":
                    if not line.startswith(b"data:"):
                        continue
                    line = line[5:].strip()
                    if line == b"[DONE]":
                        done = True
                        break
                chunk = json.loads(line)
                if "error" in chunk:
                    rec.error = str(chunk["error"])[:160]
                    return
                piece = _piece_of(chunk, self.protocol)
                if piece:
                    if rec.ttft_ms is None:
                        rec.ttft_ms = (time.perf_counter() - started) * 1000
                    parts.append(piece)
                if self.protocol == "ollama" and chunk.get("done"):
                    done = True
                if self.protocol == "openai" and _finished(chunk):
                    done = True
            rec.answer = "".join(parts)
            rec.ok = done
            if not done:
                rec.error = "stream ended early"

    async def _grpc(
        self, rec: Record, messages: list[dict[str, str]], session_id: str, started: float
    ) -> None:
        import grpc
        from corral.v1 import common_pb2, router_service_pb2

        options = common_pb2.ModelOptions(num_predict=self.num_predict) if self.num_predict else None
        spec = common_pb2.ChatSpec(
            model=rec.model,
            messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages],
            options=options,
        )
        try:
            reply = await self._stub.Chat(
                router_service_pb2.ChatRequest(spec=spec, session_id=session_id), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            rec.status = exc.code().value[0]
            rec.error = f"{exc.code().name}: {exc.details()}"[:200]
            return
        rec.status = 200
        rec.ok = True
        rec.answer = reply.message.content
        rec.node = reply.routing.node_id
        rec.attempts = str(reply.routing.attempts)


def _answer_of(reply: dict[str, Any], protocol: str) -> str:
    if protocol == "ollama":
        return str(reply.get("message", {}).get("content", ""))
    choices = reply.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


def _piece_of(chunk: dict[str, Any], protocol: str) -> str:
    if protocol == "ollama":
        return str(chunk.get("message", {}).get("content", ""))
    choices = chunk.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


def _finished(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or [{}]
    return bool(choices[0].get("finish_reason"))


class Run:
    """One load run: arrivals, outstanding cap, records."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.target = Target(spec["target"])
        self.records: list[Record] = []
        self.dropped = 0
        self.outstanding = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.t0: float | None = None
        self.events: list[dict[str, Any]] = []

    async def one(self, rec: Record, messages: list[dict[str, str]], session_id: str = "") -> None:
        self.outstanding += 1
        try:
            await self.target.send(rec, messages, session_id)
        finally:
            self.outstanding -= 1
        self.records.append(rec)

    async def session(self, session: Session, phase: str, think_s: float) -> None:
        self.outstanding += 1
        try:
            for turn in range(len(session.questions)):
                rec = Record(t=time.time(), phase=phase, session=session.session_id, turn=turn)
                await self.target.send(rec, session.next_messages(turn), session.session_id)
                self.records.append(rec)
                if not rec.ok:
                    return
                session.record_answer(turn, rec.answer)
                rec.answer = ""
                if think_s:
                    await asyncio.sleep(think_s)
        finally:
            self.outstanding -= 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def poisson(self) -> None:
        spec = self.spec
        requests = spec["requests"]
        kind = requests["kind"]
        warmup_s = float(spec.get("warmup_s", 0))
        duration_s = float(spec["duration_s"])
        cap = int(spec.get("max_outstanding", 1000))
        items = requests.get("items", [])
        mix = [(m, float(share)) for m, share in requests.get("models", [])]
        mix_key = str(spec.get("seed", 1))
        start = time.perf_counter()
        self.t0 = time.time()
        events = asyncio.create_task(self._events(start, spec.get("events", [])))
        i = 0
        profile = [(float(t), float(f)) for t, f in spec.get("rate_profile", [])]
        trace = poisson_arrivals(
            float(spec["rate_rps"]), duration_s, warmup_s, int(spec.get("seed", 1)), profile
        )
        for arrival in trace:
            if kind == "script" and i >= len(items):
                break
            delay = start + arrival.at_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            phase = arrival.phase
            if self.outstanding >= cap:
                self.dropped += phase == "measure"
                continue
            if kind == "sessions":
                session = make_session(i, int(requests["turns"]), requests.get("tag", "s"))
                self._spawn(self.session(session, phase, float(requests.get("think_s", 0))))
            elif kind == "script":
                item = items[i]
                rec = Record(t=time.time(), phase=phase, label=item.get("label", ""))
                self._spawn(self.one(rec, item["messages"]))
            else:
                tag = requests.get("tag", "q")
                question = unique_question(i, tag)
                rec = Record(t=time.time(), phase=phase)
                if mix:
                    rec.model = model_of(i, mix_key, mix)
                self._spawn(self.one(rec, [{"role": "user", "content": question}]))
            i += 1
        await events
        if self.tasks:
            await asyncio.wait(set(self.tasks))

    async def _events(self, start: float, events: list[dict[str, Any]]) -> None:
        """Makes each event's HTTP call at its trace time; a failed call is recorded, not raised."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for event in sorted(events, key=lambda e: float(e["at_s"])):
                delay = start + float(event["at_s"]) - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                done = {**event, "t": time.time(), "status": 0, "error": ""}
                try:
                    method = event.get("method", "POST")
                    async with http.request(method, event["url"], json=event.get("json")) as resp:
                        done["status"] = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    done["error"] = f"{type(exc).__name__}: {exc}"[:200]
                self.events.append(done)

    async def closed(self) -> None:
        spec = self.spec
        tag = spec["requests"].get("tag", "c")
        counter = iter(range(10**9))
        warm_until = time.perf_counter() + float(spec.get("warmup_s", 0))
        end = warm_until + float(spec["duration_s"])

        async def worker() -> None:
            while (now := time.perf_counter()) < end:
                phase = "warmup" if now < warm_until else "measure"
                rec = Record(t=time.time(), phase=phase)
                await self.one(rec, [{"role": "user", "content": unique_question(next(counter), tag)}])

        await asyncio.gather(*(worker() for _ in range(int(spec["concurrency"]))))

    async def run(self) -> dict[str, Any]:
        await self.target.open()
        started = time.time()
        try:
            if self.spec["mode"] == "closed":
                await self.closed()
            else:
                await self.poisson()
        finally:
            await self.target.close()
        records = [asdict(r) for r in self.records]
        for r in records:
            r.pop("answer", None)
        return {
            "started_at": started,
            "ended_at": time.time(),
            "t0": self.t0,
            "events": self.events,
            "dropped": self.dropped,
            "records": records,
        }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    import uvloop

    result = uvloop.run(Run(spec).run())
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
