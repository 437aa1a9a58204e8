"""Errors of the HTTP API, in OpenAI's shape.

    APIError(status, message, type, param, code)      -> {"error": {message, type, param, code}}
    ├── 400 invalid_request_error   malformed JSON, wrong types, unknown class, context overflow
    ├── 401 authentication_error    missing or invalid key
    ├── 404 not_found_error         unknown model, unknown request id
    ├── 413 invalid_request_error   body larger than limits.max_body_bytes
    ├── 429 rate_limit_error        admission rejected the request (``Retry-After``)
    └── 503 service_unavailable     no engine can serve the model now

Every handler returns these; no bad input reaches a 5xx other than 503 (no engine).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["APIError", "error_body", "sse_error"]

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 500: "internal_error", 502: "engine_error",
          503: "service_unavailable"}


def error_body(status: int, message: str, *, type: str | None = None, param: str | None = None,
               code: str | int | None = None) -> dict[str, Any]:
    """OpenAI's error object. ``code`` defaults to the HTTP status."""
    return {"error": {"message": message, "type": type or _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code if code is not None else status}}


class APIError(Exception):
    """An error answer: ``status`` with OpenAI's error body and extra ``headers``."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, type=self.type, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def sse_error(message: str, status: int = 503, *, type: str | None = None) -> str:
    """An SSE error event (as vLLM sends mid-stream) followed by ``[DONE]``."""
    return f"data: {json.dumps(error_body(status, message, type=type))}\n\ndata: [DONE]\n\n"
