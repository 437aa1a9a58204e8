"""Simulator speed: wall time of `qlm simulate` per scenario and policy.

    python experiments/bench_simulate.py --scenarios small,wa,wb,wc --policies fcfs,edf,shepherd,qlm \
        --repeat 3 --out out/bench_simulate

Writes `bench_simulate.json` and `bench_simulate.md` (median wall seconds per run, plus the
machine) to the output folder. Targets (issue 2): `wa` at paper scale under 60 s, `small` under 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from qlm.sim.runner import RunSpec, prepare, run_policy
from qlm.workload.scenario import load_scenario


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="small,wa,wb,wc")
    ap.add_argument("--policies", default="fcfs,edf,shepherd,qlm")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("out/bench_simulate"))
    args = ap.parse_args()
    rows = []
    for name in args.scenarios.split(","):
        sc = load_scenario(name)
        spec = RunSpec(sc, seed=args.seed)
        t0 = time.perf_counter()
        prepared = prepare(spec)
        prep_s = time.perf_counter() - t0
        for pol in args.policies.split(","):
            walls = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                row, _ = run_policy(spec, pol, prepared=prepared)
                walls.append(time.perf_counter() - t0)
            rows.append({
                "scenario": name, "policy": pol, "requests": row["submitted"],
                "gpus": prepared[0].total_gpus, "prepare_s": prep_s,
                "median_wall_s": statistics.median(walls), "max_wall_s": max(walls),
                "slo_attainment": row["slo_attainment"],
            })
            print(f"{name:6} {pol:9} {statistics.median(walls):7.2f} s  attainment {row['slo_attainment']:.3f}")
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_simulate.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    lines = [f"Machine: {machine}", "", "| scenario | policy | requests | GPUs | median wall s | max wall s |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['scenario']} | {r['policy']} | {r['requests']} | {r['gpus']} | {r['median_wall_s']:.2f} | "
              f"{r['max_wall_s']:.2f} |" for r in rows]
    (args.out / "bench_simulate.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
