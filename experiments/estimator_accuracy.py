"""Accuracy of the RWT estimator in the simulator, against the QLM paper's mean-only baseline.

Runs the ``qlm`` policy on each configured run, prints a Markdown table of the ``estimator``
block (ours vs baseline) and writes a reliability plot of P(meet SLO).

    python experiments/estimator_accuracy.py [--out docs/img/estimator_reliability.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qlm.sim.runner import RunSpec, run_policy  # noqa: E402
from qlm.workload.scenario import load_scenario  # noqa: E402

TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "azure2023_conv.csv"  # ../shared beside the repo
RUNS: list[dict[str, Any]] = [
    {"label": "small", "scenario": "small"},
    {"label": "wa", "scenario": "wa"},
    {"label": "wb", "scenario": "wb"},
    {"label": "azure-conv trace on wa (5000 rows, load 8)", "scenario": "wa",
     "trace": TRACE, "trace_limit": 5000, "load": 8.0},
]


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    spec = RunSpec(load_scenario(cfg["scenario"]), seed=0, load=cfg.get("load", 1.0),
                   trace=cfg.get("trace"), trace_limit=cfg.get("trace_limit"))
    row, _ = run_policy(spec, "qlm")
    return row


def fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs/img/estimator_reliability.png"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for cfg in RUNS:
        if "trace" in cfg and not cfg["trace"].exists():
            continue
        rows.append((cfg["label"], run(cfg)))
    print("| run | waited >= 1 s | MdAPE (ours) | MdAPE (mean-only) | median abs err s (ours / "
          "mean-only) | P(meet) calibration error | SLO met |")
    print("|---|---|---|---|---|---|---|")
    for label, row in rows:
        e = row["estimator"]
        b = e["baseline"]
        print(f"| {label} | {e['waited_ge_1s']} | {fmt(e['wait_mape'], True)} | "
              f"{fmt(b['wait_mape'], True)} | {fmt(e['wait_median_abs_error_s'])} / "
              f"{fmt(b['wait_median_abs_error_s'])} | {fmt(e['p_meet_calibration_error'])} | "
              f"{fmt(row['slo_attainment'], True)} |")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for label, row in rows:
        rel = row["estimator"]["reliability"]
        ax.plot([r["p_mean"] for r in rel], [r["observed"] for r in rel], "o-", label=label,
                markersize=4)
    ax.set_xlabel("predicted P(first token before TTFT deadline)")
    ax.set_ylabel("observed fraction")
    ax.set_title("RWT estimator reliability (qlm policy)")
    ax.legend(fontsize=7)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    if args.json is not None:
        args.json.write_text(json.dumps({label: row["estimator"] for label, row in rows}, indent=2))


if __name__ == "__main__":
    main()
