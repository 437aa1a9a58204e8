"""Experiment 2: ablations of the qlm policy, one LLM serving operation (LSO) at a time.

    python -m experiments.paper.ablations [--quick] [--out out/paper/ablations] [--img-dir docs/img]

Variants (all on the same workload and seed):

- ``qlm``: the full policy (MILP planner, eviction, load balancing, swapping, sleep mode);
- ``no-eviction``: ``evict_below=0`` (the estimator never triggers an eviction);
- ``no-balancing``: ``balance=False`` (no stealing across virtual queues);
- ``no-swapping``: ``swapping=False`` (a group only goes to an instance already running its model);
- ``no-pull-limit``: ``pull_limit=False`` (virtual-queue heads are dispatched without the batch-capacity
  limit, so the engines' own queues hold the backlog);
- ``greedy-planner``: ``qlm-greedy`` (swap-aware greedy EDF instead of the MILP);
- ``mean-only-estimator``: ``estimator="mean-only"`` (the QLM paper's ``n * mean_tokens /
  token_throughput`` estimator, :class:`qlm.estimator.MeanOnlyEstimator`, in place of ours for the
  planner's service times and the admission predictions that trigger evictions);
- ``cold-restarts``: qlm on the scenario with ``sleep_mode: false`` in every pool (a model
  swap reloads weights from disk instead of waking a sleeping engine);
- ``fcfs`` and ``fcfs-cold``: the vLLM-as-deployed baseline on both scenario variants.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.paper import common as c

MODULE = "experiments.paper.ablations"
FULL_LOADS = (1.0, 1.5)
QUICK_LOADS = (1.0,)

# variant -> (policy, params, cold restarts?, what it switches off)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool, str]] = {
    "qlm": ("qlm", {}, False, "nothing (full policy)"),
    "no-eviction": ("qlm", {"evict_below": 0.0}, False, "request eviction"),
    "no-balancing": ("qlm", {"balance": False}, False, "load balancing"),
    "no-swapping": ("qlm", {"swapping": False}, False, "model swapping (groups wait for their model)"),
    "no-pull-limit": ("qlm", {"pull_limit": False}, False, "request-pulling limits (engines queue the backlog)"),
    "greedy-planner": ("qlm-greedy", {}, False, "MILP global scheduler (greedy EDF planner instead)"),
    "mean-only-estimator": ("qlm", {"estimator": "mean-only"}, False,
                            "our RWT estimator (the paper's mean-only one plans and predicts)"),
    "cold-restarts": ("qlm", {}, True, "vLLM sleep mode (swaps are cold restarts)"),
    "fcfs": ("fcfs", {}, False, "baseline"),
    "fcfs-cold": ("fcfs", {}, True, "baseline, cold restarts"),
}

# ablations not switchable in the policy, hence not run: (ablation, why)
NOT_AVAILABLE: list[tuple[str, str]] = []


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=None, help="comma-separated scenarios (default wa,wb,wc; quick: wa,wb)")
    p.add_argument("--loads", default=None, help=f"comma-separated load multipliers (default {FULL_LOADS})")
    p.add_argument("--variants", default=",".join(VARIANTS))
    c.add_run_args(p, "wa and wb at load 1 only (about 2 minutes on 2 cores)", Path("out/paper/ablations"))
    return p.parse_args(argv)


def tables(rows: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for wl in dict.fromkeys(r["workload"] for r in rows):
        wrows = [r for r in rows if r["workload"] == wl]
        classes = c.classes_of(wrows)
        full = {r["load"]: r for r in wrows if r["variant"] == "qlm"}
        head = ["load", "variant", "switched off", "SLO met", "vs full qlm", *classes, "req/s", "GPU util",
                "swaps", "cold starts", "evictions"]
        body = []
        for r in wrows:
            ref = full.get(r["load"])
            delta = "" if ref is None else f"{100 * (r['slo_attainment'] - ref['slo_attainment']):+.1f} pt"
            body.append([f"{r['load']:g}", r["variant"], VARIANTS[r["variant"]][3], c.pct(r["slo_attainment"]), delta,
                         *(c.pct(r["slo_attainment_by_class"].get(k)) for k in classes), c.num(r["throughput_rps"]),
                         c.pct(r["gpu_utilization"]), r["model_swaps"], r["cold_starts"],
                         "" if r.get("evictions") is None else r["evictions"]])
        parts.append(f"### Workload {wl}\n\n" + c.md_table(head, body))
    if NOT_AVAILABLE:
        parts.append("### Not available (not switchable in the policy; not run)\n\n"
                     + c.md_table(["ablation", "why"], NOT_AVAILABLE))
    return "\n\n".join(parts)


def plot(rows: list[dict[str, Any]], paths: list[Path]) -> None:
    plt = c.setup_matplotlib()
    groups = list(dict.fromkeys((r["workload"], r["load"]) for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * len(variants) / 2), 3.6))
    width = 0.8 / max(len(variants), 1)
    for j, v in enumerate(variants):
        ys = [next((r["slo_attainment"] for r in rows if (r["workload"], r["load"]) == g and r["variant"] == v), 0.0)
              for g in groups]
        ax.bar([i + j * width for i in range(len(groups))], ys, width, label=v)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
    ax.set_xticklabels([f"{w} @ load {ld:g}" for w, ld in groups])
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=4, loc="lower center")
    ax.set_title("qlm ablations (simulated)", fontsize=10)
    fig.tight_layout()
    c.save_figure(fig, paths)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    workloads = (args.workloads or ("wa,wb" if args.quick else "wa,wb,wc")).split(",")
    loads = [float(x) for x in args.loads.split(",")] if args.loads else list(QUICK_LOADS if args.quick else FULL_LOADS)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    jobs = []
    for wl in workloads:
        base = c.scenario(wl)
        cold = c.cold_restarts(base)
        for load in loads:
            for v in names:
                policy, params, is_cold, _ = VARIANTS[v]
                jobs.append(c.Job(wl, v, cold if is_cold else base, policy, params, load=load, seed=args.seed))
    rows = c.run_jobs(jobs, args.jobs, "ablations")
    out: Path = args.out
    cmd = c.command_line(MODULE, argv)
    payload = {"experiment": "ablations", "command": cmd, "loads": loads, "seed": args.seed, "rows": rows,
               "variants": {k: {"policy": p, "params": pr, "cold_restarts": cold, "switched_off": what}
                            for k, (p, pr, cold, what) in VARIANTS.items() if k in names},
               "not_available": [{"ablation": a, "why": w} for a, w in NOT_AVAILABLE]}
    c.write_json(out / "ablations.json", payload)
    c.write_csv(out / "ablations.csv", rows)
    name = "results_ablations.png"
    plot(rows, [out / name] + ([args.img_dir / name] if args.img_dir else []))
    md = c.header("Ablations: qlm with one LSO switched off at a time", cmd)
    (out / "ablations.md").write_text(md + "\n" + tables(rows) + "\n", encoding="utf-8")
    print(f"wrote {out}/ablations.{{json,csv,md}} and plot")
    return payload


if __name__ == "__main__":
    main()
