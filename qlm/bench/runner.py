"""Sending a plan to an OpenAI-compatible endpoint: open-loop arrivals at the planned wall
times (a request is sent when its time comes, whether or not earlier ones finished), each
request streaming, every outcome a :class:`~qlm.bench.records.RequestRecord`.

Each request: ``stream: true``, ``stream_options.include_usage``, ``max_tokens`` = its output
length, ``ignore_eos: true`` (as ``vllm bench serve --ignore-eos``; switchable), optionally
``min_tokens`` = the same length; the SLO class as body field ``slo_class`` and header
``X-QLM-SLO-Class`` (each switchable: the OpenAI API rejects unknown body fields, vLLM and
vllm-router accept and forward them); optionally ``service_tier`` per class; ``X-Request-Id:
qlm-bench-<seed>-<index>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from qlm.bench.plan import BenchPlan, PlannedRequest
from qlm.bench.records import RequestRecord
from qlm.errors import QLMError

__all__ = ["ENDPOINTS", "BenchError", "RunResult", "StreamParser", "Target", "probe", "request_body",
           "request_headers", "run_plan"]

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
CLASS_HEADER = "X-QLM-SLO-Class"


class BenchError(QLMError):
    """The endpoint cannot be benchmarked (unreachable, refuses the key, serves none of the
    plan's models). ``str(err)`` is one line."""


@dataclass(frozen=True)
class Target:
    """Where and how to send requests.

    ``base_url`` is the server root (a trailing ``/v1`` is dropped); ``max_concurrency``
    caps requests in flight (later arrivals wait for a slot; None: no cap); ``timeout_s``
    bounds one request, wall seconds, from its send to its last byte.
    """

    base_url: str
    endpoint: str = "/v1/chat/completions"
    api_key: str | None = None
    class_header: bool = True
    class_field: bool = True
    service_tiers: Mapping[str, str] = field(default_factory=dict)
    ignore_eos: bool = True
    min_tokens: bool = False
    max_concurrency: int | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url must be an http:// or https:// URL (got {self.base_url!r})")
        root = self.base_url.rstrip("/")
        object.__setattr__(self, "base_url", root[:-3] if root.endswith("/v1") else root)
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"--endpoint must be one of {', '.join(ENDPOINTS)} (got {self.endpoint!r})")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"--max-concurrency must be >= 1 (got {self.max_concurrency})")
        if self.timeout_s <= 0:
            raise ValueError(f"--timeout must be > 0 (got {self.timeout_s})")

    @property
    def chat(self) -> bool:
        return self.endpoint == "/v1/chat/completions"

    @property
    def url(self) -> str:
        return self.base_url + self.endpoint


def request_body(plan: BenchPlan, req: PlannedRequest, target: Target) -> dict[str, Any]:
    """The JSON body of ``req`` (see the module docstring)."""
    text = plan.prompt(req, target.chat)
    body: dict[str, Any] = {"model": req.model}
    if target.chat:
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    body.update(max_tokens=req.output_tokens, stream=True, stream_options={"include_usage": True})
    if target.ignore_eos:
        body["ignore_eos"] = True
    if target.min_tokens:
        body["min_tokens"] = req.output_tokens
    if target.class_field:
        body["slo_class"] = req.slo_class
    tier = target.service_tiers.get(req.slo_class)
    if tier is not None:
        body["service_tier"] = tier
    return body


def request_headers(plan: BenchPlan, req: PlannedRequest, target: Target) -> dict[str, str]:
    h = {"X-Request-Id": f"qlm-bench-{plan.seed}-{req.index}"}
    if target.class_header:
        h[CLASS_HEADER] = req.slo_class
    return h


class StreamParser:
    """Reads one SSE response line by line and times it (``vllm bench serve``'s rules, see
    :class:`RequestRecord`). ``feed(line, now)`` returns True at ``data: [DONE]``."""

    def __init__(self, start: float, chat: bool) -> None:
        self.start = start
        self.chat = chat
        self.first: float | None = None
        self.last: float | None = None
        self.itl: list[float] = []
        self.text_chunks = 0
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.detail: str | None = None
        self.done = False

    def feed(self, line: str, now: float) -> bool:
        if not line or line.startswith(":"):
            return self.done
        data = line[5:].strip() if line.startswith("data:") else line.strip()
        if data == "[DONE]":
            self.done = True
            return True
        try:
            obj = json.loads(data)
        except json.JSONDecodeError:
            self._fail("bad SSE data", data[:200])
            return self.done
        if not isinstance(obj, dict):
            self._fail("bad SSE data", data[:200])
            return self.done
        if "error" in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
            kind = err.get("type") or err.get("code")
            self._fail(f"stream error ({kind})" if kind else "stream error", str(err.get("message", "")))
            return self.done
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        choices = obj.get("choices")
        if choices and isinstance(choices, list) and isinstance(choices[0], dict):
            if self.first is None:
                self.first = now
            else:
                assert self.last is not None
                self.itl.append(now - self.last)
            self.last = now
            ch = choices[0]
            piece = (ch.get("delta") or {}).get("content") if self.chat else ch.get("text")
            if piece:
                self.text_chunks += 1
            if ch.get("finish_reason") is not None:
                self.finish_reason = str(ch["finish_reason"])
        return self.done

    def _fail(self, reason: str, detail: str) -> None:
        if self.error is None:
            self.error, self.detail = reason, detail

    def record(self, req: PlannedRequest, send_lag_s: float, t0: float = 0.0) -> RequestRecord:
        """The outcome; call after the stream ended (or broke: then pass the reason to
        :meth:`fail` first). ``t0``: the run's start, to which ``start_s`` is relative."""
        usage = self.usage or {}
        out = usage.get("completion_tokens")
        prompt = usage.get("prompt_tokens")
        common: dict[str, Any] = dict(
            index=req.index, slo_class=req.slo_class, model=req.model, start_s=self.start - t0,
            send_lag_s=send_lag_s, finish_reason=self.finish_reason,
            prompt_tokens=int(prompt) if isinstance(prompt, int) else req.prompt_tokens,
            output_tokens=int(out) if isinstance(out, int) else self.text_chunks,
        )
        error = self.error
        if error is None and self.first is None:
            error = "no token"
        if error is None and self.finish_reason in ("abort", "error"):
            error = f"finish_reason {self.finish_reason}"
        if error is None and not self.done and self.finish_reason is None:
            error = "stream ended early"
        if error is not None:
            return RequestRecord(success=False, error=error, detail=self.detail, **common)
        assert self.first is not None and self.last is not None
        return RequestRecord(success=True, ttft_s=self.first - self.start, e2el_s=self.last - self.start,
                             itl_s=tuple(self.itl), **common)

    def fail(self, reason: str, detail: str = "") -> None:
        """Mark the request failed (transport error, timeout) unless it already failed."""
        self._fail(reason, detail)


