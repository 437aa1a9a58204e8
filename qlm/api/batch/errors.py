"""Errors raised by the Batch API layer.

    QLMError                       (qlm.errors)
    └── BatchAPIError              base: ``code``, ``param``, ``http_status``, one-line ``str()``
        ├── BatchInputError        400  bad upload, JSONL line, parameter or limit; ``line`` when a line is at fault
        ├── BatchNotFoundError     404  no file or batch with that id
        └── BatchStateError        409  the operation is invalid in the object's current status

The HTTP layer turns any of them into OpenAI's error envelope::

    JSONResponse({"error": err.to_openai_error()}, status_code=err.http_status)
"""

from __future__ import annotations

from typing import Any

from qlm.errors import QLMError


class BatchAPIError(QLMError):
    """Base of the Batch API errors. ``str(err)`` is one line."""

    http_status: int = 500
    error_type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        self.message = message
        self.param = param
        self.code = code
        super().__init__(message)

    def to_openai_error(self) -> dict[str, Any]:
        """The ``error`` object of an OpenAI error response: message, type, param, code."""
        return {"message": str(self), "type": self.error_type, "param": self.param, "code": self.code}


class BatchInputError(BatchAPIError, ValueError):
    """Invalid input: a JSONL line, a request parameter, or a configured limit.

    ``line`` is the 1-based line number of the input file at fault, or ``None`` when the error is
    not about one line. ``str(err)`` is ``"line 7: duplicate custom_id 'req-3'"`` (or just the
    message when ``line`` is ``None``).
    """

    http_status = 400
    error_type = "invalid_request_error"

    def __init__(
        self, message: str, line: int | None = None, param: str | None = None, *, code: str = "invalid_request"
    ) -> None:
        self.line = line
        super().__init__(message, param=param, code=code)

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"

    def to_openai_error(self) -> dict[str, Any]:
        err = super().to_openai_error()
        err["line"] = self.line
        return err

    def to_batch_error(self) -> dict[str, Any]:
        """This error as an entry of a Batch object's ``errors.data`` (OpenAI's ``BatchError``)."""
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


class BatchNotFoundError(BatchAPIError, LookupError):
    """No file or batch with the given id (``param`` names which id)."""

    http_status = 404
    error_type = "invalid_request_error"

    def __init__(self, kind: str, object_id: str) -> None:
        self.kind = kind
        self.object_id = object_id
        super().__init__(f"no {kind} with id {object_id!r}", param=f"{kind}_id", code="not_found")


class BatchStateError(BatchAPIError):
    """The operation is not allowed in the object's current status (e.g. cancelling a completed batch)."""

    http_status = 409
    error_type = "invalid_request_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_state")
