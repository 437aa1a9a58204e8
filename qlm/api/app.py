"""The OpenAI-compatible HTTP surface of the gateway (FastAPI).

Routes::

    POST /v1/chat/completions, /v1/completions   JSON, or SSE framed as OpenAI/vLLM
    GET  /v1/models                              every model some engine can serve
    GET  /v1/requests/{id}                       state, queue position, estimated wait
    GET  /metrics  /health  /ready               Prometheus text; liveness; readiness
    GET  /admin/state   PUT /admin/weights       admin key
    /v1/files, /v1/batches                       OpenAI Files and Batches (qlm.api.batch.router)

Responses to inference requests carry ``x-qlm-request-id``, ``x-qlm-slo-class`` and, when the
policy estimated them at admission, ``x-qlm-estimated-wait-s`` and ``x-qlm-slo-probability``.
Errors are OpenAI's ``{"error": {...}}`` (:mod:`qlm.api.errors`). A streamed response
starts at admission; a failure after that is an SSE error event followed by ``[DONE]``. A
client that goes away cancels its request (dequeued, or aborted on its engine).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from qlm.api.batch import BatchAPIError, BatchResponse, BatchWorkItem
from qlm.api.batch.router import batch_router
from qlm.api.config import GatewayConfig
from qlm.api.errors import APIError, error_body, sse_error
from qlm.api.gateway import NO_ENGINE, Admitted, Gateway
from qlm.api.schemas import GATEWAY_FIELDS, ChatBody, CompletionBody, prompt_tokens
from qlm.runtime.view import InstanceState
from qlm.runtime.vllm.stream import StreamEnd

__all__ = ["create_app"]

log = logging.getLogger("qlm.api")

_BATCH_RETRIES = 6  # a batch request refused with 429/503 is tried again this many times


# ---- request helpers ------------------------------------------------------------------------
def _check_key(request: Request, keys: tuple[str, ...], what: str) -> None:
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, f"missing {what} key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
    if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        raise APIError(401, f"invalid {what} key", code="invalid_api_key")


async def _read_json(request: Request, limit: int) -> Any:
    """The JSON body; 413 beyond ``limit`` bytes, 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    parts: list[bytes] = []
    total = 0
    async for part in request.stream():
        total += len(part)
        if total > limit:
            raise APIError(413, f"request body exceeds the limit of {limit} bytes")
        parts.append(part)
    try:
        return json.loads(b"".join(parts))
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"malformed JSON body: {exc}", code="invalid_json") from None


def _validate(model: type[BaseModel], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e.get("loc", ()))
        raise APIError(400, f"{loc}: {e.get('msg', 'invalid value')}" if loc else str(e.get("msg")),
                       param=loc or None) from None


def _checked_body(gw: Any, chat: bool, raw: Any) -> tuple[ChatBody | CompletionBody, int]:
    """Validate an inference body (HTTP or batch line): its shape, its prompt, and that the
    model exists and ``max_tokens`` fits its context. Returns the body and its prompt tokens."""
    body: ChatBody | CompletionBody = _validate(ChatBody if chat else CompletionBody, raw)
    try:
        prompt = prompt_tokens(body)
    except ValueError as exc:
        raise APIError(400, str(exc), param="prompt") from None
    param = "max_completion_tokens" if isinstance(body, ChatBody) and body.max_completion_tokens is not None \
        else "max_tokens"
    gw.check_model(body.model, prompt, body.limit, param)
    return body, prompt


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client has gone away (the body is already read)."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


def _end_error(end: StreamEnd) -> APIError:
    reason = end.reason or end.state
    if end.state == "rejected":
        if "no instance" in reason:
            return APIError(503, f"no engine can serve this request: {reason}", type="service_unavailable",
                            code="no_engine")
        return APIError(429, f"request rejected under overload: {reason}", code="rejected",
                        headers={"Retry-After": "1"})
    if reason.startswith(NO_ENGINE):
        return APIError(503, f"no engine can serve this request now: {reason}", type="service_unavailable",
                        code="no_engine")
    return APIError(503, f"the request failed on its engine: {reason}", type="service_unavailable",
                    code="engine_error")


