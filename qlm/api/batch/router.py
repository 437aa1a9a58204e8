"""HTTP routes of OpenAI's Files and Batches APIs over the gateway's :class:`BatchStore`.

Routes (API keys as for inference)::

    POST   /v1/files                  multipart: purpose=batch, file=<JSONL>   -> FileObject
    GET    /v1/files                  after, limit, order, purpose            -> list of FileObject
    GET    /v1/files/{id}             FileObject
    GET    /v1/files/{id}/content     the bytes (application/octet-stream)
    DELETE /v1/files/{id}             FileDeleted
    POST   /v1/batches                input_file_id, endpoint, completion_window, metadata -> Batch
    GET    /v1/batches                after, limit                             -> list of Batch
    GET    /v1/batches/{id}           Batch
    POST   /v1/batches/{id}/cancel    Batch (cancelling, or already ended by a cancel)

An upload is read as it arrives and refused with 413 (code ``file_too_large``) as soon as the
body exceeds ``max_file_bytes`` plus :data:`MULTIPART_OVERHEAD` bytes of multipart framing, or
when the file part itself exceeds ``max_file_bytes``: an oversize upload is never buffered whole.
With no data dir or database configured every route answers 404 ``batch_disabled``.
Store errors (:class:`BatchAPIError`) become OpenAI errors in the app's exception handler.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from qlm.api.batch.store import BatchStore
from qlm.api.errors import APIError
from qlm.api.gateway import Gateway

__all__ = ["MULTIPART_OVERHEAD", "batch_router", "parse_multipart"]

#: Bytes of multipart framing (boundaries, part headers, the ``purpose`` field) allowed beyond
#: ``max_file_bytes`` before an upload is cut off.
MULTIPART_OVERHEAD = 64 * 1024

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_PARAM = re.compile(r'(\w+)\*?="([^"]*)"|(\w+)\*?=([^;\s]+)')


class _CreateBatch(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None = None


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the file exceeds the limit of {limit} bytes", param="file", code="file_too_large")


async def _read_upload(request: Request, max_file_bytes: int) -> bytes:
    cap = max_file_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(max_file_bytes)
    parts: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:  # stop reading: the rest of an oversize upload is never buffered
            raise _too_large(max_file_bytes)
        parts.append(chunk)
    return b"".join(parts)


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """``multipart/form-data`` -> (text fields, file fields as ``(filename, bytes)``); 400 if malformed."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise APIError(400, "uploads must be multipart/form-data with fields 'purpose' and 'file'",
                       code="invalid_content_type")
    m = _BOUNDARY.search(content_type)
    if m is None:
        raise APIError(400, "multipart/form-data without a boundary", code="invalid_multipart")
    delim = b"--" + m.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    chunks = body.split(delim)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise APIError(400, "malformed multipart body", code="invalid_multipart")
    for chunk in chunks[1:-1]:
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise APIError(400, "malformed multipart part", code="invalid_multipart")
        disposition = ""
        for raw in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = raw.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value
        params = {(a or c).lower(): (b if a else d) for a, b, c, d in _PARAM.findall(disposition)}
        field = params.get("name")
        if not field:
            continue
        if "filename" in params:
            files[field] = (params["filename"], data)
        else:
            fields[field] = data.decode("utf-8", "replace")
    return fields, files


def batch_router(gw: Gateway, check_key: Callable[[Request], None],
                 read_json: Callable[[Request], Awaitable[Any]]) -> APIRouter:
    """The Files and Batches routes; ``check_key`` authorises, ``read_json`` reads a JSON body."""
    router = APIRouter(tags=["openai-batch"])

    def store(request: Request) -> BatchStore:
        check_key(request)
        if gw.batch_store is None:
            raise APIError(404, "the Batch API is off: start the gateway with --data-dir (or batch.data_dir / "
                           "batch.database_url in its config)", code="batch_disabled")
        return gw.batch_store

    @router.post("/v1/files")
    async def create_file(request: Request) -> dict[str, Any]:
        """Upload a JSONL batch input file (``purpose=batch``); validated line by line."""
        s = store(request)
        limit = s.config.max_file_bytes
        fields, files = parse_multipart(request.headers.get("content-type", ""),
                                        await _read_upload(request, limit))
        if "file" not in files:
            raise APIError(400, "missing required parameter 'file'", param="file", code="missing_required_parameter")
        if "purpose" not in fields:
            raise APIError(400, "missing required parameter 'purpose'", param="purpose",
                           code="missing_required_parameter")
        filename, data = files["file"]
        if len(data) > limit:
            raise _too_large(limit)
        models = set(gw.models())
        record = await run_in_threadpool(s.create_file, data, filename=filename or "upload.jsonl",
                                         purpose=fields["purpose"], known_models=models)
        return record.to_dict()

    @router.get("/v1/files")
    async def list_files(request: Request, after: str | None = None, limit: int = 10_000, order: str = "desc",
                         purpose: str | None = None) -> dict[str, Any]:
        s = store(request)
        page = await run_in_threadpool(s.list_files, after=after, limit=limit, order=order,  # type: ignore[arg-type]
                                       purpose=purpose)
        return page.to_dict()

    @router.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> dict[str, Any]:
        s = store(request)
        return (await run_in_threadpool(s.get_file, file_id)).to_dict()

    @router.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, request: Request) -> Response:
        s = store(request)
        return Response(await run_in_threadpool(s.file_content, file_id), media_type="application/octet-stream")

    @router.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
        s = store(request)
        return await run_in_threadpool(s.delete_file, file_id)

    @router.post("/v1/batches")
    async def create_batch(request: Request) -> dict[str, Any]:
        """Create a batch over an uploaded file; it runs in the SLO class of its completion window."""
        s = store(request)
        raw = await read_json(request)
        if not isinstance(raw, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            body = _CreateBatch.model_validate(raw)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = ".".join(str(p) for p in e.get("loc", ()))
            code = "missing_required_parameter" if e.get("type") == "missing" else "invalid_value"
            raise APIError(400, f"{loc}: {e.get('msg', 'invalid value')}", param=loc or None, code=code) from None
        models = set(gw.models())
        record = await run_in_threadpool(s.create_batch, input_file_id=body.input_file_id, endpoint=body.endpoint,
                                         completion_window=body.completion_window, metadata=body.metadata,
                                         known_models=models)
        if gw.batch_runner is not None:
            gw.batch_runner.wake()
        return record.to_dict()

    @router.get("/v1/batches")
    async def list_batches(request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        s = store(request)
        return (await run_in_threadpool(s.list_batches, after=after, limit=limit)).to_dict()

    @router.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str, request: Request) -> dict[str, Any]:
        s = store(request)
        return (await run_in_threadpool(s.get_batch, batch_id)).to_dict()

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
        s = store(request)
        record = await run_in_threadpool(s.cancel_batch, batch_id)
        if gw.batch_runner is not None:
            gw.batch_runner.wake()
        return record.to_dict()

    return router