@dataclass(frozen=True)
class RunResult:
    """Records in plan order; ``duration_s`` from the first send to the last completion."""

    records: tuple[RequestRecord, ...]
    duration_s: float
    started_at: float  # time.time() at the start


def _client(target: Target, transport: httpx.AsyncBaseTransport | None, connections: int | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                          keepalive_expiry=30.0)
    return httpx.AsyncClient(headers=headers, limits=limits, timeout=httpx.Timeout(None, connect=30.0),
                             transport=transport, trust_env=False)


def _error_reason(status: int, raw: bytes) -> tuple[str, str]:
    kind: Any = None
    msg = raw[:300].decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        obj = json.loads(raw)
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            kind = err.get("type") or err.get("code")
            msg = str(err.get("message", msg))
        elif isinstance(obj, dict) and "detail" in obj:
            msg = str(obj["detail"])
    return (f"HTTP {status} ({kind})" if kind else f"HTTP {status}"), msg


async def probe(target: Target, transport: httpx.AsyncBaseTransport | None = None,
                timeout_s: float = 10.0) -> list[str]:
    """The model ids ``GET /v1/models`` lists (empty when the answer has none).

    Raises :class:`BenchError` when the server cannot be reached or answers 401/403/404."""
    async with _client(target, transport, 2) as client:
        try:
            r = await client.get(target.base_url + "/v1/models", timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise BenchError(f"cannot reach {target.base_url}: {type(exc).__name__} {exc}".strip()) from None
    if r.status_code in (401, 403, 404):
        reason, msg = _error_reason(r.status_code, r.content)
        raise BenchError(f"{target.base_url}/v1/models answered {reason}: {' '.join(msg.split())[:200]}")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return [str(m["id"]) for m in r.json().get("data", []) if isinstance(m, dict) and "id" in m]
    return []


async def _send(client: httpx.AsyncClient, plan: BenchPlan, req: PlannedRequest, target: Target,
                due: float) -> RequestRecord:
    body = request_body(plan, req, target)
    headers = request_headers(plan, req, target)
    start = time.perf_counter()
    parser = StreamParser(start, target.chat)
    try:
        async with asyncio.timeout(target.timeout_s):
            async with client.stream("POST", target.url, json=body, headers=headers) as resp:
                if resp.status_code != 200:
                    reason, msg = _error_reason(resp.status_code, await resp.aread())
                    parser.fail(reason, msg)
                else:
                    async for line in resp.aiter_lines():
                        if parser.feed(line, time.perf_counter()):
                            break
    except TimeoutError:
        parser.fail("timeout", f"no end after {target.timeout_s:g} s")
    except httpx.HTTPError as exc:
        parser.fail(type(exc).__name__, str(exc))
    return parser.record(req, start - due, due - req.send_s)


async def run_plan(plan: BenchPlan, target: Target, *, on_record: Callable[[RequestRecord], None] | None = None,
                   transport: httpx.AsyncBaseTransport | None = None) -> RunResult:
    """Send every request of ``plan`` at its ``send_s`` (open loop) and wait for all of them.

    ``on_record`` is called as each request ends. ``transport`` replaces the network (tests).
    """
    records: list[RequestRecord | None] = [None] * len(plan.requests)
    sem = asyncio.Semaphore(target.max_concurrency) if target.max_concurrency else None
    started_at = time.time()
    async with _client(target, transport, target.max_concurrency) as client:
        t0 = time.perf_counter()

        async def one(pos: int, req: PlannedRequest, due: float) -> None:
            async with sem if sem is not None else contextlib.nullcontext():
                rec = await _send(client, plan, req, target, due)
            records[pos] = rec
            if on_record is not None:
                on_record(rec)

        tasks: list[asyncio.Task[None]] = []
        try:
            for pos, req in enumerate(plan.requests):
                due = t0 + req.send_s
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(pos, req, due)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        duration = time.perf_counter() - t0
    done = [r for r in records if r is not None]
    assert len(done) == len(records)
    return RunResult(tuple(done), duration, started_at)
