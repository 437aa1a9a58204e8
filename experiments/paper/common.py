"""Shared machinery of the paper experiments: run grids of simulations in worker processes
with a progress bar, write JSON/CSV/markdown, draw plots, build scenario variants.

Every number in the markdown tables comes from the rows the simulations return; nothing is
typed by hand. Runs are deterministic (fixed seeds; the simulator runs in virtual time).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from qlm.sim.runner import RunSpec, run_policy
from qlm.workload.scenario import Scenario, load_scenario, parse_scenario

PAPER_POLICIES = ("qlm", "fcfs", "edf", "shepherd")
BASELINES = ("fcfs", "edf", "shepherd")
REPO = Path(__file__).resolve().parents[2]
DEFAULT_TRACE = REPO.parent / "shared" / "data" / "azure2023_conv.csv"


@dataclass(frozen=True)
class Job:
    """One simulation: a scenario (variant), a policy with parameters, a load, a request volume
    (every stream's request count times ``volume`` over the same span) and a seed."""

    workload: str
    variant: str
    scenario: Scenario
    policy: str
    params: dict[str, Any] = field(default_factory=dict)
    load: float = 1.0
    seed: int = 0
    trace: Path | None = None
    trace_limit: int | None = None
    volume: float = 1.0

    def __post_init__(self) -> None:
        RunSpec(self.scenario, trace=self.trace, volume=self.volume)  # the same check, at job creation

    @property
    def cost_hint(self) -> float:
        """Rough relative cost, to start the slow runs first (qlm on big scenarios)."""
        slow = 20.0 if self.policy.startswith("qlm") else 1.0
        return slow * self.load * self.volume * len(self.scenario.cluster.pools)


def run_job(job: Job) -> dict[str, Any]:
    """Run one job in this process; returns the metrics row with the job's coordinates."""
    spec = RunSpec(job.scenario, seed=job.seed, load=job.load, trace=job.trace, trace_limit=job.trace_limit,
                   volume=job.volume)
    row, _ = run_policy(spec, job.policy, policy_params=dict(job.params))
    est = row.pop("estimator", None)
    out: dict[str, Any] = {
        "workload": job.workload,
        "variant": job.variant,
        "policy": job.policy,
        "load": job.load,
        "seed": job.seed,
    }
    if job.volume != 1.0:
        out["volume"] = job.volume
    out.update({k: v for k, v in row.items() if k != "policy"})
    if isinstance(est, dict):
        out["replans"] = est.get("replans")
        out["evictions"] = est.get("evictions")
        out["planner"] = est.get("planner")
    return out


def run_jobs(jobs: Sequence[Job], workers: int, description: str) -> list[dict[str, Any]]:
    """Run every job (``workers`` processes, 1 = in this process) under a rich progress bar;
    rows come back in job order whatever order they finish in."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost_hint)
    with _progress() as progress:
        task = progress.add_task(description, total=len(jobs))
        if workers <= 1:
            for i in order:
                results[i] = run_job(jobs[i])
                progress.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                pending: dict[Future[dict[str, Any]], int] = {pool.submit(run_job, jobs[i]): i for i in order}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        results[pending.pop(fut)] = fut.result()
                        progress.advance(task)
    return [r for r in results if r is not None]


class Runner:
    """Memoised, batched job execution for searches (goodput): callers ask for batches of
    jobs; results are cached by (workload, variant, policy, params, load, volume, seed)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.cache: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None

    @staticmethod
    def key(job: Job) -> tuple[Any, ...]:
        return (job.workload, job.variant, job.policy, tuple(sorted(job.params.items())), round(job.load, 9),
                round(job.volume, 9), job.seed)

    def run(self, jobs: Iterable[Job], on_done: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        jobs = list(jobs)
        todo = {self.key(j): j for j in jobs if self.key(j) not in self.cache}
        if self._pool is None:
            for k, j in todo.items():
                self.cache[k] = run_job(j)
                if on_done:
                    on_done()
        else:
            futs = {self._pool.submit(run_job, j): k for k, j in sorted(todo.items(), key=lambda kv: -kv[1].cost_hint)}
            while futs:
                done, _ = wait(futs, return_when=FIRST_COMPLETED)
                for fut in done:
                    self.cache[futs.pop(fut)] = fut.result()
                    if on_done:
                        on_done()
        return [self.cache[self.key(j)] for j in jobs]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=False,
    )


def progress_bar() -> Progress:
    return _progress()


# ---- scenarios -------------------------------------------------------------------------------


def scenario(name: str) -> Scenario:
    return load_scenario(name)


def variant(base: Scenario, name: str, edit: Callable[[dict[str, Any]], None]) -> Scenario:
    """A programmatic variant of a scenario: dump, edit the dict, validate again."""
    raw = base.model_dump(mode="json")
    edit(raw)
    raw["name"] = f"{base.name}-{name}"
    return parse_scenario(raw, f"{base.name}:{name}")


def cold_restarts(base: Scenario) -> Scenario:
    """The scenario with vLLM sleep mode off in every pool: a model swap is a cold restart."""

    def edit(raw: dict[str, Any]) -> None:
        for pool in raw["cluster"]["pools"]:
            pool["sleep_mode"] = False

    return variant(base, "cold", edit)


def shrink(base: Scenario, factor: float) -> Scenario:
    """The scenario on a fleet ``factor`` times smaller (each pool's node count divided by
    ``factor``, rounded, at least 1): the same requests on less capacity, bursts included."""

    def edit(raw: dict[str, Any]) -> None:
        for pool in raw["cluster"]["pools"]:
            pool["nodes"] = max(1, round(pool["nodes"] / factor))

    return variant(base, f"fleet-div-{factor:g}", edit)


# ---- output ----------------------------------------------------------------------------------


def git_head() -> str:
    """Short hash of the repository's HEAD, or ``unknown``."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "git_head": git_head(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_cores": os.cpu_count(),
        "gpu": "none (simulation in virtual time)",
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row with nested per-class dicts flattened into ``<key>.<class>`` columns."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            for c, x in v.items():
                out[f"{k}.{c}"] = x
        else:
            out[k] = v
    return out


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    flats = [flat(r) for r in rows]
    cols: list[str] = []
    for r in flats:
        cols.extend(c for c in r if c not in cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(flats)


def pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def num(x: Any, digits: int = 2) -> str:
    return "n/a" if x is None else f"{float(x):.{digits}f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def header(title: str, command: str, note: str = "") -> str:
    m = machine()
    text = (
        f"## {title}\n\n"
        f"Generated by `{command}` (regenerate with the same command; do not edit by hand).\n"
        f"Machine: {m['cpu_cores']} CPU cores, {m['gpu']}; Python {m['python']}; code at git {m['git_head']}.\n"
    )
    return text + (f"\n{note}\n" if note else "")


def classes_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        seen.extend(c for c in r.get("slo_attainment_by_class", {}) if c not in seen)
    order = {"interactive": 0, "batch-1": 1, "batch-2": 2}
    return sorted(seen, key=lambda c: (order.get(c, 9), c))


def setup_matplotlib() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that produced a result, as it would be typed."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m", module, *args]).strip()


def add_run_args(p: Any, quick_help: str, out: Path | None, out_help: str | None = None) -> None:
    """The options every experiment takes: --seed, --quick, --jobs, --out, --img-dir."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--out", type=Path, default=out, help=out_help)
    p.add_argument("--img-dir", type=Path, default=None, help="also save the plots here (e.g. docs/img)")


def save_figure(fig: Any, paths: Sequence[Path]) -> None:
    """Write ``fig`` to every path (folders created) and close it."""
    import matplotlib.pyplot as plt

    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
