"""The emulator's HTTP surface: the subset of vLLM 0.33's OpenAI-compatible server that the
runtime relies on (docs/runtime.md lists it; /work/shared/reference/vllm-contract.md §9).

Deviations from vLLM, on purpose: prompts are not tokenized (a string counts one token per
4 characters; a list of token ids counts exactly); generated text is placeholder words, one
per token; ``n`` must be 1; ``/load`` always tracks in-flight requests; the response header
``X-Request-Id`` is always sent. Dev-mode routes (``/sleep`` ...) exist only with
``sleep_mode``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from qlm.runtime.emulator.core import VLLM_VERSION, EmulatorConfig, EmulatorCore, Job
from qlm.runtime.emulator.metrics import render_metrics

_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed",
          "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna")


def placeholder_text(start: int, end: int) -> str:
    """Text of tokens ``start..end-1`` (one word per token, deterministic)."""
    return "".join(" " + _WORDS[i % len(_WORDS)] for i in range(start, end))


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class BadRequest(Exception):
    def __init__(self, message: str, code: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind


def error_body(message: str, code: int, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise BadRequest("messages: a non-empty list is required")
        n = 2
        for m in msgs:
            if not isinstance(m, dict):
                raise BadRequest("messages: each message must be an object")
            c = m.get("content")
            if isinstance(c, str):
                n += 4 + text_tokens(c)
            elif isinstance(c, list):
                n += 4 + sum(text_tokens(str(p.get("text", ""))) for p in c if isinstance(p, dict))
            else:
                n += 4
        return n
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str | list):
        p = p[0]
    if isinstance(p, str):
        return text_tokens(p) if p else 1
    if isinstance(p, list) and p and all(isinstance(x, int) for x in p):
        return len(p)
    raise BadRequest("prompt: a string or a list of token ids is required (one prompt only)")


def _parse(core: EmulatorCore, request: Request, body: dict[str, Any], chat: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model", core.cfg.served_model)
    if model != core.cfg.served_model:
        raise BadRequest(f"The model `{model}` does not exist.", 404, "NotFoundError")
    stream = bool(body.get("stream", False))
    so = body.get("stream_options")
    if so is not None and not stream:
        raise BadRequest("Stream options can only be defined when `stream=True`.")
    if int(body.get("n", 1) or 1) != 1:
        raise BadRequest("n: the emulator supports n=1 only")
    prompt = _prompt_tokens(body, chat)
    mt = body.get("max_completion_tokens") if chat else None
    if mt is None:
        mt = body.get("max_tokens")
    if mt is not None and (not isinstance(mt, int) or mt < 1):
        raise BadRequest(f"max_tokens must be at least 1, got {mt}.")
    mml = core.max_model_len
    if prompt >= mml:
        raise BadRequest(
            f"This model's maximum context length is {mml} tokens. However, your request has "
            f"{prompt} input tokens. Please reduce the length of the input messages."
        )
    if mt is not None and prompt + mt > mml:
        raise BadRequest(
            f"'max_tokens' or 'max_completion_tokens' is too large: {mt}. This model's maximum "
            f"context length is {mml} tokens and your request has {prompt} input tokens "
            f"({mt} > {mml} - {prompt})."
        )
    hdr = request.headers.get("x-vllm-priority")
    try:
        priority = int(hdr) if hdr is not None else int(body.get("priority", 0) or 0)
    except ValueError:
        raise BadRequest(f"priority: not an integer ({hdr!r})") from None
    rid = request.headers.get("x-request-id") or str(body.get("request_id") or uuid.uuid4().hex)
    so = so or {}
    return {
        "stream": stream, "prompt": prompt, "max_tokens": mt, "priority": priority, "rid": rid,
        "ignore_eos": bool(body.get("ignore_eos", False)),
        "include_usage": bool(so.get("include_usage", False)),
        "continuous_usage": bool(so.get("continuous_usage_stats", False)),
    }


async def _watch_disconnect(request: Request, core: EmulatorCore, job: Job) -> None:
    """Abort ``job`` when the client goes away (vLLM's ``with_cancellation``)."""
    with contextlib.suppress(Exception):
        while True:
            msg = await request.receive()
            if msg["type"] == "http.disconnect":
                core.abort(job)
                return


def _usage(job: Job, n: int) -> dict[str, int]:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": n,
            "total_tokens": job.prompt_tokens + n}


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


