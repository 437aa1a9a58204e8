"""Parsing vLLM's server-sent events and Prometheus text (no vLLM import)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import orjson

DONE = "[DONE]"
DONE_DATA = DONE.encode()  # the payload :func:`sse_data` yields for it


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


async def sse_data(chunks: AsyncIterable[bytes]) -> AsyncIterator[list[bytes]]:
    """The payloads of the ``data:`` lines of a byte stream (after ``data:``, whitespace
    stripped; ``b"[DONE]"`` included; blank lines, ``:`` comments and other fields skipped),
    one list per chunk read that completes a line: a stream that delivers several events per
    network read is handled with one await per read, not one per line. A last unterminated
    line counts."""
    rest = b""
    async for data in chunks:
        rest = rest + data if rest else data
        if b"\n" not in data:
            continue
        *lines, rest = rest.split(b"\n")
        out = [line[5:].strip() for line in lines if line[:5] == b"data:"]
        if out:
            yield out
    if rest[:5] == b"data:":
        yield [rest[5:].strip()]


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
