"""Request traces: the Azure LLM inference trace CSV and Mooncake JSONL.

Mapping rules (documented in docs/architecture.md): each trace row becomes one request with
the trace's prompt and output lengths; its model and SLO class come from the scenario's
streams, drawn per row with probability proportional to each stream's request count (or
share), from a generator seeded by ``seed``. Arrival = (timestamp - first timestamp) / load.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import numpy as np

from qlm.domain.request import Request
from qlm.errors import ConfigError
from qlm.workload.generator import TimedRequest, stream_counts
from qlm.workload.scenario import Scenario

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")


def _int_field(path: str, where: str, name: str, value: object) -> int:
    try:
        v = int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigError(path, f"{where}: {name}", f"not an integer ({value!r})") from None
    if v < 0:
        raise ConfigError(path, f"{where}: {name}", f"must be >= 0 (got {v})")
    return v


def _parse_ts(path: str, where: str, value: str) -> float:
    s = value.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        if "." in s:  # Azure writes 7 fractional digits; datetime takes 6
            head, frac = s.split(".", 1)
            s = f"{head}.{frac[:6]}"
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise ConfigError(path, f"{where}: TIMESTAMP", f"not a timestamp ({value!r})") from None


def read_azure_csv(path: Path) -> list[tuple[float, int, int]]:
    """(timestamp_s, prompt_tokens, output_tokens) rows of an Azure trace CSV."""
    p = str(path)
    rows: list[tuple[float, int, int]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in AZURE_COLUMNS if c not in cols]
        if missing:
            raise ConfigError(p, "header", f"missing column(s) {missing}; expected {list(AZURE_COLUMNS)}")
        for n, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            where = f"line {n}"
            ts = _parse_ts(p, where, row["TIMESTAMP"] or "")
            rows.append(
                (
                    ts,
                    _int_field(p, where, "ContextTokens", row["ContextTokens"]),
                    _int_field(p, where, "GeneratedTokens", row["GeneratedTokens"]),
                )
            )
    return rows


def read_mooncake_jsonl(path: Path) -> list[tuple[float, int, int]]:
    """Rows of a Mooncake trace (``timestamp`` in ms, ``input_length``, ``output_length``)."""
    p = str(path)
    rows: list[tuple[float, int, int]] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(p, where, f"invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ConfigError(p, where, "each line must be a JSON object")
            for f in MOONCAKE_FIELDS:
                if f not in obj:
                    raise ConfigError(p, f"{where}: {f}", "missing field")
            ts = obj["timestamp"]
            if not isinstance(ts, int | float):
                raise ConfigError(p, f"{where}: timestamp", f"not a number ({ts!r})")
            rows.append(
                (
                    float(ts) / 1000.0,
                    _int_field(p, where, "input_length", obj["input_length"]),
                    _int_field(p, where, "output_length", obj["output_length"]),
                )
            )
    return rows


def read_trace(path: str | Path) -> list[tuple[float, int, int]]:
    """Rows of a trace file, by extension: ``.csv`` Azure, ``.jsonl``/``.json`` Mooncake."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(str(p), "", "no such trace file")
    try:
        if p.suffix.lower() == ".csv":
            rows = read_azure_csv(p)
        elif p.suffix.lower() in (".jsonl", ".json"):
            rows = read_mooncake_jsonl(p)
        else:
            raise ConfigError(str(p), "", "unknown trace format: expected .csv (Azure) or .jsonl (Mooncake)")
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not a text file") from None
    if not rows:
        raise ConfigError(str(p), "", "trace has no rows")
    return rows


def trace_requests(
    path: str | Path, scenario: Scenario, seed: int = 0, load: float = 1.0, limit: int | None = None
) -> list[TimedRequest]:
    """Requests from a trace, mapped onto the scenario's models and SLO classes."""
    if load <= 0:
        raise ValueError(f"load must be > 0, got {load}")
    rows = sorted(read_trace(path), key=lambda r: r[0])
    if limit is not None:
        rows = rows[:limit]
    streams = scenario.workload.streams
    weights = np.array(
        [max(c, 1e-9) for c in stream_counts(scenario)] if scenario.workload.requests
        else [s.count or 1 for s in streams],
        dtype=float,
    )
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(streams), size=len(rows), p=weights / weights.sum())
    t0 = rows[0][0]
    out = []
    for k, ((ts, prompt, output), si) in enumerate(zip(rows, picks, strict=True)):
        s = streams[int(si)]
        out.append(
            TimedRequest(
                Request(
                    id=f"t{k}",
                    model=s.model,
                    slo_class=s.slo_class,
                    arrival_s=(ts - t0) / load,
                    prompt_tokens=max(1, prompt),
                    max_tokens=max(1, output) if s.declare_max_tokens else None,
                ),
                max(1, output),
            )
        )
    return out