def _headers(adm: Admitted) -> dict[str, str]:
    h = {"x-qlm-request-id": adm.public_id, "x-qlm-slo-class": adm.slo_class}
    if adm.requested_class != adm.slo_class:
        h["x-qlm-requested-class"] = adm.requested_class
    if adm.est_wait_s is not None:
        h["x-qlm-estimated-wait-s"] = f"{adm.est_wait_s:.3f}"
    if adm.p_meet is not None:
        h["x-qlm-slo-probability"] = f"{adm.p_meet:.4f}"
    return h


def _usage(end: StreamEnd) -> dict[str, int]:
    return {"prompt_tokens": end.prompt_tokens, "completion_tokens": end.completion_tokens,
            "total_tokens": end.prompt_tokens + end.completion_tokens}


class _SSEResponse(Response):
    """The SSE response of one admitted request, written straight from its token stream:
    every chunk waiting is framed and sent in one write, the headers go out at once (a
    queued request's client sees them before its first token), and a client that goes
    away interrupts the stream at once, even while no token flows (queued).

    ``done(outcome)`` is called once at the end: ``finished``, ``failed`` or ``cancelled``
    (the client went away or the response was torn down)."""

    media_type = "text/event-stream"

    def __init__(self, adm: Admitted, framer: _Framer, headers: dict[str, str],
                 done: Callable[[str], None]) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.adm = adm
        self.framer = framer
        self.done = done
        self._send: Send | None = None  # set while the response is relayed
        self._started = False  # a content chunk was written (chat: the role chunk went with it)
        self._pending: asyncio.Future[None] | None = None  # a direct write that had to wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self.adm.stream

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            stream.interrupt()

        watcher = asyncio.ensure_future(watch())
        outcome = "cancelled"
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            outcome = await self._relay(send)
        except OSError:
            pass
        finally:
            watcher.cancel()
            self.done(outcome)

    async def _relay(self, send: Send) -> str:
        """Write the chunks as they come, then the end; the outcome. While nothing is queued,
        chunks go out from the producer's own call (:meth:`_direct`); this loop writes what
        was queued meanwhile, and the end."""
        stream, framer = self.adm.stream, self.framer
        self._send = send
        stream.sink = self._direct
        try:
            while True:
                await stream.wait()
                if self._pending is not None:  # queued chunks go out after it
                    await self._pending
                if stream.interrupted:
                    return "cancelled"
                parts = [framer.text(c.text) for c in stream.ready()]
                if parts and not self._started and framer.chat:
                    parts.insert(0, framer.role())
                self._started = self._started or bool(parts)
                end = stream.end  # set: every chunk was taken above
                if end is None:
                    stream.sink = None  # no direct write while this one is in flight
                    await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
                    stream.sink = self._direct
                    continue
                stream.sink = None
                if not end.ok:
                    err = _end_error(end)
                    parts.append(sse_error(err.message, err.status, type=err.type).encode())
                    outcome = "failed"
                else:
                    if not self._started and framer.chat:
                        parts.append(framer.role())
                    parts.append(framer.text("", end.reason or "stop"))
                    if framer.include_usage:
                        parts.append(framer.usage(end))
                    parts.append(b"data: [DONE]\n\n")
                    outcome = "finished"
                await send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})
                return outcome
        finally:
            stream.sink = None

    def _direct(self, text: str, tokens: int) -> bool:
        """Write one chunk now, from :meth:`RequestStream.push` (no task switch per token):
        the ASGI send is stepped by hand and completes at once unless the client's socket is
        full; then a task finishes it, and chunks queue behind it until it has."""
        if self._pending is not None:
            return False
        body = self.framer.text(text)
        if not self._started and self.framer.chat:
            body = self.framer.role() + body
        self._started = True
        assert self._send is not None  # the sink is set only while _relay runs
        coro = cast(Coroutine[Any, Any, None],
                    self._send({"type": "http.response.body", "body": body, "more_body": True}))
        try:
            waiting = coro.send(None)
        except StopIteration:
            return True
        except Exception:  # noqa: BLE001 - the response is broken: end it as a client gone
            self.adm.stream.interrupt()
            return True
        self._pending = asyncio.ensure_future(self._finish(coro, waiting))
        return True

    async def _finish(self, coro: Any, waiting: Any) -> None:
        """Drive a send that :meth:`_direct` started until it completes."""
        try:
            while True:
                if waiting is None:  # a bare yield: give the loop one turn
                    await asyncio.sleep(0)
                else:  # a future: wait for it as a task would (which clears its blocking flag first)
                    waiting._asyncio_future_blocking = False
                    await asyncio.wait([waiting])
                try:
                    waiting = coro.send(None)
                except StopIteration:
                    return
        except Exception:  # noqa: BLE001 - as in _direct
            self.adm.stream.interrupt()
        finally:
            coro.close()  # a no-op once it has returned
            self._pending = None


