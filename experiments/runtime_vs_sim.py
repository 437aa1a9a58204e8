"""Simulator vs emulators: the same scenario, workload and policy in virtual time and through
the real-time runtime over emulated vLLM engines (compressed time); SLO attainment of both.

    python experiments/runtime_vs_sim.py                       # rt_check, qlm/fcfs/edf, seeds 0-3, speed 10
    python experiments/runtime_vs_sim.py --scenario small --speed 20 --policy edf --seeds 0
    python experiments/runtime_vs_sim.py --subprocess --json   # one process per emulator

The acceptance check of issue 5: for each policy, the mean gap over the seeds is within
``--tolerance`` (5) percentage points; per-seed gaps are printed too. Exits 1 otherwise.

Eviction vs engine priority (simulator only; the ``qlm`` policy with evictions on, the
default ``evict_below=0.5``, or off, ``evict_below=0``, on engines scheduling ``fcfs`` or
``priority``):

    python experiments/runtime_vs_sim.py --eviction-study --scenario wa
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from qlm.runtime.replay import compare
from qlm.sim.runner import RunSpec, prepare, run_policy
from qlm.workload.scenario import Scenario, load_scenario

DEFAULT = str(Path(__file__).parent / "scenarios" / "rt_check.yaml")


def eviction_study(scenario: Scenario, seed: int, load: float, policy: str) -> list[dict[str, Any]]:
    """``policy`` (a qlm variant) with evictions on/off x engine scheduling fcfs/priority."""
    rows: list[dict[str, Any]] = []
    for engine in ("fcfs", "priority"):
        sc = scenario.model_copy(update={"engine_scheduling": engine})
        spec = RunSpec(sc, seed, load)
        prepared = prepare(spec)
        for evict in (True, False):
            params = {} if evict else {"evict_below": 0.0}
            row, run = run_policy(spec, policy, prepared=prepared, policy_params=params)
            rows.append({"engine": engine, "evictions_on": evict,
                         "slo_attainment": row["slo_attainment"],
                         "by_class": row["slo_attainment_by_class"],
                         "evictions": run.control.evictions,
                         "engine_preemptions": sum(e.c.preemptions for e in run.engines.values()),
                         "wall_s": row["wall_s"]})
    return rows


def print_eviction_study(rows: list[dict[str, Any]]) -> None:
    classes = sorted(rows[0]["by_class"])
    print("| engine scheduling | evictions | SLO met | " + " | ".join(classes)
          + " | evictions done | engine preemptions |")
    print("|---|---|---|" + "---|" * len(classes) + "---|---|")
    for r in rows:
        by = r["by_class"]
        cells = " | ".join(f"{100 * by[c]:.1f}%" for c in classes)
        print(f"| {r['engine']} | {'on' if r['evictions_on'] else 'off'} | "
              f"{100 * float(r['slo_attainment']):.1f}% | {cells} | {r['evictions']} | "
              f"{r['engine_preemptions']} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=DEFAULT, help="built-in name or YAML path")
    ap.add_argument("--policy", action="append", help="repeatable (default: qlm, fcfs, edf)")
    ap.add_argument("--seeds", default="0,1,2,3", help="comma-separated workload seeds")
    ap.add_argument("--load", type=float, default=1.0)
    ap.add_argument("--speed", type=float, default=10.0, help="virtual seconds per wall second")
    ap.add_argument("--subprocess", action="store_true", help="emulators as processes")
    ap.add_argument("--stream-interval", type=float, default=0.05, help="emulator chunk period (wall s)")
    ap.add_argument("--tolerance", type=float, default=5.0, help="allowed gap, percentage points")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--eviction-study", action="store_true",
                    help="simulator only: evictions on/off x engine fcfs/priority (qlm policy)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    scenario = load_scenario(a.scenario)
    if a.eviction_study:
        seed = int(a.seeds.split(",")[0])
        study = eviction_study(scenario, seed, a.load, (a.policy or ["qlm"])[0])
        if a.json:
            print(json.dumps({"scenario": scenario.name, "seed": seed, "load": a.load, "results": study},
                             indent=2))
        else:
            print(f"scenario {scenario.name}  seed {seed}  load {a.load:g}  policy {(a.policy or ['qlm'])[0]}")
            print_eviction_study(study)
        return 0
    policies = a.policy or ["qlm", "fcfs", "edf"]
    try:
        seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    except ValueError:
        print(f"error: --seeds must be comma-separated integers (got {a.seeds!r})", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        pairs = asyncio.run(compare(scenario, policies, seed=seed, load=a.load, speed=a.speed,
                                    subprocess=a.subprocess, stream_interval_s=a.stream_interval))
        for sim, rt in pairs:
            rows.append({"policy": sim.policy, "seed": seed, "sim": sim.slo_attainment, "runtime": rt.slo_attainment,
                         "gap_pp": 100 * (rt.slo_attainment - sim.slo_attainment),
                         "sim_by_class": sim.by_class, "runtime_by_class": rt.by_class,
                         "sim_swaps": sim.swaps, "runtime_swaps": rt.swaps,
                         "sim_evictions": sim.evictions, "runtime_evictions": rt.evictions,
                         "runtime_completed": rt.completed, "submitted": rt.submitted,
                         "runtime_wall_s": rt.wall_s})
    summary = {}
    for p in policies:
        mine = [r for r in rows if r["policy"] == p]
        mean_gap = sum(r["gap_pp"] for r in mine) / len(mine)
        summary[p] = {"mean_sim": sum(r["sim"] for r in mine) / len(mine),
                      "mean_runtime": sum(r["runtime"] for r in mine) / len(mine),
                      "mean_gap_pp": mean_gap, "max_abs_gap_pp": max(abs(r["gap_pp"]) for r in mine),
                      "pass": abs(mean_gap) <= a.tolerance}
    ok = all(v["pass"] for v in summary.values())
    if a.json:
        print(json.dumps({"scenario": scenario.name, "seeds": seeds, "load": a.load, "speed": a.speed,
                          "subprocess": a.subprocess, "tolerance_pp": a.tolerance, "summary": summary,
                          "results": rows}, indent=2))
    else:
        print(f"scenario {scenario.name}  seeds {','.join(map(str, seeds))}  load {a.load:g}  speed {a.speed:g}"
              f"  emulators {'subprocess' if a.subprocess else 'in-process'}")
        print(f"{'policy':8} {'seed':>4} {'sim':>7} {'runtime':>8} {'gap pp':>7}  {'swaps s/r':>9}  "
              f"{'evict s/r':>9}  wall s")
        for r in rows:
            print(f"{r['policy']:8} {r['seed']:>4} {100 * r['sim']:6.1f}% {100 * r['runtime']:7.1f}%"
                  f" {r['gap_pp']:+7.1f}"
                  f"  {r['sim_swaps']:>4}/{r['runtime_swaps']:<4}  {r['sim_evictions']:>4}/{r['runtime_evictions']:<4}"
                  f"  {r['runtime_wall_s']:.1f}")
        print()
        print(f"{'policy':8} {'mean sim':>9} {'mean runtime':>13} {'mean gap pp':>12} {'max |gap| pp':>13}  check")
        for p, v in summary.items():
            print(f"{p:8} {100 * v['mean_sim']:8.1f}% {100 * v['mean_runtime']:12.1f}% {v['mean_gap_pp']:+12.1f}"
                  f" {v['max_abs_gap_pp']:13.1f}  {'pass' if v['pass'] else 'FAIL'} (|mean gap| <= {a.tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
