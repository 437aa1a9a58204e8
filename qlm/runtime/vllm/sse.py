"""Parsing vLLM's server-sent events and Prometheus text (no vLLM import)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

DONE = "[DONE]"
DONE_DATA = DONE.encode()  # the payload :class:`DataLines` gives for it


def parse_sse_line(line: str) -> dict[str, Any] | str | None:
    """One line of an SSE stream: a JSON object, ``DONE``, or ``None`` for lines to skip
    (blank lines, ``:`` comments such as keep-alives, other fields).

    Raises ``ValueError`` on a ``data:`` line that is not JSON."""
    line = line.rstrip("\r\n")
    if not line or line.startswith(":") or not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == DONE:
        return DONE
    return parse_sse_data(payload.encode())


class DataLines:
    """The payloads of the ``data:`` lines of a byte stream fed one network read at a time
    (after ``data:``, whitespace stripped; ``b"[DONE]"`` included; blank lines, ``:``
    comments such as keep-alives and other fields skipped): a read that delivers several
    events yields them in one list, a read that completes no line yields none."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        rest = self._rest + data if self._rest else data
        if b"\n" not in data:
            self._rest = rest
            return []
        *lines, self._rest = rest.split(b"\n")
        return [line[5:].strip() for line in lines if line[:5] == b"data:"]

    def flush(self) -> list[bytes]:
        """At the end of the stream: a last unterminated ``data:`` line counts."""
        rest, self._rest = self._rest, b""
        return [rest[5:].strip()] if rest[:5] == b"data:" else []


def parse_sse_data(payload: bytes) -> dict[str, Any]:
    """One ``data:`` payload (not ``[DONE]``) as a JSON object; ``ValueError`` otherwise."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:  # a ValueError
        raise ValueError(f"SSE data is not JSON: {payload[:80]!r}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"SSE data is not a JSON object: {payload[:80]!r}")
    return obj


def parse_sse(lines: Iterable[str]) -> list[dict[str, Any] | str]:
    """All events of a complete stream, ``DONE`` included."""
    out: list[dict[str, Any] | str] = []
    for line in lines:
        ev = parse_sse_line(line)
        if ev is not None:
            out.append(ev)
    return out


def chunk_kind(ev: dict[str, Any] | str) -> str:
    """Structural kind of an event: ``done``, ``error``, ``usage`` (``choices: []``), ``role``,
    ``finish``, ``content`` (chat delta or completion text)."""
    if ev == DONE:
        return "done"
    assert isinstance(ev, dict)
    if "error" in ev:
        return "error"
    choices = ev.get("choices")
    if choices == []:
        return "usage"
    if not isinstance(choices, list):
        return "content"
    c = choices[0]
    if c.get("finish_reason"):
        return "finish"
    if (c.get("delta") or {}).get("role"):
        return "role"
    return "content"


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Sample = tuple[dict[str, str], float]


def parse_prometheus(text: str) -> dict[str, list[Sample]]:
    """Samples by metric name (``_total``/``_bucket`` suffixes kept as exposed)."""
    out: dict[str, list[Sample]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        name, labels, value = m.groups()
        try:
            v = float(value)
        except ValueError:
            continue
        lab = dict(_LABEL.findall(labels or ""))
        out.setdefault(name, []).append((lab, v))
    return out


def metric_sum(samples: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    """Sum of ``name`` over the samples matching ``labels`` (e.g. over ``engine``);
    ``None`` when the metric is absent."""
    rows = samples.get(name)
    if rows is None:
        return None
    return sum(v for lab, v in rows if all(lab.get(k) == x for k, x in labels.items()))