class _Framer:
    """OpenAI's response objects for one request (chat or completions)."""

    def __init__(self, adm: Admitted, model: str, chat: bool, include_usage: bool) -> None:
        self.id = adm.public_id
        self.model = model
        self.chat = chat
        self.include_usage = include_usage
        self.created = int(time.time())
        # a text chunk is these bytes around the JSON string of its text (orjson's layout of _chunk)
        head = self._chunk({"index": 0, "delta" if chat else "text": None}).split(b'"index":0,', 1)[0]
        self._text_head = head + (b'"index":0,"delta":{"content":' if chat else b'"index":0,"text":')
        self._text_tail = (b"}" if chat else b"") + b',"logprobs":null,"finish_reason":null}]' + (
            b',"usage":null}\n\n' if include_usage else b"}\n\n")

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        obj: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                               "created": self.created, "model": self.model, "choices": [choice]}
        if self.include_usage:
            obj["usage"] = None
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def role(self) -> bytes:
        return self._chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None})

    def text(self, text: str, finish: str | None = None) -> bytes:
        if text and finish is None:
            return self._text_head + orjson.dumps(text) + self._text_tail
        if self.chat:
            delta = {"content": text} if text else {}
            return self._chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish})
        return self._chunk({"index": 0, "text": text, "logprobs": None, "finish_reason": finish})

    def usage(self, end: StreamEnd) -> bytes:
        obj: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.model, "choices": [], "usage": _usage(end)}
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def whole(self, text: str, end: StreamEnd) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": end.reason or "stop"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": end.reason or "stop"}
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice], "usage": _usage(end)}


