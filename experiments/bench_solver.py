"""Benchmark of the global scheduler backends on seeded synthetic snapshots.

For each size (GPUs x groups x models) and seed: a reference run (CP-SAT, ``--ref-time`` s,
16 candidates per group), then every configured backend; reports median / p95 decision time
(wall time of ``solve()``) and objective relative to the reference (all objectives are scored
by the same ``evaluate``). Writes ``bench_solver.md`` and ``bench_solver.json`` to ``--out``.

Quick run (about 10 minutes on 2 cores)::

    python experiments/bench_solver.py --out out/bench --ref-time 15 --reps 5 --reps-large 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from qlm.solver import SolverOptions, greedy_plan, solve
from qlm.solver.synthetic import random_problem

SIZES: list[tuple[int, int, int]] = [
    (4, 10, 1), (16, 50, 2), (40, 200, 3), (80, 500, 3), (160, 1000, 5), (256, 2000, 10),
]
CONFIGS: list[tuple[str, str, float]] = [  # label, backend, time limit (s)
    ("greedy", "greedy", 0.0),
    ("cpsat@0.1s", "cpsat", 0.1),
    ("cpsat@1s", "cpsat", 1.0),
    ("pulp-highs@1s", "pulp-highs", 1.0),
    ("pulp-cbc@1s", "pulp-cbc", 1.0),
    ("qlm-paper@10s", "qlm-paper", 10.0),
]


@dataclass
class Row:
    size: str
    seed: int
    config: str
    seconds: float
    objective: float
    reference: float
    status: str
    attainment: float


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    solve(random_problem(99, 4, 10, 1), time_limit=0.2)  # warm-up (imports, JIT caches)
    solve(random_problem(99, 4, 10, 1), backend="pulp-highs", time_limit=0.2)
    sizes = [s for s in SIZES if s[0] <= args.max_gpus]
    for gpus, groups, models in sizes:
        reps = args.reps if gpus <= 80 else args.reps_large
        label = f"{gpus}x{groups}x{models}"
        for seed in range(reps):
            prob = random_problem(seed, gpus, groups, models, load=args.load)
            total_value = sum(prob.value(g) for g in prob.groups)
            ref = solve(prob, "cpsat", args.ref_time, options=SolverOptions(max_candidates=16))
            print(f"{label} seed={seed} reference {ref.objective:.2f} ({ref.status.value}, "
                  f"{ref.solve_s:.1f}s)", flush=True)
            for name, backend, limit in CONFIGS:
                if backend == "qlm-paper" and gpus > args.paper_max_gpus:
                    continue
                if backend.startswith("pulp") and gpus > args.pulp_max_gpus:
                    continue
                t = time.perf_counter()
                try:
                    plan = greedy_plan(prob) if backend == "greedy" else solve(prob, backend, limit)
                except Exception as exc:  # a backend crash (e.g. CBC's process) is a result too
                    print(f"  {name:14s} FAILED: {' '.join(str(exc).split())[:100]}", flush=True)
                    continue
                seconds = time.perf_counter() - t
                rows.append(Row(label, seed, name, seconds, plan.objective, ref.objective,
                                plan.status.value, plan.terms.attainment / total_value))
                print(f"  {name:14s} {seconds * 1000:8.1f} ms  obj {plan.objective:10.2f}  "
                      f"{plan.status.value} {plan.note[:60]}", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| size (GPUs x groups x models) | config | runs | median ms | p95 ms | "
             "obj / ref (median) | obj / ref (min) | attainment (median) | statuses |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r.size, r.config) not in keys:
            keys.append((r.size, r.config))
    for size, config in keys:
        sel = [r for r in rows if r.size == size and r.config == config]
        ms = [r.seconds * 1000 for r in sel]
        rel = [r.objective / r.reference if r.reference > 0 else float("nan") for r in sel]
        statuses: dict[str, int] = {}
        for r in sel:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        lines.append(
            f"| {size} | {config} | {len(sel)} | {statistics.median(ms):.0f} | "
            f"{_p95(ms):.0f} | {statistics.median(rel):.4f} | {min(rel):.4f} | "
            f"{statistics.median(r.attainment for r in sel):.3f} | "
            + ", ".join(f"{k}:{v}" for k, v in sorted(statuses.items())) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ref-time", type=float, default=60.0)
    parser.add_argument("--reps", type=int, default=10, help="seeds per size up to 80 GPUs")
    parser.add_argument("--reps-large", type=int, default=5, help="seeds per larger size")
    parser.add_argument("--load", type=float, default=1.1)
    parser.add_argument("--max-gpus", type=int, default=256)
    parser.add_argument("--paper-max-gpus", type=int, default=40)
    parser.add_argument("--pulp-max-gpus", type=int, default=256)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows = run(args)
    machine = f"{platform.processor() or platform.machine()}, {platform.python_version()}"
    md = table(rows)
    header = (f"# bench_solver\n\nreference: CP-SAT {args.ref_time:g} s, 16 candidates/group; "
              f"load {args.load}; machine: {machine}; wall {time.time() - started:.0f} s\n\n")
    (args.out / "bench_solver.md").write_text(header + md + "\n")
    (args.out / "bench_solver.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()},
         "rows": [asdict(r) for r in rows]}, indent=1))
    print(md)


if __name__ == "__main__":
    main()
