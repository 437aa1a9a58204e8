"""Assemble ``docs/results.md`` from the experiments' outputs (no number typed by hand).

    python -m experiments.paper.report [--root out/paper] [--doc docs/results.md]

Reads ``<root>/<experiment>/<experiment>.{json,md}`` for every name in ``EXPERIMENTS``
(whatever exists), computes the comparison with the paper's headline claims and the acceptance
criteria from the JSON rows (the goodput criterion primarily on the volume axis, the request-rate
axis it names; on the load and capacity axes as well), and writes the document: the fixed
prose in ``experiments/paper/results_intro.md`` and ``experiments/paper/results_analysis.md``
(which contain no measured numbers) around the generated tables.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.paper import common as c
from experiments.paper.reproduce import acceptance

MODULE = "experiments.paper.report"
HERE = Path(__file__).resolve().parent
EXPERIMENTS = ("reproduce", "ablations", "traces", "goodput_volume", "goodput", "goodput_capacity")
TITLES = {"reproduce": "1. Paper reproduction", "ablations": "2. Ablations", "traces": "3. Real trace",
          "goodput_volume": "4. Goodput (volume axis: request rate)", "goodput": "4b. Goodput (load axis)",
          "goodput_capacity": "4c. Goodput (capacity axis)"}
PAPER_SLO_GAIN = (0.40, 0.90)  # "SLO attainment +40-90%" (relative)
PAPER_TPUT_GAIN = (0.20, 4.00)  # "throughput +20-400%"


def load(root: Path, name: str) -> tuple[dict[str, Any] | None, str | None]:
    j, m = root / name / f"{name}.json", root / name / f"{name}.md"
    data = json.loads(j.read_text(encoding="utf-8")) if j.exists() else None
    md = m.read_text(encoding="utf-8") if m.exists() else None
    return data, md


def _verdict(lo: float, hi: float, paper: tuple[float, float]) -> str:
    if hi < paper[0]:
        return "behind"
    if lo > paper[1]:
        return "ahead"
    return "level (ranges overlap)"


def paper_comparison(rep: dict[str, Any]) -> str:
    """qlm against FCFS (vLLM) and the best baseline per workload, over the whole load sweep."""
    rows = rep["rows"]
    head = ["workload", "loads", "SLO attainment gain over fcfs (relative)", "vs paper +40-90%",
            "gain over best baseline (pt)", "throughput gain over fcfs", "vs paper +20-400%",
            "GPU util qlm - fcfs (pt)"]
    body = []
    for wl in dict.fromkeys(r["workload"] for r in rows):
        by = {(r["policy"], r["load"]): r for r in rows if r["workload"] == wl}
        loads = sorted({ld for (p, ld) in by if p == "qlm" and ("fcfs", ld) in by})
        if not loads:
            continue
        slo = [by["qlm", ld]["slo_attainment"] / max(by["fcfs", ld]["slo_attainment"], 1e-9) - 1 for ld in loads]
        best = [by["qlm", ld]["slo_attainment"] - max(by[p, ld]["slo_attainment"] for p in c.BASELINES
                                                      if (p, ld) in by) for ld in loads]
        tput = [by["qlm", ld]["throughput_rps"] / max(by["fcfs", ld]["throughput_rps"], 1e-9) - 1 for ld in loads]
        util = [by["qlm", ld]["gpu_utilization"] - by["fcfs", ld]["gpu_utilization"] for ld in loads]
        body.append([
            wl, f"{loads[0]:g}-{loads[-1]:g}", f"{100 * min(slo):+.0f}% .. {100 * max(slo):+.0f}%",
            _verdict(min(slo), max(slo), PAPER_SLO_GAIN),
            f"{100 * min(best):+.1f} .. {100 * max(best):+.1f}",
            f"{100 * min(tput):+.0f}% .. {100 * max(tput):+.0f}%", _verdict(min(tput), max(tput), PAPER_TPUT_GAIN),
            f"{100 * min(util):+.1f} .. {100 * max(util):+.1f}",
        ])
    return ("### qlm against the paper's headline claims (computed from `reproduce.json`)\n\n"
            "Ranges are over the load sweep; relative gain = qlm / fcfs - 1. \"vs paper\" compares the range "
            "with the paper's claimed range.\n\n" + c.md_table(head, body))


def acceptance_summary(rep: dict[str, Any] | None, gp: dict[str, Any] | None, title: str = "",
                       axis: str = "", missing: str = "") -> str:
    """The criteria as computed from the outputs; goodput lines name ``axis`` when given, and
    ``missing`` is said when ``gp`` is absent."""
    lines = [f"### Acceptance criteria (computed){': ' + title if title else ''}", ""]
    if rep is not None:
        # recomputed from the rows, so the rule in reproduce.acceptance applies to old outputs too
        for chk in (acceptance(rep["rows"], wl) for wl in dict.fromkeys(r["workload"] for r in rep["rows"])):
            if chk["workload"] not in ("wa", "wb"):
                continue
            pts = chk["points"]
            verdicts = ", ".join(f"load {p['load']:g}: {p['verdict']}" for p in pts) or "no grid point"
            kn = "n/a" if chk["knee"] is None else f"{chk['knee']:.2f}" + ("" if chk["knee_found"] else
                                                                          " (FCFS never fell below 90% on the grid: "
                                                                          "every grid load checked)")
            ok = "HOLDS" if chk.get("holds") else ("holds only with ties" if chk.get("holds_or_ties")
                                                   else "DOES NOT HOLD")
            lines.append(f"- qlm beats every baseline on {chk['workload']} from 50% to 150% of the knee "
                         f"(knee {kn}): **{ok}** ({verdicts}).")
    if gp is not None:
        for r in gp["ratios"]:
            target = gp["targets_vs_fcfs_at_90"].get(r["workload"])
            if r["baseline"] != "fcfs" or r["level"] != 0.9 or target is None:
                continue
            if r["ratio"] is None:
                verdict = (f"**CANNOT BE CHECKED**: fcfs goodput {r['baseline_goodput']}, qlm {r['qlm']} "
                           "(fcfs never crossed 90% inside the search range)")
            else:
                bound = ">= " if r["lower_bound"] else ""
                verdict = (f"{bound}{r['ratio']:.2f}x (qlm {r['qlm']}, fcfs {r['baseline_goodput']}): "
                           f"**{'HOLDS' if r['ratio'] >= target else 'DOES NOT HOLD'}**")
            on = f" ({axis})" if axis else ""
            lines.append(f"- qlm goodput at 90% >= {target:g}x fcfs's on {r['workload']}{on}: {verdict}.")
    elif missing:
        lines.append(f"- {missing}")
    return "\n".join(lines)


def images(n: str) -> list[Path]:
    """``docs/img/results_<n>*.png``, less those of experiments whose names extend ``n``."""
    others = [m for m in EXPERIMENTS if m != n and m.startswith(n)]
    return [i for i in sorted(Path("docs/img").glob(f"results_{n}*.png"))
            if not any(i.stem.startswith(f"results_{m}") for m in others)]


def demote(md: str) -> str:
    """Experiment markdown starts at '##'; keep it one level below the document's sections."""
    return "\n".join(("#" + ln) if ln.startswith("#") else ln for ln in md.splitlines())


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("out/paper"))
    p.add_argument("--doc", type=Path, default=Path("docs/results.md"))
    args = p.parse_args(argv)
    loaded = {n: load(args.root, n) for n in EXPERIMENTS}
    parts = [(HERE / "results_intro.md").read_text(encoding="utf-8").rstrip()]
    commands = [f"    {d['command']}" for d, _ in loaded.values() if d is not None]
    parts.append("## Commands that produced this page\n\n" + "\n".join(commands)
                 + f"\n    {c.command_line(MODULE, argv)}\n")
    rep = loaded["reproduce"][0]
    gpv, gp, gpc = loaded["goodput_volume"][0], loaded["goodput"][0], loaded["goodput_capacity"][0]
    summary = []
    if rep is not None:
        summary.append(paper_comparison(rep))
    # the criterion names a request rate: the volume axis is the primary check
    summary.append(acceptance_summary(
        rep, gpv, axis="volume axis: request rate",
        missing=f"qlm goodput at 90% vs fcfs's (volume axis: request rate): **NOT RUN** (no "
        f"`{args.root}/goodput_volume/goodput_volume.json`; `python -m experiments.paper.goodput --axis volume`)."))
    if gp is not None:
        summary.append(acceptance_summary(None, gp, "the same goodput criterion on the load axis (`--load`)"))
    if gpc is not None:
        summary.append(acceptance_summary(None, gpc, "the same goodput criterion on the capacity axis (fleet / X)"))
    parts.append("## Summary\n\n" + "\n\n".join(summary))
    for n in EXPERIMENTS:
        data, md = loaded[n]
        body = demote(md) if md else f"Not run (no `{args.root}/{n}/{n}.md`)."
        imgs = images(n) if data is not None else []
        img_md = "\n".join(f"![{i.stem}](img/{i.name})" for i in imgs)
        parts.append("\n\n".join(x for x in (f"## {TITLES[n]}", img_md, body) if x))
    parts.append((HERE / "results_analysis.md").read_text(encoding="utf-8").rstrip())
    text = "\n\n".join(parts) + "\n"
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(text, encoding="utf-8")
    print(f"wrote {args.doc}")
    return text


if __name__ == "__main__":
    main()
