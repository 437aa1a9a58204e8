"""Experiment 3: runs driven by a real trace (Azure LLM inference trace 2023, conversation).

    python -m experiments.paper.traces [--trace ../shared/data/azure2023_conv.csv] [--quick]

Each trace row becomes one request with the trace's prompt and output lengths; its model and
SLO class are drawn from the scenario's streams in proportion to their request counts (rules
in ``qlm/workload/traces.py``); ``--load X`` compresses the trace's time axis by X. The first
``--limit`` rows are used (default 3,500, the paper's trace size). Without the trace file the
experiment prints a note, writes nothing and exits 0.

Trace source: Azure/AzurePublicDataset (CC-BY 4.0), published with the Splitwise paper.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.paper import common as c

MODULE = "experiments.paper.traces"
FULL_SCALES = (4.0, 16.0, 32.0, 64.0)
QUICK_SCALES = (8.0, 32.0)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", type=Path, default=c.DEFAULT_TRACE, help="Azure trace CSV (or Mooncake JSONL)")
    p.add_argument("--workloads", default=None, help="scenarios whose cluster/streams map the trace "
                   "(default wa,wb; quick: wa)")
    p.add_argument("--policies", default=",".join(c.PAPER_POLICIES))
    p.add_argument("--scales", default=None, help=f"comma-separated load scales (default {FULL_SCALES})")
    p.add_argument("--limit", type=int, default=None, help="trace rows used (default 3500; quick: 1500)")
    c.add_run_args(p, f"wa, scales {QUICK_SCALES}, 1,500 rows", Path("out/paper/traces"))
    return p.parse_args(argv)


def tables(rows: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for wl in dict.fromkeys(r["workload"] for r in rows):
        wrows = [r for r in rows if r["workload"] == wl]
        classes = c.classes_of(wrows)
        head = ["scale", "policy", "SLO met", *classes, "req/s", "out tok/s", "GPU util", "swaps", "done"]
        body = [
            [f"{r['load']:g}", r["policy"], c.pct(r["slo_attainment"]),
             *(c.pct(r["slo_attainment_by_class"].get(k)) for k in classes), c.num(r["throughput_rps"]),
             f"{r['output_tokens_per_s']:.0f}", c.pct(r["gpu_utilization"]), r["model_swaps"],
             f"{r['completed']}/{r['submitted']}"]
            for r in sorted(wrows, key=lambda r: (r["load"], r["policy"] != "qlm", r["policy"]))
        ]
        parts.append(f"### Azure conversation trace on the {wl} cluster and streams\n\n" + c.md_table(head, body))
    return "\n\n".join(parts)


def plot(rows: list[dict[str, Any]], paths: list[Path]) -> None:
    plt = c.setup_matplotlib()
    wls = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, 2 * len(wls), figsize=(7.2 * len(wls), 3.2), squeeze=False)
    for i, wl in enumerate(wls):
        wrows = [r for r in rows if r["workload"] == wl]
        for ax, key, title in ((axes[0][2 * i], "slo_attainment", "SLO attainment"),
                               (axes[0][2 * i + 1], "throughput_rps", "throughput (req/s)")):
            for pol in dict.fromkeys(r["policy"] for r in wrows):
                pts = sorted((r["load"], r[key]) for r in wrows if r["policy"] == pol)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=pol)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("trace time compression")
            ax.set_title(f"{wl}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Azure LLM inference trace 2023 (conversation; CC-BY 4.0), simulated", fontsize=10)
    fig.tight_layout()
    c.save_figure(fig, paths)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    trace: Path = args.trace
    if not trace.exists():
        print(f"trace {trace} not found: skipping the trace experiment (pass --trace PATH)")
        return None
    workloads = (args.workloads or ("wa" if args.quick else "wa,wb")).split(",")
    scales = [float(x) for x in args.scales.split(",")] if args.scales else list(QUICK_SCALES if args.quick
                                                                                   else FULL_SCALES)
    limit = args.limit or (1500 if args.quick else 3500)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    jobs = [
        c.Job(wl, "azure-conv", c.scenario(wl), pol, load=s, seed=args.seed, trace=trace.resolve(), trace_limit=limit)
        for wl in workloads for s in scales for pol in policies
    ]
    rows = c.run_jobs(jobs, args.jobs, "traces")
    out: Path = args.out
    cmd = c.command_line(MODULE, argv)
    payload = {"experiment": "traces", "command": cmd, "trace": trace.name, "limit": limit, "scales": scales,
               "seed": args.seed, "rows": rows}
    c.write_json(out / "traces.json", payload)
    c.write_csv(out / "traces.csv", rows)
    name = "results_traces.png"
    plot(rows, [out / name] + ([args.img_dir / name] if args.img_dir else []))
    note = (f"Trace: `{trace.name}` (Azure LLM inference trace 2023, conversation; CC-BY 4.0), first {limit} rows; "
            "scale X = the trace's time axis compressed X times.")
    md = c.header("Real trace: Azure 2023 conversation trace at several load scales", cmd, note)
    (out / "traces.md").write_text(md + "\n" + tables(rows) + "\n", encoding="utf-8")
    print(f"wrote {out}/traces.{{json,csv,md}} and plot")
    return payload


if __name__ == "__main__":
    main()