# ---- app ------------------------------------------------------------------------------------
class _GatewayApp(FastAPI):
    """FastAPI, with the inference routes (``POST`` to a path in :attr:`inference`) served
    before its middleware stack and router: on the per-request path those cost about a fifth
    of the gateway's CPU (routing, dependency solving, a task group and three send wrappers),
    and a streamed response's chunks go to the server's own ``send``. The routes stay declared
    on the app as well (OpenAPI schema, mounts under a root path), with the same handler."""

    inference: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]]  # set by create_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.inference.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(config: GatewayConfig | None = None, *, gateway: Gateway | None = None) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops ``gateway`` (default: one for
    ``config``, default: all defaults, i.e. the embedded emulated cluster)."""
    gw = gateway or Gateway(config or GatewayConfig())
    cfg = gw.config

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        gw.start_batches(submit_batch)
        try:
            yield
        finally:
            await gw.stop()

    app = _GatewayApp(title="qlm gateway", version="0.1.0", lifespan=lifespan,
                      description="OpenAI-compatible, SLO-aware gateway over a fleet of vLLM engines.")
    app.state.gateway = gw

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(BatchAPIError)
    async def _batch_error(_: Request, exc: BatchAPIError) -> JSONResponse:
        return JSONResponse({"error": exc.to_openai_error()}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        e = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in e.get("loc", ()))
        return JSONResponse(error_body(400, f"{loc}: {e.get('msg', 'invalid request')}", param=loc or None),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # a bug, still in OpenAI's shape
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), status_code=500)

    # ---- inference --------------------------------------------------------------------
    async def infer(request: Request, chat: bool) -> Response:
        _check_key(request, cfg.auth.api_keys, "API")
        raw = await _read_json(request, cfg.limits.max_body_bytes)
        body, prompt = _checked_body(gw, chat, raw)
        if body.stream_options is not None and not body.stream:
            raise APIError(400, "stream_options: only allowed with stream=true", param="stream_options")
        cls = gw.resolve_class(body.slo_class, request.headers.get("x-qlm-slo-class"), body.service_tier)
        fwd = {k: v for k, v in raw.items() if k not in GATEWAY_FIELDS}
        adm = gw.admit(body.model, fwd, "chat" if chat else "completions", prompt, body.limit, cls,
                       streaming=body.stream)
        headers = _headers(adm)
        end = adm.stream.end
        if end is not None and not end.ok:  # rejected or failed at submission
            gw.outcome(adm, "unavailable" if end.state == "rejected" else "failed")
            err = _end_error(end)
            err.headers.update(headers)
            raise err
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        framer = _Framer(adm, body.model, chat, include_usage)
        if body.stream:
            return _SSEResponse(adm, framer, headers, lambda outcome: _streamed(adm, outcome))
        return await _buffered(adm, framer, request, headers)

    async def _buffered(adm: Admitted, framer: _Framer, request: Request, headers: dict[str, str]) -> Response:
        collect = asyncio.ensure_future(adm.stream.collect())
        gone: asyncio.Future[Any] = asyncio.ensure_future(_wait_disconnect(request))
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not collect.done():
            collect.cancel()
            gw.cancel(adm)
            gw.outcome(adm, "cancelled")
            return Response(status_code=499)
        text, end = collect.result()
        if not end.ok:
            gw.outcome(adm, "failed")
            err = _end_error(end)
            err.headers.update(headers)
            raise err
        gw.outcome(adm, "finished")
        return JSONResponse(framer.whole(text, end), headers=headers)

    def _streamed(adm: Admitted, outcome: str) -> None:
        if outcome == "cancelled":
            gw.cancel(adm)
        gw.outcome(adm, outcome)

    async def serve_inference(scope: Scope, receive: Receive, send: Send, chat: bool) -> None:
        """An inference route served ahead of FastAPI's middleware and router (``_GatewayApp``):
        the same ``infer``, errors answered as the exception handlers above answer them."""
        try:
            response = await infer(Request(scope, receive), chat)
        except APIError as exc:
            response = exc.response()
        except ClientDisconnect:  # gone before its body was read: nothing was submitted
            return
        except Exception as exc:  # noqa: BLE001 - a bug, still in OpenAI's shape (as _internal)
            log.exception("inference request failed")
            response = JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), status_code=500)
        await response(scope, receive, send)

    app.inference = {"/v1/chat/completions": functools.partial(serve_inference, chat=True),
                     "/v1/completions": functools.partial(serve_inference, chat=False)}

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(request: Request) -> Response:
        """OpenAI Chat Completions; ``slo_class`` in the body or ``X-QLM-SLO-Class`` picks the class."""
        return await infer(request, chat=True)

    @app.post("/v1/completions", tags=["openai"])
    async def completions(request: Request) -> Response:
        """OpenAI (legacy) Completions; one prompt per request."""
        return await infer(request, chat=False)

    @app.get("/v1/models", tags=["openai"])
    async def models(request: Request) -> dict[str, Any]:
        """Every model some engine can serve, resident or swappable."""
        _check_key(request, cfg.auth.api_keys, "API")
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "qlm", "max_model_len": ctx}
            for m, ctx in gw.models().items()]}

    @app.get("/v1/requests/{request_id}", tags=["qlm"])
    async def request_state(request_id: str, request: Request) -> dict[str, Any]:
        """A request's state; while queued, its position and current estimated wait."""
        _check_key(request, cfg.auth.api_keys, "API")
        return gw.request_info(request_id)

    # ---- operations -------------------------------------------------------------------
    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        text = await run_in_threadpool(generate_latest, gw.metrics.registry)  # batch gauges read the store
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready() -> JSONResponse:
        rt = gw.rt
        up = 0 if rt is None else sum(i.state is not InstanceState.DOWN for i in rt.control.instances.values())
        if up == 0:
            return JSONResponse(error_body(503, "no engine is up", type="service_unavailable"), status_code=503)
        return JSONResponse({"status": "ready", "engines_up": up})

    @app.get("/admin/state", tags=["admin"])
    async def admin_state(request: Request) -> dict[str, Any]:
        """Virtual queues, groups, engines and the last plan."""
        _check_key(request, (cfg.auth.admin_key,) if cfg.auth.admin_key else (), "admin")
        return gw.state()

    @app.put("/admin/weights", tags=["admin"])
    async def admin_weights(request: Request) -> dict[str, Any]:
        """Replace the solver's operator weights (applied from the next scheduling epoch)."""
        _check_key(request, (cfg.auth.admin_key,) if cfg.auth.admin_key else (), "admin")
        raw = await _read_json(request, cfg.limits.max_body_bytes)
        if not isinstance(raw, dict):
            raise APIError(400, "the weights must be a JSON object")
        return {"weights": gw.set_weights(raw), "applies": "next epoch"}

    # ---- batch ------------------------------------------------------------------------
    async def submit_batch(item: BatchWorkItem) -> BatchResponse:
        """The batch runner's ``submit``: one line through the global queue, non-streaming, in the
        batch's SLO class. A 429/503 (overload, no engine now) is retried with backoff, so a batch
        request waits out an engine restart; other errors are the line's response."""
        delay = 0.5
        for attempt in range(_BATCH_RETRIES + 1):
            response = await _batch_once(item)
            if response.status_code not in (429, 503) or attempt == _BATCH_RETRIES:
                return response
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    async def _batch_once(item: BatchWorkItem) -> BatchResponse:
        chat = item.url == "/v1/chat/completions"
        try:
            body, prompt = _checked_body(gw, chat, item.body)
            fwd = {k: v for k, v in item.body.items() if k not in GATEWAY_FIELDS}
            adm = gw.admit(body.model, fwd, "chat" if chat else "completions", prompt, body.limit, item.slo_class,
                           streaming=False, apply_rule=False,
                           meta={"batch_id": item.batch_id, "custom_id": item.custom_id,
                                 "batch_deadline": item.deadline})
        except APIError as refused:
            return BatchResponse(refused.status, refused.body())
        try:
            text, end = await adm.stream.collect()
        except asyncio.CancelledError:  # the runner gave up on it (shutdown, expiry, cancel)
            gw.cancel(adm, "batch request withdrawn")
            gw.outcome(adm, "cancelled")
            raise
        if not end.ok:
            gw.outcome(adm, "failed")
            err = _end_error(end)
            return BatchResponse(err.status, err.body(), adm.public_id)
        gw.outcome(adm, "finished")
        return BatchResponse(200, _Framer(adm, body.model, chat, False).whole(text, end), adm.public_id)

    app.include_router(batch_router(gw, lambda r: _check_key(r, cfg.auth.api_keys, "API"),
                                    lambda r: _read_json(r, cfg.limits.max_body_bytes)))

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request bodies the inference and admin routes read by hand."""
    if app.openapi_schema:
        return app.openapi_schema
    from qlm.solver.problem import OperatorWeights

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    bodies: dict[tuple[str, str], type[BaseModel]] = {
        ("/v1/chat/completions", "post"): ChatBody, ("/v1/completions", "post"): CompletionBody,
        ("/admin/weights", "put"): OperatorWeights}
    for (path, method), model in bodies.items():
        s = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, d in s.pop("$defs", {}).items():
            comps[name] = d
        comps[model.__name__] = s
        op = schema["paths"][path][method]
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    app.openapi_schema = schema
    return schema

