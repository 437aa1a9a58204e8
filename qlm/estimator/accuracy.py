"""Accuracy of waiting-time predictions against what happened (the ``estimator`` block).

Each request carries its prediction made at admission in ``request.meta``: ``pred_wait_s``
(mean predicted waiting time), ``p_meet`` (predicted P(first token by the TTFT deadline)) and
``pred_wait_base_s`` (the QLM paper's mean-only estimate). The truth is the simulated
waiting time ``first_token_s - arrival_s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from qlm.domain.request import Request
from qlm.domain.slo import SLOClass

__all__ = ["accuracy_block", "reliability"]

MIN_WAIT_S = 1.0  # percentage errors only for requests that waited at least this long


def reliability(p: np.ndarray, hit: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Binned reliability: per bin of predicted probability, mean prediction, observed
    frequency and count (empty bins omitted)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"p_mean": float(p[m].mean()), "observed": float(hit[m].mean()),
                        "count": int(m.sum())})
    return out


def _ape_stats(pred: np.ndarray, true: np.ndarray) -> dict[str, float | None]:
    if len(true) == 0:
        return {"median_ape": None, "mean_ape": None, "median_abs_error_s": None}
    ape = np.abs(pred - true) / true
    return {
        "median_ape": float(np.median(ape)),
        "mean_ape": float(np.mean(ape)),
        "median_abs_error_s": float(np.median(np.abs(pred - true))),
    }


def accuracy_block(
    requests: Iterable[Request], slo: Mapping[str, SLOClass], min_wait_s: float = MIN_WAIT_S
) -> dict[str, Any]:
    """The ``estimator`` block of a result row.

    - ``wait_mape``: *median* absolute percentage error of ``pred_wait_s`` over requests that
      got a first token and waited ``>= min_wait_s`` (the issue's acceptance metric);
    - ``wait_median_abs_error_s``: median absolute error over all requests with a first token;
    - ``p_meet_calibration_error``: count-weighted mean |predicted - observed| over 10 bins of
      ``p_meet`` (expected calibration error); a request without a first token is a miss;
    - ``breakdown``: per (SLO class, ``meta["pred_path"]``) over the same requests: count,
      median APE, median wait, median predicted / actual;
    - ``baseline``: the same figures for the mean-only estimator.
    """
    pred, base, true, pm, hit, path, cls_ = [], [], [], [], [], [], []
    for r in requests:
        if "pred_wait_s" not in r.meta:
            continue
        cls = slo[r.slo_class]
        w = r.ttft_s
        pm.append(float(r.meta["p_meet"]))  # type: ignore[arg-type]
        hit.append(w is not None and w <= cls.ttft_s + 1e-9)
        if w is None:
            continue
        pred.append(float(r.meta["pred_wait_s"]))  # type: ignore[arg-type]
        base.append(float(r.meta.get("pred_wait_base_s", np.nan)))  # type: ignore[arg-type]
        true.append(w)
        path.append(str(r.meta.get("pred_path", "queue")))
        cls_.append(r.slo_class)
    p, b, t = np.array(pred), np.array(base), np.array(true)
    pmv, hv = np.array(pm), np.array(hit, dtype=float)
    long = t >= min_wait_s
    ours = _ape_stats(p[long], t[long])
    theirs = _ape_stats(b[long], t[long])
    breakdown = []  # where the error is: per (SLO class, prediction path), waits >= min_wait_s
    for key in sorted({(c, q) for c, q, lg in zip(cls_, path, long, strict=True) if lg}):
        m = long & (np.array(cls_) == key[0]) & (np.array(path) == key[1])
        st = _ape_stats(p[m], t[m])
        breakdown.append({"slo_class": key[0], "path": key[1], "count": int(m.sum()),
                          "wait_mape": st["median_ape"], "median_wait_s": float(np.median(t[m])),
                          "median_ratio": float(np.median(p[m] / t[m]))})
    bins = reliability(pmv, hv) if len(pmv) else []
    n = max(1, len(pmv))
    ece = sum(x["count"] * abs(x["p_mean"] - x["observed"]) for x in bins) / n if bins else None
    return {
        "estimator": {
            "wait_mape": ours["median_ape"],
            "wait_mean_ape": ours["mean_ape"],
            "wait_median_abs_error_s": float(np.median(np.abs(p - t))) if len(t) else None,
            "p_meet_calibration_error": ece,
            "predicted": len(pmv),
            "waited_ge_1s": int(long.sum()),
            "reliability": bins,
            "breakdown": breakdown,
            "baseline": {
                "wait_mape": theirs["median_ape"],
                "wait_mean_ape": theirs["mean_ape"],
                "wait_median_abs_error_s": float(np.median(np.abs(b - t))) if len(t) else None,
            },
        }
    }
