"""Experiment 1: the QLM paper's evaluation in simulation.

    python -m experiments.paper.reproduce [--quick] [--out out/paper/reproduce] [--img-dir docs/img]

Workloads wa, wb, wc (paper scale: 30 x A10 + 50 x A100, 3,500 requests); policies qlm, fcfs,
edf, shepherd; a sweep over the load multiplier (``qlm simulate --load``) up to overload.
Writes ``reproduce.json`` / ``reproduce.csv`` (one row per run), ``reproduce.md`` (tables) and
``results_reproduce_<workload>.png`` (SLO attainment overall and per class, throughput, GPU
utilisation against load).

The *knee* of a workload is where FCFS (vLLM as deployed) falls to 90% SLO attainment,
interpolated on the sweep grid; the acceptance check compares qlm with every baseline at the
grid loads between 50% and 150% of the knee.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.paper import common as c

FULL_LOADS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
QUICK_LOADS = (0.5, 1.0, 2.0)
MODULE = "experiments.paper.reproduce"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="wa,wb,wc", help="comma-separated scenarios")
    p.add_argument("--policies", default=",".join(c.PAPER_POLICIES))
    p.add_argument("--loads", default=None, help=f"comma-separated load multipliers (default {FULL_LOADS})")
    c.add_run_args(p, f"loads {QUICK_LOADS} only (about 2 minutes on 2 cores)", Path("out/paper/reproduce"))
    return p.parse_args(argv)


def knee(rows: list[dict[str, Any]], policy: str = "fcfs", level: float = 0.9) -> tuple[float | None, bool]:
    """Load at which ``policy``'s attainment first falls below ``level`` (linear interpolation
    between grid points); (largest load, False) when it never does on the grid."""
    pts = sorted((r["load"], r["slo_attainment"]) for r in rows if r["policy"] == policy)
    if not pts:
        return None, False
    if pts[0][1] < level:
        return pts[0][0], True
    for (l0, a0), (l1, a1) in zip(pts, pts[1:], strict=False):
        if a0 >= level > a1:
            return l0 + (a0 - level) / (a0 - a1) * (l1 - l0), True
    return pts[-1][0], False


def acceptance(rows: list[dict[str, Any]], workload: str) -> dict[str, Any]:
    """qlm vs every baseline at the grid loads in [0.5, 1.5] x knee."""
    wrows = [r for r in rows if r["workload"] == workload]
    k, crossed = knee(wrows)
    out: dict[str, Any] = {"workload": workload, "knee": k, "knee_found": crossed, "points": []}
    if k is None:
        return out
    # no knee on the grid (FCFS never falls below 90%): every grid load is checked
    lo, hi = (0.5 * k, 1.5 * k) if crossed else (0.0, float("inf"))
    loads = sorted({r["load"] for r in wrows if lo - 1e-9 <= r["load"] <= hi + 1e-9})
    for load in loads:
        at = {r["policy"]: r["slo_attainment"] for r in wrows if r["load"] == load}
        if "qlm" not in at:
            continue
        best = max(((p, a) for p, a in at.items() if p in c.BASELINES), key=lambda pa: pa[1], default=None)
        if best is None:
            continue
        diff = at["qlm"] - best[1]
        verdict = "ahead" if diff > 1e-9 else ("tied" if abs(diff) <= 1e-9 else "behind")
        out["points"].append({"load": load, "qlm": at["qlm"], "best_baseline": best[0], "baseline": best[1],
                              "verdict": verdict})
    out["holds"] = bool(out["points"]) and all(p["verdict"] == "ahead" for p in out["points"])
    out["holds_or_ties"] = bool(out["points"]) and all(p["verdict"] != "behind" for p in out["points"])
    return out


def tables(rows: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for wl in dict.fromkeys(r["workload"] for r in rows):
        wrows = [r for r in rows if r["workload"] == wl]
        classes = c.classes_of(wrows)
        head = ["load", "policy", "SLO met", *classes, "req/s", "out tok/s", "GPU util", "swaps", "preempt", "done"]
        body = [
            [f"{r['load']:g}", r["policy"], c.pct(r["slo_attainment"]),
             *(c.pct(r["slo_attainment_by_class"].get(k)) for k in classes),
             c.num(r["throughput_rps"]), f"{r['output_tokens_per_s']:.0f}", c.pct(r["gpu_utilization"]),
             r["model_swaps"], r["preemptions"], f"{r['completed']}/{r['submitted']}"]
            for r in sorted(wrows, key=lambda r: (r["load"], r["policy"] != "qlm", r["policy"]))
        ]
        parts.append(f"### Workload {wl}\n\n" + c.md_table(head, body))
    head = ["workload", "knee (FCFS at 90%)", "load", "qlm", "best baseline", "its attainment", "qlm is"]
    body = []
    for chk in checks:
        kn = "n/a" if chk["knee"] is None else f"{chk['knee']:.2f}" + ("" if chk["knee_found"] else " (not reached)")
        if not chk["points"]:
            body.append([chk["workload"], kn, "-", "-", "-", "-", "no grid point in range"])
        for p in chk["points"]:
            body.append([chk["workload"], kn, f"{p['load']:g}", c.pct(p["qlm"]), p["best_baseline"],
                         c.pct(p["baseline"]), p["verdict"]])
    parts.append("### Acceptance: qlm vs the best baseline from 50% to 150% of the knee\n\n" + c.md_table(head, body))
    return "\n\n".join(parts)


def plot(rows: list[dict[str, Any]], workload: str, paths: list[Path]) -> None:
    plt = c.setup_matplotlib()
    wrows = [r for r in rows if r["workload"] == workload]
    classes = c.classes_of(wrows)
    Panel = tuple[str, Callable[[dict[str, Any]], Any]]
    panels: list[Panel] = [("SLO attainment (all)", lambda r: r["slo_attainment"])]

    def of_class(k: str) -> Callable[[dict[str, Any]], Any]:
        return lambda r: r["slo_attainment_by_class"].get(k)

    panels += [(f"SLO attainment ({k})", of_class(k)) for k in classes]
    panels += [("throughput (req/s)", lambda r: r["throughput_rps"])]
    panels += [("GPU utilisation", lambda r: r["gpu_utilization"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (title, get) in zip(axes[0], panels, strict=True):
        for pol in dict.fromkeys(r["policy"] for r in wrows):
            pts = sorted((r["load"], get(r)) for r in wrows if r["policy"] == pol and get(r) is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=pol)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("load multiplier")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"workload {workload} (simulated; 30 x A10 + 50 x A100)", fontsize=10)
    fig.tight_layout()
    c.save_figure(fig, paths)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    loads = [float(x) for x in args.loads.split(",")] if args.loads else list(QUICK_LOADS if args.quick else FULL_LOADS)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    jobs = [
        c.Job(wl, "base", c.scenario(wl), pol, load=load, seed=args.seed)
        for wl in workloads for load in loads for pol in policies
    ]
    rows = c.run_jobs(jobs, args.jobs, "reproduce: sweep")
    checks = [acceptance(rows, wl) for wl in workloads]
    out: Path = args.out
    cmd = c.command_line(MODULE, argv)
    payload = {"experiment": "reproduce", "command": cmd, "loads": loads, "seed": args.seed,
               "rows": rows, "acceptance": checks}
    c.write_json(out / "reproduce.json", payload)
    c.write_csv(out / "reproduce.csv", rows)
    for wl in workloads:
        name = f"results_reproduce_{wl}.png"
        plot(rows, wl, [out / name] + ([args.img_dir / name] if args.img_dir else []))
    note = ("SLO met = share of all submitted requests that finished within their class's TTFT target "
            "(rejected or unfinished = miss). req/s = completed / (last finish - first arrival).")
    md = c.header("Paper reproduction: SLO attainment, throughput and utilisation vs load", cmd, note)
    (out / "reproduce.md").write_text(md + "\n" + tables(rows, checks) + "\n", encoding="utf-8")
    print(f"wrote {out}/reproduce.{{json,csv,md}} and plots")
    return payload


if __name__ == "__main__":
    main()
