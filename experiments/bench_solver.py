"""Benchmark of the global scheduler backends on seeded synthetic snapshots.

For each size (GPUs x groups x models) and seed: a reference run (``solve`` with CP-SAT for
``--ref-time`` s, 16 candidates per group), then every configured backend. Reports, per size
and configuration, the median and p95 decision time (wall time of the whole ``solve()`` call)
and the median and worst objective relative to the reference (every objective is scored by the
same ``evaluate``), then one PASS/FAIL line per target of issue 4. Configurations limited to
0.1 s run ``--timing-reps`` times per seed (every run is a row: more decisions for the p95).
Writes ``bench_solver.md`` and ``bench_solver.json`` to ``--out``.

Full run (about 25 minutes on 2 shared cores)::

    python experiments/bench_solver.py --out out/bench_solver --reps 10 --reps-large 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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


@dataclass(frozen=True)
class Target:
    """An acceptance target: a time bound and, optionally, a worst objective ratio."""

    size: str
    config: str
    stat: str
    """"p95" or "max" decision time."""
    max_ms: float
    min_ratio: float | None = None


TARGETS = [
    Target("80x500x3", "cpsat@0.1s", "p95", 100.0, 0.98),  # paper scale: decision time, quality
    Target("256x2000x10", "cpsat@1s", "max", 1000.0),  # largest: a plan within the epoch
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
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _ratio(r: Row) -> float:
    return r.objective / r.reference if r.reference > 0 else float("nan")


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    solve(random_problem(99, 4, 10, 1), time_limit=0.2)  # warm-up (imports, caches)
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
                for _ in range(args.timing_reps if limit <= 0.1 else 1):
                    t = time.perf_counter()
                    try:
                        plan = (greedy_plan(prob) if backend == "greedy"
                                else solve(prob, backend, limit))
                    except Exception as exc:  # a backend crash (e.g. CBC's) is a result too
                        print(f"  {name:14s} FAILED: {' '.join(str(exc).split())[:100]}",
                              flush=True)
                        break
                    seconds = time.perf_counter() - t
                    rows.append(Row(label, seed, name, seconds, plan.objective, ref.objective,
                                    plan.status.value, plan.terms.attainment / total_value))
                    print(f"  {name:14s} {seconds * 1000:8.1f} ms  obj {plan.objective:10.2f}  "
                          f"{plan.status.value} {plan.note[:60]}", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| size (GPUs x groups x models) | config | runs | median ms | p95 ms | "
             "obj / ref (median) | obj / ref (worst) | attainment (median) | statuses |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r.size, r.config) not in keys:
            keys.append((r.size, r.config))
    for size, config in keys:
        sel = [r for r in rows if r.size == size and r.config == config]
        ms = [r.seconds * 1000 for r in sel]
        rel = [_ratio(r) for r in sel]
        statuses: dict[str, int] = {}
        for r in sel:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        lines.append(
            f"| {size} | {config} | {len(sel)} | {statistics.median(ms):.0f} | "
            f"{_p95(ms):.0f} | {statistics.median(rel):.4f} | {min(rel):.4f} | "
            f"{statistics.median(r.attainment for r in sel):.3f} | "
            + ", ".join(f"{k}:{v}" for k, v in sorted(statuses.items())) + " |")
    return "\n".join(lines)


def verdicts(rows: list[Row], ref_time: float) -> str:
    """One PASS/FAIL line per target (NOT RUN when the size or config was left out)."""
    lines = []
    for t in TARGETS:
        sel = [r for r in rows if r.size == t.size and r.config == t.config]
        if not sel:
            lines.append(f"- {t.size} {t.config}: NOT RUN")
            continue
        ms = [r.seconds * 1000 for r in sel]
        took = _p95(ms) if t.stat == "p95" else max(ms)
        parts = [f"{t.stat} decision time {took:.0f} ms <= {t.max_ms:.0f} ms: "
                 + ("PASS" if took <= t.max_ms else "FAIL")]
        if t.min_ratio is not None:
            worst = min(_ratio(r) for r in sel)
            parts.append(f"worst objective / {ref_time:g}-s reference {worst:.4f} >= "
                         f"{t.min_ratio:g}: " + ("PASS" if worst >= t.min_ratio else "FAIL"))
        seeds = len({r.seed for r in sel})
        lines.append(f"- {t.size} {t.config} ({seeds} seeds, {len(sel)} runs): "
                     + "; ".join(parts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ref-time", type=float, default=60.0,
                        help="time limit of the CP-SAT reference run per snapshot (s)")
    parser.add_argument("--reps", type=int, default=10, help="seeds per size up to 80 GPUs")
    parser.add_argument("--reps-large", type=int, default=2, help="seeds per larger size")
    parser.add_argument("--timing-reps", type=int, default=3,
                        help="runs per seed of the configurations limited to <= 0.1 s")
    parser.add_argument("--load", type=float, default=1.1)
    parser.add_argument("--max-gpus", type=int, default=256)
    parser.add_argument("--paper-max-gpus", type=int, default=40)
    parser.add_argument("--pulp-max-gpus", type=int, default=80)
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: re-render the tables from --out/bench_solver.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        saved = json.loads((args.out / "bench_solver.json").read_text())
        rows = [Row(**r) for r in saved["rows"]]
        header = (f"# bench_solver (re-rendered from {args.out / 'bench_solver.json'})\n\n"
                  f"reference: CP-SAT {saved['args']['ref_time']} s, 16 candidates/group; "
                  f"load {saved['args']['load']}; machine: {saved['machine']}\n\n")
        checks = verdicts(rows, float(saved["args"]["ref_time"]))
        print(header + table(rows) + "\n\nTargets:\n\n" + checks)
        return
    started = time.time()
    load_before = os.getloadavg()
    rows = run(args)
    load_after = os.getloadavg()
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
               f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_before)} at start, "
               f"{'/'.join(f'{x:.1f}' for x in load_after)} at end")
    md = table(rows)
    checks = verdicts(rows, args.ref_time)
    command = f"python {' '.join(sys.argv)}"
    wall = time.time() - started
    header = (f"# bench_solver\n\ncommand: `{command}`\n\n"
              f"reference: CP-SAT {args.ref_time:g} s, 16 candidates/group; load {args.load}; "
              f"machine: {machine}; wall {wall:.0f} s\n\n")
    (args.out / "bench_solver.md").write_text(header + md + "\n\nTargets:\n\n" + checks + "\n")
    (args.out / "bench_solver.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "command": command,
         "machine": machine, "wall_s": wall, "rows": [asdict(r) for r in rows]}, indent=1))
    print(header + md + "\n\nTargets:\n\n" + checks)


if __name__ == "__main__":
    main()
