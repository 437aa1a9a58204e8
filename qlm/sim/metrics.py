"""Results of a simulation run: SLO attainment, latency, throughput, utilisation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from qlm.domain.request import Request, RequestState
from qlm.domain.slo import SLOClass
from qlm.sim.simulator import SimRun


def meets_slo(r: Request, cls: SLOClass) -> bool:
    """A request meets its SLO when it finished, its TTFT is within target, and its TPOT and
    completion deadline (when the class sets them) hold. Rejected or unfinished: a miss."""
    if r.state is not RequestState.FINISHED or r.first_token_s is None or r.finish_s is None:
        return False
    if r.first_token_s - r.arrival_s > cls.ttft_s + 1e-9:
        return False
    if cls.tpot_s is not None and r.generated_tokens > 1:
        tpot = (r.finish_s - r.first_token_s) / (r.generated_tokens - 1)
        if tpot > cls.tpot_s + 1e-12:
            return False
    return not (cls.deadline_s is not None and r.finish_s - r.arrival_s > cls.deadline_s + 1e-9)


def _p99(values: list[float]) -> float | None:
    return float(np.percentile(values, 99)) if values else None


def summarize(run: SimRun, policy: str, slo: Mapping[str, SLOClass]) -> dict[str, Any]:
    """The result row of one policy (the ``results[]`` entries of ``qlm simulate --json``)."""
    reqs = run.requests
    by_class: dict[str, list[Request]] = {}
    for r in reqs:
        by_class.setdefault(r.slo_class, []).append(r)
    met = {c: sum(meets_slo(r, slo[c]) for r in rs) for c, rs in by_class.items()}
    finished = [r for r in reqs if r.state is RequestState.FINISHED]
    t0 = min((r.arrival_s for r in reqs), default=0.0)
    t_end = max((r.finish_s for r in finished if r.finish_s is not None), default=t0)
    span = max(t_end - t0, 1e-9)
    busy_gpu_s = sum(e.c.busy_s * e.spec.tp for e in run.engines.values())
    gpus = run.cluster.total_gpus
    preempt = sum(e.c.preemptions for e in run.engines.values()) + run.control.evictions
    ended = sum(1 for r in reqs if r.state.terminal)
    return {
        "policy": policy,
        "submitted": len(reqs),
        "completed": len(finished),
        "rejected": sum(1 for r in reqs if r.state is RequestState.REJECTED),
        "failed": sum(1 for r in reqs if r.state is RequestState.FAILED),
        "unfinished": len(reqs) - ended,
        "slo_attainment": sum(met.values()) / len(reqs) if reqs else math.nan,
        "slo_attainment_by_class": {c: met[c] / len(rs) for c, rs in sorted(by_class.items())},
        "p99_ttft_s_by_class": {
            c: _p99([r.ttft_s for r in rs if r.ttft_s is not None]) for c, rs in sorted(by_class.items())
        },
        "throughput_rps": len(finished) / span,
        "output_tokens_per_s": sum(r.generated_tokens for r in finished) / span,
        "gpu_utilization": busy_gpu_s / (gpus * span) if gpus else 0.0,
        "model_swaps": run.control.swaps,
        "cold_starts": run.control.cold_starts,
        "preemptions": preempt,
        "sim_end_s": run.end_s,
        "wall_s": run.wall_s,
    }
