"""Accuracy of the RWT estimator in the simulator, against the QLM paper's mean-only baseline.

Runs the ``qlm`` policy on each configured run, prints Markdown tables of the ``estimator``
block (ours vs the baseline, then where the error is: per SLO class and prediction path) and
writes a reliability plot of P(meet SLO).

    python experiments/estimator_accuracy.py [--out docs/img/estimator_reliability.png]
        [--doc docs/estimator.md] [--json out/estimator_accuracy.json] [--runs wa,wb]

``--doc`` replaces the block between ``<!-- estimator-accuracy:begin -->`` and
``<!-- estimator-accuracy:end -->`` in that file with the tables (generated: do not edit
them by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qlm.sim.runner import RunSpec, run_policy  # noqa: E402
from qlm.workload.scenario import Scenario, load_scenario, parse_scenario  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the experiments package sits beside it
from experiments.paper.common import git_head, md_table  # noqa: E402

TRACE = REPO.parent / "shared" / "data" / "azure2023_conv.csv"  # ../shared beside the repo
RUNS: list[dict[str, Any]] = [
    {"label": "small", "scenario": "small"},
    {"label": "wa", "scenario": "wa"},
    {"label": "wa-seed-1", "name": "wa, seed 1", "scenario": "wa", "seed": 1},
    # wa at 3x its load: qlm misses interactive SLOs, so P(meet) is exercised between 0 and 1
    {"label": "wa-load-3", "name": "wa at load 3 (SLOs missed)", "scenario": "wa", "load": 3.0},
    {"label": "wb", "scenario": "wb"},
    # wc (long prompts) misses some SLOs: the only run here whose P(meet) is not all near 1
    {"label": "wc", "scenario": "wc"},
    {"label": "trace", "name": "azure-conv trace on wa (5,000 rows, load 8)", "scenario": "wa",
     "trace": TRACE, "trace_limit": 5000, "load": 8.0},
    # diagnostic: wa's batch-2 burst alone. Its predictions are made in the first 5 s, before
    # any interactive or batch-1 request exists; in wa those arrive later and overtake it.
    {"label": "wa-batch-2", "name": "diagnostic: wa, batch-2 stream only", "scenario": "wa",
     "only": "batch-2"},
    # diagnostic: wa without the configured steady rates (interactive 20 req/s): predictions
    # made before the interactive stream starts (5 s) see a rate of 0
    {"label": "wa-no-rate-prior", "name": "diagnostic: wa without arrival-rate priors", "scenario": "wa",
     "params": {"rate_priors": False}},
]
BEGIN, END = "<!-- estimator-accuracy:begin -->", "<!-- estimator-accuracy:end -->"


def command(cfg: dict[str, Any]) -> str:
    """The ``qlm simulate`` command equivalent to a run."""
    seed = cfg.get("seed", 0)
    if "only" in cfg:
        return (f"qlm simulate --scenario <{cfg['scenario']} with only its {cfg['only']} stream> "
                f"--policy qlm --seed {seed}")
    parts = ["qlm simulate", f"--scenario {cfg['scenario']}"]
    if "trace" in cfg:
        parts += [f"--trace {os.path.relpath(cfg['trace'], REPO)}", f"--trace-limit {cfg['trace_limit']}"]
    if cfg.get("load", 1.0) != 1.0:
        parts.append(f"--load {cfg['load']:g}")
    parts.append("--policy qlm")
    for key, value in cfg.get("params", {}).items():
        parts.append(f"--policy-param {key}={str(value).lower()}")
    parts += [f"--seed {seed}", "--json out.json"]
    return " ".join(parts)


def scenario(cfg: dict[str, Any]) -> Scenario:
    """The run's scenario; ``only``: keep the streams of that SLO class (same requests)."""
    sc = load_scenario(cfg["scenario"])
    if "only" not in cfg:
        return sc
    raw = sc.model_dump(mode="json")
    streams = raw["workload"]["streams"]
    total = raw["workload"]["requests"]
    shares = sum(s["share"] for s in streams)
    keep = [s for s in streams if s["slo_class"] == cfg["only"]]
    raw["workload"] = {"requests": round(total * sum(s["share"] for s in keep) / shares), "streams": keep}
    raw["name"] = cfg["label"]
    return parse_scenario(raw, cfg["label"])


