"""Experiment 4: goodput, the highest load multiplier a policy sustains at a given SLO attainment.

    python -m experiments.paper.goodput [--quick] [--axis load|capacity] [--img-dir docs/img]

Per workload and policy, and per attainment level (90% and 99%), a search over ``--load``:
start at 1, multiply (or divide) by 4 until the level is bracketed (within [lo, hi], default
[1/16, 16]), then bisect geometrically until hi/lo <= 1 + tol. The reported goodput is the
largest load seen to meet the level (a lower bound, within a factor 1 + tol of the crossing);
">= hi" and "< lo" mark searches that left the range. The search assumes attainment falls
with load; every evaluated point is kept in the JSON, so a non-monotone curve shows there.
``--axis capacity`` searches instead over a fleet-shrink factor X (the same requests on every
pool's node count / X): ``--load`` keeps burst sizes and start times, so it barely stresses
burst-dominated workloads (wb), while a smaller fleet stresses everything.
All searches run concurrently in worker processes; results are cached per (workload, policy,
load), so the 90% and 99% searches share their runs.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.paper import common as c

MODULE = "experiments.paper.goodput"
LEVELS = (0.9, 0.99)


@dataclass
class Search:
    """Bracketing + geometric bisection for one (workload, policy, level)."""

    workload: str
    policy: str
    level: float
    lo_bound: float
    hi_bound: float
    tol: float
    ok: float | None = None  # largest load known to meet the level
    bad: float | None = None  # smallest load known to miss it
    points: dict[float, float] = field(default_factory=dict)

    def update(self, load: float, attainment: float) -> None:
        self.points[load] = attainment
        if attainment >= self.level - 1e-12:
            self.ok = load if self.ok is None else max(self.ok, load)
        else:
            self.bad = load if self.bad is None else min(self.bad, load)

    def next_load(self) -> float | None:
        if self.ok is None and self.bad is None:
            return 1.0
        if self.bad is None:  # all points met: go up
            assert self.ok is not None
            return None if self.ok >= self.hi_bound else min(self.ok * 4, self.hi_bound)
        if self.ok is None:  # all points missed: go down
            return None if self.bad <= self.lo_bound else max(self.bad / 4, self.lo_bound)
        if self.bad / self.ok <= 1 + self.tol:
            return None
        return _round(math.sqrt(self.ok * self.bad))

    def result(self) -> dict[str, Any]:
        if self.ok is None:
            text = f"< {self.lo_bound:g}"
        elif self.bad is None:
            text = f">= {self.hi_bound:g}"
        else:
            text = f"{self.ok:.3g}"
        return {"workload": self.workload, "policy": self.policy, "level": self.level, "goodput": self.ok,
                "first_miss": self.bad, "censored": self.ok is None or self.bad is None, "text": text,
                "points": [{"load": k, "slo_attainment": v} for k, v in sorted(self.points.items())]}


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=None, help="comma-separated scenarios (default wa,wb,wc; quick: wa,wb)")
    p.add_argument("--policies", default=",".join(c.PAPER_POLICIES))
    p.add_argument("--axis", choices=("load", "capacity"), default="load",
                   help="load: the --load multiplier (rates, burst spreads); capacity: the same requests on "
                   "a fleet X times smaller (every pool's node count / X, at least 1), which stresses bursts too")
    p.add_argument("--lo", type=float, default=None, help="lowest value tried (default 1/16; capacity: 1/2)")
    p.add_argument("--hi", type=float, default=None, help="highest value tried (default 16; capacity: 8)")
    p.add_argument("--tol", type=float, default=None, help="stop when hi/lo <= 1 + tol (default 0.1; quick: 0.3)")
    p.add_argument("--replot", action="store_true", help="redo tables and plot from the existing JSON")
    c.add_run_args(p, "wa and wb, tol 0.3, hi 8 (about 2-3 minutes on 2 cores)", None,
                   "default out/paper/goodput (capacity: goodput_capacity)")
    return p.parse_args(argv)


def make_job(workload: str, base: c.Scenario, policy: str, x: float, axis: str, seed: int) -> c.Job:
    """The run behind one search point: ``--load x``, or load 1 on a fleet ``x`` times smaller."""
    if axis == "capacity":
        return c.Job(workload, f"fleet/{x:g}", c.shrink(base, x), policy, load=1.0, seed=seed)
    return c.Job(workload, "base", base, policy, load=x, seed=seed)


def run_searches(searches: list[Search], workers: int, seed: int, axis: str = "load") -> int:
    """Drive every search to its end; returns the number of simulations run."""
    scen = {s.workload: c.scenario(s.workload) for s in searches}
    cache: dict[tuple[str, str, float], float] = {}
    pending: dict[tuple[str, str, float], Future[dict[str, Any]]] = {}
    waiting: dict[tuple[str, str, float], list[Search]] = {}
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    runs = 0

    def advance(s: Search) -> None:
        while (load := s.next_load()) is not None:
            key = (s.workload, s.policy, load)
            if key in cache:
                s.update(load, cache[key])
                continue
            waiting.setdefault(key, []).append(s)
            if key not in pending:
                job = make_job(s.workload, scen[s.workload], s.policy, load, axis, seed)
                if pool is None:
                    pending[key] = _done_future(c.run_job(job))
                else:
                    pending[key] = pool.submit(c.run_job, job)
            return

    try:
        with c.progress_bar() as progress:
            task = progress.add_task("goodput: searches", total=len(searches))
            for s in searches:
                advance(s)
            while pending:
                done, _ = wait(list(pending.values()), return_when=FIRST_COMPLETED)
                for key in [k for k, f in pending.items() if f in done]:
                    row = pending.pop(key).result()
                    runs += 1
                    cache[key] = row["slo_attainment"]
                    for s in waiting.pop(key, []):
                        s.update(key[2], cache[key])
                        advance(s)
                        if s.next_load() is None:
                            progress.advance(task)
    finally:
        if pool is not None:
            pool.shutdown()
    return runs


def _done_future(value: dict[str, Any]) -> Future[dict[str, Any]]:
    f: Future[dict[str, Any]] = Future()
    f.set_result(value)
    return f


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """qlm's goodput over each baseline's, per workload and level (None when either is censored)."""
    out = []
    for r in results:
        if r["policy"] == "qlm":
            continue
        q = next((x for x in results if x["workload"] == r["workload"] and x["level"] == r["level"]
                  and x["policy"] == "qlm"), None)
        if q is None:
            continue
        # a ratio needs the baseline's crossing inside the range; qlm above the range gives a lower bound
        ratio = None
        if q["goodput"] and r["goodput"] and not r["censored"]:
            ratio = q["goodput"] / r["goodput"]
        out.append({"workload": r["workload"], "level": r["level"], "baseline": r["policy"], "ratio": ratio,
                    "lower_bound": q["censored"] and q["goodput"] is not None,
                    "qlm": q["text"], "baseline_goodput": r["text"]})
    return out


def tables(results: list[dict[str, Any]], rats: list[dict[str, Any]], targets: dict[str, float],
           what: str = "load multiplier") -> str:
    policies = list(dict.fromkeys(r["policy"] for r in results))
    parts = []
    for level in LEVELS:
        head = ["workload", *policies]
        body = []
        for wl in dict.fromkeys(r["workload"] for r in results):
            cells = {r["policy"]: r["text"] for r in results if r["workload"] == wl and r["level"] == level}
            body.append([wl, *(cells.get(p, "-") for p in policies)])
        parts.append(f"### Goodput at {100 * level:g}% SLO attainment (highest {what} sustained)\n\n"
                     + c.md_table(head, body))
    head = ["workload", "level", "baseline", "qlm", "baseline goodput", "qlm / baseline", "target", "met"]
    # n/a: the baseline never crossed the level inside the search range (or qlm fell below it)
    body = []
    for r in rats:
        target = targets.get(r["workload"]) if r["baseline"] == "fcfs" and r["level"] == 0.9 else None
        ratio = "n/a" if r["ratio"] is None else (">= " if r["lower_bound"] else "") + f"{r['ratio']:.2f}x"
        met = "" if target is None else ("n/a" if r["ratio"] is None else ("yes" if r["ratio"] >= target else "no"))
        body.append([r["workload"], f"{100 * r['level']:g}%", r["baseline"], r["qlm"], r["baseline_goodput"], ratio,
                     "" if target is None else f">= {target:g}x", met])
    parts.append("### qlm's goodput relative to each baseline\n\n" + c.md_table(head, body))
    return "\n\n".join(parts)


def plot(results: list[dict[str, Any]], paths: list[Path], ylabel: str = "load multiplier sustained") -> None:
    plt = c.setup_matplotlib()
    wls = list(dict.fromkeys(r["workload"] for r in results))
    policies = list(dict.fromkeys(r["policy"] for r in results))
    fig, axes = plt.subplots(1, len(LEVELS), figsize=(5.5 * len(LEVELS), 3.4), squeeze=False)
    width = 0.8 / max(len(policies), 1)
    for ax, level in zip(axes[0], LEVELS, strict=True):
        for j, pol in enumerate(policies):
            ys = [next((r["goodput"] or 0.0 for r in results if r["workload"] == wl and r["policy"] == pol
                        and r["level"] == level), 0.0) for wl in wls]
            ax.bar([i + j * width for i in range(len(wls))], ys, width, label=pol)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))])
        ax.set_xticklabels(wls)
        ax.set_yscale("log", base=2)
        ax.set_ylabel(ylabel)
        ax.set_title(f"goodput at {100 * level:g}% SLO attainment", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("goodput (simulated; bars at the search's lower bound)", fontsize=10)
    fig.tight_layout()
    c.save_figure(fig, paths)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    workloads = (args.workloads or ("wa,wb" if args.quick else "wa,wb,wc")).split(",")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    tol = args.tol if args.tol is not None else (0.3 if args.quick else 0.1)
    cap = args.axis == "capacity"
    lo = args.lo if args.lo is not None else (0.5 if cap else 1 / 16)
    hi = args.hi if args.hi is not None else (8.0 if cap or args.quick else 16.0)
    searches = [Search(wl, pol, level, lo, hi, tol) for wl in workloads for pol in policies for level in LEVELS]
    stem = "goodput_capacity" if cap else "goodput"
    out: Path = args.out or Path("out/paper") / stem
    cmd = c.command_line(MODULE, argv)
    if args.replot:  # tables and plot again from the JSON of an earlier run (no simulation)
        old = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
        results, runs, cmd = old["results"], old["simulations"], old["command"]
    else:
        runs = run_searches(searches, args.jobs, args.seed, args.axis)
        results = [s.result() for s in searches]
    rats = ratios(results)
    targets = {"wa": 1.4, "wb": 2.0}
    payload = {"experiment": "goodput", "command": cmd, "axis": args.axis, "levels": list(LEVELS), "lo": lo, "hi": hi,
               "tol": tol,
               "seed": args.seed, "simulations": runs, "results": results, "ratios": rats,
               "targets_vs_fcfs_at_90": targets}
    if not args.replot:
        c.write_json(out / f"{stem}.json", payload)
    c.write_csv(out / f"{stem}.csv", [{k: v for k, v in r.items() if k != "points"} for r in results])
    name = "results_goodput.png" if not cap else "results_goodput_capacity.png"
    plot(results, [out / name] + ([args.img_dir / name] if args.img_dir else []),
         "fleet-shrink factor sustained" if cap else "load multiplier sustained")
    what = ("fleet-shrink factor (same requests on every pool's node count / X)" if cap
            else "load multiplier (`--load`)")
    note = (f"Axis: {what}. Search range [{lo:g}, {hi:g}], stop at hi/lo <= {1 + tol:g}; {runs} simulations. "
            "A goodput is the largest value seen to meet the level; `>= X` / `< X` = the search left the range.")
    md = c.header(f"Goodput ({args.axis} axis): highest {what.split(' (')[0]} sustained at 90% and 99% "
                  "SLO attainment", cmd, note)
    body = tables(results, rats, targets, what.split(" (")[0])
    (out / f"{stem}.md").write_text(md + "\n" + body + "\n", encoding="utf-8")
    print(f"wrote {out}/{stem}.{{json,csv,md}} and plot")
    return payload


if __name__ == "__main__":
    main()
