"""The result document of a benchmark run (JSON) and its summary table (rich, markdown)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from qlm.bench.metrics import DEFAULT_PERCENTILES, compute_metrics, percentile_key
from qlm.bench.plan import BenchPlan
from qlm.bench.runner import RunResult, Target

__all__ = ["SUMMARY_HEADERS", "markdown_table", "notes", "result_document", "rich_table", "slo_definition",
           "summary_rows"]

SUMMARY_HEADERS = ("class", "TTFT SLO s", "sent", "done", "failed", "SLO met", "goodput req/s",
                   "TTFT p50 s", "TTFT p99 s", "TPOT mean ms", "TPOT p99 ms", "E2EL p50 s")


def slo_definition(time_scale: float) -> str:
    scale = "" if time_scale == 1 else f" x {time_scale:g} (the time scale)"
    return (f"a request meets its SLO when it completed and its TTFT{scale} is at most its class's "
            "TTFT target; slo_attainment = requests meeting it / requests sent; request_goodput = "
            "requests meeting it per second (wall; per model second under 'scaled')")


def result_document(plan: BenchPlan, target: Target, run: RunResult,
                    percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, Any]:
    """Settings, the SLO definition and classes, the metrics (:func:`compute_metrics`:
    ``vllm bench serve`` keys at the top level, ``scaled``, ``per_class``), the largest send
    lag and one compact entry per request."""
    metrics = compute_metrics(run.records, run.duration_s, plan.slo_ttft_s, time_scale=plan.time_scale,
                              percentiles=percentiles)
    counts = {c: sum(r.slo_class == c for r in plan.requests) for c in plan.classes_used}
    lag = max((r.send_lag_s for r in run.records), default=0.0)
    return {
        "tool": "qlm bench",
        "date": datetime.fromtimestamp(run.started_at, UTC).isoformat(timespec="seconds"),
        "base_url": target.base_url,
        "endpoint": target.endpoint,
        **{f"source_{k}": v for k, v in plan.source.items()},
        "seed": plan.seed,
        "time_scale": plan.time_scale,
        "max_concurrency": target.max_concurrency,
        "num_prompts": len(plan.requests),
        "class_header": target.class_header,
        "class_field": target.class_field,
        "service_tiers": dict(target.service_tiers),
        "slo_definition": slo_definition(plan.time_scale),
        "slo_classes": {c: {"ttft_s": plan.slo_classes[c].ttft_s, "requests": counts[c]} for c in counts},
        "max_send_lag_ms": 1000 * lag,
        **metrics,
        "requests": [
            {"index": r.index, "slo_class": r.slo_class, "model": r.model, "success": r.success,
             "start_s": round(r.start_s, 6), "ttft_s": r.ttft_s, "e2el_s": r.e2el_s,
             "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
             "finish_reason": r.finish_reason, "error": r.error, "detail": r.detail}
            for r in run.records
        ],
    }


def _s(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}"


def _ms(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _row(name: str, ttft_slo: str, m: Mapping[str, Any]) -> list[str]:
    sc = m["scaled"]
    good = sc["request_goodput"]
    return [name, ttft_slo, str(m["submitted"]), str(m["completed"]), str(m["failed"]), _pct(m["slo_attainment"]),
            "-" if good is None else f"{good:.3f}", _s(sc["median_ttft_ms"]), _s(sc[percentile_key(99, "ttft")]),
            _ms(sc["mean_tpot_ms"]), _ms(sc[percentile_key(99, "tpot")]), _s(sc["median_e2el_ms"])]


def summary_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    """One row per SLO class, then ``all``; times and rates in model time (``scaled``).
    Needs the 99th percentile among the document's percentiles."""
    rows = [_row(c, f"{doc['slo_classes'][c]['ttft_s']:g}", m) for c, m in doc["per_class"].items()]
    rows.append(_row("all", "", doc))
    return rows


def rich_table(doc: Mapping[str, Any]) -> Table:
    scale = doc["time_scale"]
    unit = "model time" if scale == 1 else f"model time = wall x {scale:g}"
    src = f"scenario {doc['source_scenario']}"
    if doc.get("source_trace"):
        src += f" + trace {doc['source_trace']}"
    t = Table(title=f"qlm bench {doc['base_url']}{doc['endpoint']}  {src}  seed {doc['seed']}  ({unit})")
    for i, h in enumerate(SUMMARY_HEADERS):
        t.add_column(h, justify="left" if i == 0 else "right")
    for row in summary_rows(doc):
        t.add_row(*row)
    return t


def notes(doc: Mapping[str, Any]) -> list[str]:
    """The lines printed under the table: the SLO definition, failures, duration and lag."""
    lines = [f"SLO: {doc['slo_definition']}."]
    if doc["failed_reasons"]:
        lines.append("failed: " + ", ".join(f"{k} x{v}" for k, v in doc["failed_reasons"].items()))
    lines.append(f"wall duration {doc['duration']:.2f} s; largest send lag {doc['max_send_lag_ms']:.1f} ms "
                 "(how late the client sent a request)")
    return lines


def markdown_table(rows: Sequence[Sequence[str]], headers: Sequence[str] = SUMMARY_HEADERS) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| --- " + "| ---: " * (len(headers) - 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
