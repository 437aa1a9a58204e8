"""Mixed run: interactive load alone vs the same interactive load plus a large batch (simulator).

The batch is what ``POST /v1/batches`` produces in the gateway: every line arrives when the batch
is created and runs in a batch SLO class whose deadline is the completion window (here a class
``batch-window`` with ``ttft_s = deadline_s = window``). The interactive stream is the same
requests in both runs (one generated workload; the batch stream is dropped for the baseline).

Claims checked (exit 1 if either fails):

1. interactive SLO attainment with the batch is within ``--tolerance-pp`` percentage points of
   the attainment without it;
2. every batch request finishes inside the window (created_at + window).

Usage::

    python experiments/batch_mixed.py --json                # defaults below, policy qlm (about 1 min)
    python experiments/batch_mixed.py --policy edf --batch 3000 --window-s 1800 --json

Result (seed 0, defaults: 2 x A100-80G, 6000 interactive requests at 12/s over mistral-7b and
qwen2.5-7b, a 6000-request mistral-7b batch created at t = 10 s with a 1800 s window):
interactive attainment 100.00 % alone and 100.00 % with the batch (drop 0.00 pp); the batch
finished 6000/6000 inside the window, makespan 484 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from qlm.domain.request import RequestState
from qlm.sim.metrics import meets_slo
from qlm.sim.runner import RunSpec, prepare, run_policy
from qlm.workload.scenario import Scenario


def scenario(*, interactive: int, rate: float, batch: int, window_s: float, batch_start_s: float) -> Scenario:
    """Two A100s serving two models; an interactive Poisson stream per model, one batch burst."""
    return Scenario.model_validate({
        "name": "batch-mixed",
        "description": "interactive streams plus one large batch whose class deadline is its window",
        "slo_classes": [
            {"name": "interactive", "ttft_s": 20.0, "priority": 0},
            {"name": "batch-window", "ttft_s": window_s, "deadline_s": window_s, "priority": 2},
        ],
        "cluster": {"pools": [
            {"name": "a100", "gpu": "A100-80G", "nodes": 1, "gpus_per_node": 2, "cpu_ram_gb": 256,
             "models": ["mistral-7b", "qwen2.5-7b"]},
        ]},
        "workload": {"streams": [
            {"model": "mistral-7b", "slo_class": "interactive", "count": interactive,
             "arrival": {"kind": "poisson", "rate": rate}},
            {"model": "qwen2.5-7b", "slo_class": "interactive", "count": interactive // 2,
             "arrival": {"kind": "poisson", "rate": rate / 2}},
            # a batch created at batch_start_s: every line arrives at once (spread 0)
            {"model": "mistral-7b", "slo_class": "batch-window", "count": batch,
             "arrival": {"kind": "burst", "start_s": batch_start_s, "spread_s": 0.0}},
        ]},
    })


def attainment(reqs: list[Any], sc: Scenario, cls: str) -> float:
    slo = {c.name: c for c in sc.slo_classes}
    rs = [r for r in reqs if r.slo_class == cls]
    return sum(meets_slo(r, slo[cls]) for r in rs) / len(rs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="qlm")
    ap.add_argument("--interactive", type=int, default=4000, help="interactive requests (mistral; qwen gets half)")
    ap.add_argument("--rate", type=float, default=8.0, help="interactive arrivals/s (mistral; qwen gets half)")
    ap.add_argument("--batch", type=int, default=6000, help="batch requests")
    ap.add_argument("--window-s", type=float, default=1800.0, help="completion window, seconds")
    ap.add_argument("--batch-start-s", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance-pp", type=float, default=2.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    sc = scenario(interactive=args.interactive, rate=args.rate, batch=args.batch, window_s=args.window_s,
                  batch_start_s=args.batch_start_s)
    spec = RunSpec(sc, seed=args.seed)
    cluster, workload = prepare(spec)
    alone = [tr for tr in workload if tr.request.slo_class == "interactive"]
    t0 = time.perf_counter()
    _, run_alone = run_policy(spec, args.policy, prepared=(cluster, alone))
    _, run_mixed = run_policy(spec, args.policy, prepared=(cluster, workload))
    wall = time.perf_counter() - t0

    batch = [r for r in run_mixed.requests if r.slo_class == "batch-window"]
    done = [r for r in batch if r.state is RequestState.FINISHED and r.finish_s is not None]
    created = min(r.arrival_s for r in batch)
    last = max((r.finish_s for r in done if r.finish_s is not None), default=float("inf"))
    within = sum(1 for r in done if r.finish_s is not None and r.finish_s <= created + args.window_s)
    a_alone = attainment(run_alone.requests, sc, "interactive")
    a_mixed = attainment(run_mixed.requests, sc, "interactive")
    delta_pp = 100 * (a_alone - a_mixed)
    ok = delta_pp <= args.tolerance_pp and within == len(batch)
    report = {
        "policy": args.policy, "seed": args.seed, "window_s": args.window_s,
        "interactive_requests": len(alone), "batch_requests": len(batch),
        "interactive_attainment_alone": round(a_alone, 4), "interactive_attainment_with_batch": round(a_mixed, 4),
        "attainment_drop_pp": round(delta_pp, 2),
        "batch_finished_within_window": within, "batch_makespan_s": round(last - created, 1),
        "ok": ok, "wall_s": round(wall, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"policy {args.policy}: interactive attainment {a_alone:.2%} alone, {a_mixed:.2%} with a "
              f"{len(batch)}-request batch (drop {delta_pp:+.2f} pp, tolerance {args.tolerance_pp} pp)")
        print(f"batch: {within}/{len(batch)} finished inside the {args.window_s:g} s window; "
              f"makespan {last - created:.0f} s; simulated in {wall:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
