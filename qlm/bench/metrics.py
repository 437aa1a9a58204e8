"""Benchmark metrics: a pure function of per-request records, with the key names of
``vllm bench serve``'s result JSON, overall and per SLO class.

Definitions (``vllm bench serve``'s; ``duration`` is the wall time from the first send to
the last completion):

- ``completed`` / ``failed``: requests that did / did not succeed;
- ``total_input_tokens`` / ``total_output_tokens``: over completed requests;
- ``request_throughput`` = completed / duration; ``output_throughput`` = output tokens /
  duration; ``total_token_throughput`` = (input + output tokens) / duration;
- ``{mean,median,std,pN}_{ttft,tpot,itl,e2el}_ms`` over completed requests; TPOT only over
  requests with more than one output token; ITL over every inter-chunk gap; ``std`` is the
  population standard deviation, ``pN`` numpy's linear-interpolation percentile. With no
  value at all a statistic is ``None`` (``vllm bench serve`` writes 0).
- ``request_goodput`` = requests that met their SLO / duration.

SLO (qlm's; ``vllm bench serve --goodput`` takes one target for every request): a request
meets its SLO when it completed and its TTFT, scaled to model seconds (wall x
``time_scale``), is at most its class's TTFT target. TPOT and deadline targets of a class are
not checked. ``slo_attainment`` = requests that met it / requests sent (a failed request
misses). ``failed_reasons`` counts failures by reason.

Every figure exists twice: at the top level in wall time (as ``vllm bench serve`` measures
it) and under ``scaled`` in model time: latencies x ``time_scale``, rates / ``time_scale``,
``duration`` x ``time_scale``, comparable with SLO targets and with the simulator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from qlm.bench.records import RequestRecord

__all__ = ["DEFAULT_PERCENTILES", "LATENCY_METRICS", "compute_metrics", "meets_slo", "percentile_key",
           "summarize"]

DEFAULT_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
_REL_TOL = 1e-9  # TTFT x time_scale vs the target: forgive float rounding (0.02 x 100 = 2.0000000000000004)


def percentile_key(p: float, metric: str) -> str:
    """``p99_ttft_ms``; non-integer percentiles keep their decimals (``p99.9_ttft_ms``)."""
    word = str(int(p)) if int(p) == p else str(p)
    return f"p{word}_{metric}_ms"


def meets_slo(r: RequestRecord, ttft_target_s: float, time_scale: float = 1.0) -> bool:
    """Completed, and TTFT x ``time_scale`` (model seconds) within ``ttft_target_s``."""
    return (r.success and r.ttft_s is not None
            and r.ttft_s * time_scale <= ttft_target_s * (1 + _REL_TOL))


def _stats(metric: str, values_s: Sequence[float], unit: float, percentiles: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not values_s:
        for k in ("mean", "median", "std"):
            out[f"{k}_{metric}_ms"] = None
        for p in percentiles:
            out[percentile_key(p, metric)] = None
        return out
    ms = np.asarray(values_s, dtype=float) * (1000.0 * unit)
    out[f"mean_{metric}_ms"] = float(np.mean(ms))
    out[f"median_{metric}_ms"] = float(np.median(ms))
    out[f"std_{metric}_ms"] = float(np.std(ms))
    for p in percentiles:
        out[percentile_key(p, metric)] = float(np.percentile(ms, p))
    return out


def _block(records: Sequence[RequestRecord], duration_s: float, good: int, unit: float,
           percentiles: Sequence[float]) -> dict[str, Any]:
    """The ``vllm bench serve`` keys with time in units of ``unit`` wall seconds."""
    done = [r for r in records if r.success]
    dur = duration_s * unit
    tin = sum(r.prompt_tokens for r in done)
    tout = sum(r.output_tokens for r in done)

    def rate(x: float) -> float | None:
        return x / dur if dur > 0 else None

    out: dict[str, Any] = {
        "duration": dur,
        "completed": len(done),
        "failed": len(records) - len(done),
        "total_input_tokens": tin,
        "total_output_tokens": tout,
        "request_throughput": rate(len(done)),
        "request_goodput": rate(good),
        "output_throughput": rate(tout),
        "total_token_throughput": rate(tin + tout),
    }
    ttft = [r.ttft_s for r in done if r.ttft_s is not None]
    tpot = [t for t in (r.tpot_s for r in done) if t is not None]
    itl = [g for r in done for g in r.itl_s]
    e2el = [r.e2el_s for r in done if r.e2el_s is not None]
    for name, vals in zip(LATENCY_METRICS, (ttft, tpot, itl, e2el), strict=True):
        out.update(_stats(name, vals, unit, percentiles))
    return out


def summarize(records: Sequence[RequestRecord], duration_s: float, slo_ttft_s: Mapping[str, float], *,
              time_scale: float = 1.0, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, Any]:
    """Metrics of one set of requests (see the module docstring): the wall-time keys, then
    ``submitted``, ``slo_attainment`` (None with no request), ``failed_reasons`` and ``scaled``.

    Raises ``ValueError`` for a record whose class has no TTFT target, a negative duration
    or a time scale that is not positive.
    """
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    if time_scale <= 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    unknown = sorted({r.slo_class for r in records} - set(slo_ttft_s))
    if unknown:
        raise ValueError(f"no TTFT target for SLO class(es) {unknown}; known: {sorted(slo_ttft_s)}")
    good = sum(meets_slo(r, slo_ttft_s[r.slo_class], time_scale) for r in records)
    out = _block(records, duration_s, good, 1.0, percentiles)
    out["submitted"] = len(records)
    out["slo_attainment"] = good / len(records) if records else None
    reasons = Counter(r.error for r in records if not r.success and r.error)
    out["failed_reasons"] = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    out["scaled"] = _block(records, duration_s, good, time_scale, percentiles)
    return out


def compute_metrics(records: Iterable[RequestRecord], duration_s: float, slo_ttft_s: Mapping[str, float], *,
                    time_scale: float = 1.0,
                    percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, Any]:
    """Overall metrics (:func:`summarize` over every record) plus ``percentiles`` and
    ``per_class``: :func:`summarize` per SLO class that has records, in the order of
    ``slo_ttft_s`` (the class -> TTFT target mapping, model seconds)."""
    recs = list(records)
    for p in percentiles:
        if not 0 <= p <= 100:
            raise ValueError(f"percentiles must be in [0, 100], got {p}")
    out = summarize(recs, duration_s, slo_ttft_s, time_scale=time_scale, percentiles=percentiles)
    out["percentiles"] = [float(p) for p in percentiles]
    out["per_class"] = {
        c: summarize([r for r in recs if r.slo_class == c], duration_s, slo_ttft_s, time_scale=time_scale,
                     percentiles=percentiles)
        for c in slo_ttft_s if any(r.slo_class == c for r in recs)
    }
    return out