def run(cfg: dict[str, Any]) -> tuple[dict[str, Any], float]:
    spec = RunSpec(scenario(cfg), seed=cfg.get("seed", 0), load=cfg.get("load", 1.0),
                   trace=cfg.get("trace"), trace_limit=cfg.get("trace_limit"))
    t = time.perf_counter()
    row, _ = run_policy(spec, "qlm", policy_params=cfg.get("params"))
    return row, time.perf_counter() - t


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(rows: list[tuple[dict[str, Any], dict[str, Any], float]], argv: list[str]) -> str:
    """The Markdown block: summary table, breakdown table, how it was made."""
    summary = []
    for cfg, row, wall in rows:
        e = row["estimator"]
        b = e["baseline"]
        summary.append([
            cfg.get("name", cfg["label"]), f"{e['waited_ge_1s']:,}", f"**{pct(e['wait_mape'])}**",
            pct(b["wait_mape"]), f"{num(e['wait_median_abs_error_s'])} / {num(b['wait_median_abs_error_s'])}",
            num(e["p_meet_calibration_error"]), pct(row["slo_attainment"]), f"{wall:.0f}",
        ])
    detail = []
    for cfg, row, _ in rows:
        for x in row["estimator"].get("breakdown", []):
            detail.append([cfg["label"], x["slo_class"], x["path"], f"{x['count']:,}", pct(x["wait_mape"]),
                           num(x["median_wait_s"], 1), num(x["median_ratio"])])
    runs = "\n".join(f"    {command(cfg)}" for cfg, _, _ in rows)
    cmd = " ".join(["python experiments/estimator_accuracy.py", *argv])
    return "\n".join([
        BEGIN,
        f"Generated by `{cmd}` (seed 0 unless named; {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, code at git {git_head()} plus the working tree). Each run "
        "is the equivalent of",
        "",
        runs,
        "",
        md_table(["run", "waited ≥ 1 s", "MdAPE ours", "MdAPE mean-only (paper)",
                  "median abs error s, ours / mean-only", "P(meet) calibration error", "SLO met (qlm)",
                  "wall s"], summary),
        "",
        "Where the error is (requests that waited ≥ 1 s; path `dispatched`: sent to an engine at "
        "admission, its prefill predicted; `replay`: left queued, the pulling rule replayed; "
        "ratio: median predicted / actual wait):",
        "",
        md_table(["run", "SLO class", "path", "count", "MdAPE", "median wait s", "median ratio"], detail),
        END,
    ])


def write_doc(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + block + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs/img/estimator_reliability.png"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--doc", type=Path, default=None, help="rewrite the generated block of this file")
    ap.add_argument("--runs", default=None, help=f"comma-separated subset of {[c['label'] for c in RUNS]}")
    args = ap.parse_args(argv)
    wanted = None if args.runs is None else set(args.runs.split(","))
    rows = []
    for cfg in RUNS:
        if wanted is not None and cfg["label"] not in wanted:
            continue
        if "trace" in cfg and not cfg["trace"].exists():
            print(f"skipping {cfg['label']}: {cfg['trace']} not found", file=sys.stderr)
            continue
        row, wall = run(cfg)
        rows.append((cfg, row, wall))
    block = report(rows, argv)
    print(block)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for k, (cfg, row, _) in enumerate(rows):
        rel = row["estimator"]["reliability"]
        line, = ax.plot([r["p_mean"] for r in rel], [r["observed"] for r in rel], "o-",
                        label=cfg.get("name", cfg["label"]), markersize=4)
        for r in rel:  # how many requests each point stands for (stacked where runs share a corner)
            corner = r["p_mean"] > 0.95 or r["p_mean"] < 0.05
            ax.annotate(f"{r['count']:,}", (r["p_mean"], r["observed"]), textcoords="offset points",
                        xytext=(-30 if r["p_mean"] > 0.95 else 4, -9 - 7 * k if corner else -9), fontsize=6,
                        color=line.get_color())
    ax.set_xlabel("predicted P(first token before TTFT deadline)")
    ax.set_ylabel("observed fraction")
    ax.set_title("RWT estimator reliability (qlm policy)")
    ax.legend(fontsize=7)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({cfg["label"]: {**row["estimator"], "slo_attainment": row["slo_attainment"],
                                                        "wall_s": wall} for cfg, row, wall in rows}, indent=2))
    if args.doc is not None:
        write_doc(args.doc, block)


if __name__ == "__main__":
    main()
