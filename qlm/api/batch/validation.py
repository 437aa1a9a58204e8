"""Validation of batch input files (JSONL) and of batch parameters.

Each input line is one request::

    {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "llama-3-8b", "messages": [...]}}

Rules, each reported as a :class:`BatchInputError` naming the 1-based line number:

* the file is UTF-8 and every non-blank line is a JSON object (blank lines are skipped but counted);
* ``custom_id`` is a non-empty string of at most 512 characters, unique in the file;
* ``method`` is ``"POST"``;
* ``url`` is a supported endpoint and, when the batch's endpoint is known, equal to it;
* ``body`` is an object with a non-empty string ``model`` that is known (when a set of known
  models is given) and without ``"stream": true``;
* the file holds at least one and at most ``max_requests`` requests.

Other top-level keys are ignored. Validation stops at the first error, in file order.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from qlm.api.batch.config import SUPPORTED_ENDPOINTS
from qlm.api.batch.errors import BatchInputError

_WINDOW_RE = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_MAX_CUSTOM_ID_CHARS = 512
_MAX_METADATA_KEYS = 16
_MAX_METADATA_KEY_CHARS = 64
_MAX_METADATA_VALUE_CHARS = 512


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One validated request of an input file. ``line`` is its 1-based line number."""

    line: int
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body["model"])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_batch_jsonl(
    data: bytes,
    *,
    endpoint: str | None,
    known_models: Collection[str] | None,
    max_requests: int,
    supported_endpoints: Collection[str] = SUPPORTED_ENDPOINTS,
) -> list[BatchLine]:
    """Validate a batch input file and return its requests in file order.

    Parameters
    ----------
    data:
        The raw file content.
    endpoint:
        The batch's endpoint; every ``url`` must equal it. ``None`` at upload time, when only
        membership in ``supported_endpoints`` is checked.
    known_models:
        Model names the gateway serves; ``None`` skips the check.
    max_requests:
        The most requests the file may hold.

    Raises
    ------
    BatchInputError
        On the first invalid line (``err.line`` set), or for an empty or oversized file.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise BatchInputError("not valid UTF-8", line_no, "file", code="invalid_encoding") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[BatchLine] = []
    first_seen: dict[str, int] = {}
    for line_no, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        if len(lines) >= max_requests:
            raise BatchInputError(
                f"more than {max_requests} requests in the file", line_no, "file", code="too_many_requests"
            )
        item = _parse_line(raw, line_no, endpoint, known_models, supported_endpoints)
        if item.custom_id in first_seen:
            raise BatchInputError(
                f"duplicate custom_id {item.custom_id!r} (first on line {first_seen[item.custom_id]})",
                line_no,
                "custom_id",
                code="duplicate_custom_id",
            )
        first_seen[item.custom_id] = line_no
        lines.append(item)
    if not lines:
        raise BatchInputError("the file holds no requests", None, "file", code="empty_file")
    return lines


def _parse_line(
    raw: str,
    line_no: int,
    endpoint: str | None,
    known_models: Collection[str] | None,
    supported_endpoints: Collection[str],
) -> BatchLine:
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise BatchInputError(f"invalid JSON: {reason}", line_no, None, code="invalid_json") from None
    if not isinstance(obj, dict):
        raise BatchInputError(f"expected a JSON object, got {type(obj).__name__}", line_no, None, code="invalid_json")

    for key in ("custom_id", "method", "url", "body"):
        if key not in obj:
            raise BatchInputError(f"missing required field {key!r}", line_no, key, code="missing_required_parameter")

    custom_id = obj["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        raise BatchInputError(
            f"custom_id must be a non-empty string, got {_short(custom_id)}", line_no, "custom_id", code="invalid_value"
        )
    if len(custom_id) > _MAX_CUSTOM_ID_CHARS:
        raise BatchInputError(
            f"custom_id is longer than {_MAX_CUSTOM_ID_CHARS} characters", line_no, "custom_id", code="invalid_value"
        )
    method = obj["method"]
    if method != "POST":
        raise BatchInputError(f"method must be 'POST', got {_short(method)}", line_no, "method", code="invalid_value")
    url = obj["url"]
    if not isinstance(url, str) or url not in supported_endpoints:
        raise BatchInputError(
            f"url {_short(url)} is not supported; expected one of {', '.join(supported_endpoints)}",
            line_no,
            "url",
            code="invalid_url",
        )
    if endpoint is not None and url != endpoint:
        raise BatchInputError(
            f"url {url!r} does not match the batch endpoint {endpoint!r}", line_no, "url", code="mismatched_url"
        )
    body = obj["body"]
    if not isinstance(body, dict):
        raise BatchInputError(
            f"body must be a JSON object, got {type(body).__name__}", line_no, "body", code="invalid_value"
        )
    if "model" not in body:
        raise BatchInputError("body is missing 'model'", line_no, "body.model", code="missing_required_parameter")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise BatchInputError(
            f"body.model must be a non-empty string, got {_short(model)}", line_no, "body.model", code="invalid_value"
        )
    if known_models is not None and model not in known_models:
        raise BatchInputError(f"unknown model {model!r}", line_no, "body.model", code="model_not_found")
    if body.get("stream") is True:
        raise BatchInputError("body.stream must not be true in a batch", line_no, "body.stream", code="invalid_value")
    return BatchLine(line=line_no, custom_id=custom_id, method=method, url=url, body=body)


def parse_completion_window(window: str) -> float:
    """Parse a completion window such as ``"24h"``, ``"90m"`` or ``"1h30m"`` into seconds.

    OpenAI accepts only ``"24h"``; qlm accepts any positive duration written as integer hours,
    minutes and seconds in that order (``h``, ``m``, ``s``, each at most once).

    Raises
    ------
    BatchInputError
        ``param="completion_window"`` when the text does not parse or the duration is zero.
    """
    text = window.strip() if isinstance(window, str) else ""
    match = _WINDOW_RE.fullmatch(text)
    if not text or match is None:
        raise BatchInputError(
            f"completion_window {_short(window)} is not a duration like '24h', '30m' or '1h30m'",
            None,
            "completion_window",
            code="invalid_value",
        )
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600.0 + minutes * 60.0 + seconds
    if not math.isfinite(total) or total <= 0:
        raise BatchInputError(
            f"completion_window {window!r} must be positive", None, "completion_window", code="invalid_value"
        )
    return total


def validate_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Check OpenAI's metadata limits: at most 16 string pairs, keys <= 64 and values <= 512 chars."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise BatchInputError("metadata must be an object", None, "metadata", code="invalid_value")
    if len(metadata) > _MAX_METADATA_KEYS:
        raise BatchInputError(
            f"metadata has {len(metadata)} keys, at most {_MAX_METADATA_KEYS} allowed",
            None,
            "metadata",
            code="invalid_value",
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BatchInputError(
                f"metadata keys and values must be strings (key {_short(key)})", None, "metadata", code="invalid_value"
            )
        if len(key) > _MAX_METADATA_KEY_CHARS or len(value) > _MAX_METADATA_VALUE_CHARS:
            raise BatchInputError(
                f"metadata key {_short(key)} or its value is too long (64 / 512 characters)",
                None,
                "metadata",
                code="invalid_value",
            )
    return dict(metadata)
