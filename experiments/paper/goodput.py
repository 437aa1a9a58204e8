"""Experiment 4: goodput, the highest multiplier (of requests, load or fleet shrink) a policy
sustains at a given SLO attainment.

    python -m experiments.paper.goodput [--quick] [--axis volume|load|capacity] [--img-dir docs/img]

Per workload and policy, and per attainment level (90% and 99%), a search over a multiplier X:
start at 1, multiply (or divide) by a step (4; volume axis: 2) until the level is bracketed
(within [lo, hi]), then bisect geometrically until hi/lo <= 1 + tol. The reported goodput is the largest X seen to meet
the level (a lower bound, within a factor 1 + tol of the crossing); ">= hi" and "< lo" mark
searches that left the range. The search assumes attainment falls with X; every evaluated
point is kept in the JSON, so a non-monotone curve shows there. Three axes:

- ``volume`` (the request-rate axis): every stream's request count times X over the same time
  span, so Poisson streams arrive X times faster and bursts bring X times as many requests in
  the same spread; default range [1/4, 8], step 2. A simulation's cost grows faster than X (qlm
  on wa and wb: 13x to 25x from X = 1 to 4), so the range stops at 8 and the step is small, so
  that a search does not jump past its crossing into a costly point.
- ``load`` (default, for continuity): ``--load X``, which multiplies Poisson rates and
  compresses burst spreads but keeps burst sizes and start times, so it barely stresses
  burst-dominated workloads (wb); default range [1/16, 16].
- ``capacity``: the same requests on a fleet X times smaller (every pool's node count / X);
  default range [1/2, 8].

All searches run concurrently in worker processes; results are cached per (workload, policy,
X), so the 90% and 99% searches share their runs.
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
    step: float = 4.0  # bracketing factor
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
            return None if self.ok >= self.hi_bound else min(self.ok * self.step, self.hi_bound)
        if self.ok is None:  # all points missed: go down
            return None if self.bad <= self.lo_bound else max(self.bad / self.step, self.lo_bound)
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


@dataclass(frozen=True)
class Axis:
    """What a search's X means, its default range and where its outputs go."""

    stem: str  # output folder and file stem under out/paper
    lo: float
    hi: float
    what: str  # the quantity, as the tables name it
    detail: str  # how X is applied
    ylabel: str
    step: float = 4.0  # the search's bracketing factor


AXES = {
    "load": Axis("goodput", 1 / 16, 16.0, "load multiplier", "`--load`", "load multiplier sustained"),
    "volume": Axis("goodput_volume", 0.25, 8.0, "request-volume multiplier",
                   "every stream's request count and rate times X over the same span, bursts included",
                   "request-volume multiplier sustained", step=2.0),
    "capacity": Axis("goodput_capacity", 0.5, 8.0, "fleet-shrink factor",
                     "same requests on every pool's node count / X", "fleet-shrink factor sustained"),
}


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=None, help="comma-separated scenarios (default wa,wb,wc; quick: wa,wb)")
    p.add_argument("--policies", default=",".join(c.PAPER_POLICIES))
    p.add_argument("--axis", choices=tuple(AXES), default="load",
                   help="volume: every stream's request count (and rate) times X over the same span, bursts "
                   "included (the request-rate axis); load: the --load multiplier (rates, burst spreads); "
                   "capacity: the same requests on a fleet X times smaller (every pool's node count / X, at "
                   "least 1)")
    p.add_argument("--lo", type=float, default=None,
                   help="lowest value tried (default 1/16; volume: 1/4; capacity: 1/2)")
    p.add_argument("--hi", type=float, default=None,
                   help="highest value tried (default 16; quick, volume, capacity: 8)")
    p.add_argument("--tol", type=float, default=None, help="stop when hi/lo <= 1 + tol (default 0.1; quick: 0.3)")
    p.add_argument("--replot", action="store_true", help="redo tables and plot from the existing JSON")
    c.add_run_args(p, "wa and wb, tol 0.3, hi 8 (load axis: about 2-3 minutes on 2 cores)", None,
                   "default out/paper/goodput (volume: goodput_volume; capacity: goodput_capacity)")
    return p.parse_args(argv)


def make_job(workload: str, base: c.Scenario, policy: str, x: float, axis: str, seed: int) -> c.Job:
    """The run behind one search point: ``--load x``, ``x`` times the requests over the same
    span, or load 1 on a fleet ``x`` times smaller."""
    if axis == "capacity":
        return c.Job(workload, f"fleet/{x:g}", c.shrink(base, x), policy, load=1.0, seed=seed)
    if axis == "volume":
        return c.Job(workload, "base", base, policy, load=1.0, volume=x, seed=seed)
    if axis == "load":
        return c.Job(workload, "base", base, policy, load=x, seed=seed)
    raise ValueError(f"unknown goodput axis {axis!r}; known: {sorted(AXES)}")


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
    axis = AXES[args.axis]
    lo = args.lo if args.lo is not None else axis.lo
    hi = args.hi if args.hi is not None else (min(axis.hi, 8.0) if args.quick else axis.hi)
    searches = [Search(wl, pol, level, lo, hi, tol, axis.step)
                for wl in workloads for pol in policies for level in LEVELS]
    stem = axis.stem
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
               "tol": tol, "step": axis.step,
               "seed": args.seed, "simulations": runs, "results": results, "ratios": rats,
               "targets_vs_fcfs_at_90": targets}
    if not args.replot:
        c.write_json(out / f"{stem}.json", payload)
    c.write_csv(out / f"{stem}.csv", [{k: v for k, v in r.items() if k != "points"} for r in results])
    name = f"results_{stem}.png"
    plot(results, [out / name] + ([args.img_dir / name] if args.img_dir else []), axis.ylabel)
    note = (f"Axis: {axis.what} ({axis.detail}). Search range [{lo:g}, {hi:g}], step {axis.step:g}, "
            f"stop at hi/lo <= {1 + tol:g}; "
            f"{runs} simulations. A goodput is the largest value seen to meet the level; `>= X` / `< X` = the "
            "search left the range.")
    md = c.header(f"Goodput ({args.axis} axis): highest {axis.what} sustained at 90% and 99% "
                  "SLO attainment", cmd, note)
    body = tables(results, rats, targets, axis.what)
    (out / f"{stem}.md").write_text(md + "\n" + body + "\n", encoding="utf-8")
    print(f"wrote {out}/{stem}.{{json,csv,md}} and plot")
    return payload


if __name__ == "__main__":
    main()