async def _stream(core: EmulatorCore, job: Job, p: dict[str, Any], chat: bool,
                  watcher: asyncio.Task[None]) -> AsyncIterator[str]:
    created = int(time.time())
    model = core.cfg.served_model
    if chat:
        base = {"id": f"chatcmpl-{job.rid}", "object": "chat.completion.chunk", "created": created,
                "model": model}
    else:
        base = {"id": f"cmpl-{job.rid}", "object": "text_completion", "created": created,
                "model": model}

    def chunk(text: str | None, finish: str | None, n: int, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        if finish is not None:
            choice["stop_reason"] = None
        obj = {**base, "choices": [choice]}
        if p["continuous_usage"]:
            obj["usage"] = _usage(job, n)
        return _sse(obj)

    sent = 0
    role_sent = False
    try:
        while True:
            await job.changed.wait()
            job.changed.clear()
            if job.finish_reason == "error":
                yield _sse(error_body(job.error or "engine error", 500, "InternalServerError"))
                break
            n = min(job.visible, job.target)
            if chat and not role_sent and (n > 0 or job.done):
                role_sent = True
                if n > 0:
                    yield chunk(None, None, 0, role=True)
            if n > sent:
                yield chunk(placeholder_text(sent, n), None, n)
                sent = n
            if job.done:
                yield chunk("", job.finish_reason, sent)
                if p["include_usage"]:
                    yield _sse({**base, "choices": [], "usage": _usage(job, sent)})
                break
        yield "data: [DONE]\n\n"
    finally:
        watcher.cancel()
        if not job.done:
            core.abort(job)
        core.server_load -= 1


def create_app(cfg: EmulatorConfig) -> FastAPI:
    """The emulator as an ASGI app; its core starts with the app's lifespan.

    ``app.state.core`` is the :class:`EmulatorCore` (tests may inspect it).
    """
    core = EmulatorCore(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await core.start()
        try:
            yield
        finally:
            await core.stop()

    app = FastAPI(title="qlm vLLM emulator", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.core = core

    def err(e: BadRequest) -> JSONResponse:
        return JSONResponse(error_body(e.message, e.code, e.kind), status_code=e.code)

    async def generate(request: Request, chat: bool) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return err(BadRequest("request body is not valid JSON"))
        try:
            p = _parse(core, request, body, chat)
        except BadRequest as e:
            return err(e)
        job = core.new_job(p["rid"], p["prompt"], p["max_tokens"], p["ignore_eos"], p["priority"])
        core.server_load += 1
        watcher = asyncio.create_task(_watch_disconnect(request, core, job))
        headers = {"X-Request-Id": p["rid"]}
        if p["stream"]:
            return StreamingResponse(_stream(core, job, p, chat, watcher),
                                     media_type="text/event-stream", headers=headers)
        try:
            while not job.done:
                await job.changed.wait()
                job.changed.clear()
        finally:
            watcher.cancel()
            if not job.done:
                core.abort(job)
            core.server_load -= 1
        if job.finish_reason == "error":
            return JSONResponse(error_body(job.error or "engine error", 500, "InternalServerError"),
                                status_code=500, headers=headers)
        n = job.visible
        text = placeholder_text(0, n)
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": job.finish_reason,
                                  "stop_reason": None}
        obj: dict[str, Any]
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
            obj = {"id": f"chatcmpl-{job.rid}", "object": "chat.completion"}
        else:
            choice["text"] = text
            obj = {"id": f"cmpl-{job.rid}", "object": "text_completion"}
        obj.update({"created": int(time.time()), "model": cfg.served_model, "choices": [choice],
                    "usage": _usage(job, n)})
        return JSONResponse(obj, headers=headers)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, chat=True)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": cfg.served_model, "object": "model", "created": int(time.time()),
            "owned_by": "vllm", "root": cfg.profile_model, "parent": None,
            "max_model_len": core.max_model_len,
        }]}

    @app.api_route("/health", methods=["GET"])
    async def health() -> Response:
        return Response(status_code=200)

    @app.api_route("/ping", methods=["GET", "POST"])
    async def ping() -> Response:
        return Response(status_code=200)

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": VLLM_VERSION}

    @app.get("/load")
    async def load() -> dict[str, int]:
        return {"server_load": core.server_load}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(render_metrics(core), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        try:
            body = await request.json()
            n = _prompt_tokens(body, chat="messages" in body)
        except (ValueError, BadRequest) as e:
            return err(e if isinstance(e, BadRequest) else BadRequest("invalid JSON"))
        return JSONResponse({"count": n, "max_model_len": core.max_model_len,
                             "tokens": list(range(n))})

    if cfg.sleep_mode:

        @app.post("/sleep")
        async def sleep(level: int = 1, mode: str = "abort") -> Response:
            if level not in (0, 1, 2):
                return err(BadRequest(f"level: must be 0, 1 or 2, got {level}"))
            if mode not in ("abort", "wait", "keep"):
                return err(BadRequest(f"mode: must be abort, wait or keep, got {mode!r}"))
            await core.sleep(level, mode)  # type: ignore[arg-type]
            return JSONResponse({"status": "sleeping", "level": level})

        @app.post("/wake_up")
        async def wake_up(request: Request) -> Response:
            tags = request.query_params.getlist("tags") or None
            await core.wake_up(tags)
            return JSONResponse({"status": "sleeping" if core.is_sleeping else "awake",
                                 "tags": tags})

        @app.get("/is_sleeping")
        async def is_sleeping() -> dict[str, bool]:
            return {"is_sleeping": core.is_sleeping}

        @app.post("/collective_rpc")
        async def collective_rpc(request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                body = {}
            method = body.get("method") if isinstance(body, dict) else None
            if method == "reload_weights":
                await core.reload_weights()
                return JSONResponse({"results": [None]})
            return err(BadRequest(f"method: unsupported collective_rpc {method!r}"))

        @app.post("/reset_prefix_cache")
        async def reset_prefix_cache() -> Response:
            return Response(status_code=200)

    return app
