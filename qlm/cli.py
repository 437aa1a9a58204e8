"""The ``qlm`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from qlm.errors import ConfigError, QLMError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="qlm: SLO-aware queue management for LLM serving.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console() if Console().is_terminal else Console(width=160)  # piped: do not truncate the table


@app.callback()
def _root() -> None:
    """qlm: SLO-aware queue management for LLM serving."""



def fail(msg: str, code: int = 2) -> None:
    """One line on stderr, non-zero exit, no traceback."""
    err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(help="built-in name (small, wa, wb, wc) or YAML path")] = "small",
    policy: Annotated[str, typer.Option(help="comma-separated policies")] = "qlm,fcfs,edf,shepherd",
    seed: Annotated[int, typer.Option(help="seed of every random choice")] = 0,
    load: Annotated[float, typer.Option(help="arrival-rate multiplier (with --trace: time compression)")] = 1.0,
    trace: Annotated[Path | None, typer.Option(help="Azure CSV or Mooncake JSONL trace")] = None,
    trace_limit: Annotated[int | None, typer.Option(help="use only the first N trace rows")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    plot: Annotated[Path | None, typer.Option(help="write an SLO-attainment bar chart (PNG)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    dump_snapshots: Annotated[
        Path | None, typer.Option(help="write each epoch's solver input (qlm policy) to DIR/epoch-N.json")
    ] = None,
    policy_param: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE given to every policy (repeatable; YAML value), e.g. estimator=mean-only"),
    ] = None,
) -> None:
    """What would happen to my SLOs under this workload and cluster, with these policies?"""
    from qlm.policies import registry
    from qlm.sim.runner import RunSpec, prepare, run_policy
    from qlm.workload.scenario import load_scenario

    if load <= 0:
        fail(f"--load must be > 0 (got {load})")
    names = [p.strip() for p in policy.split(",") if p.strip()]
    if not names:
        fail("--policy names no policy")
    known = registry.available()
    for n in names:
        if n not in known:
            fail(f"--policy: unknown policy {n!r}; known: {', '.join(known)}")
    extra: dict[str, Any] = {}
    for item in policy_param or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            fail(f"--policy-param: expected KEY=VALUE, got {item!r}")
        extra[key.strip()] = yaml.safe_load(value) if value.strip() else None
    try:
        sc = load_scenario(scenario)
        spec = RunSpec(sc, seed=seed, load=load, trace=trace, trace_limit=trace_limit)
        prepared = prepare(spec)
    except (ConfigError, QLMError) as exc:
        fail(str(exc))
        return
    rows: list[dict[str, Any]] = []
    total = len(prepared[1])
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=quiet or not err.is_terminal, transient=True,
    ) as prog:
        for n in names:
            task = prog.add_task(f"{n:>9}", total=total)
            def advance(done: int, _total: int, task_id: TaskID = task) -> None:
                prog.update(task_id, completed=done)

            params: dict[str, Any] = dict(extra)
            if dump_snapshots is not None and n == "qlm":
                params["on_problem"] = _snapshot_writer(dump_snapshots)
            try:
                row, _ = run_policy(spec, n, prepared=prepared, on_progress=advance, policy_params=params)
            except (TypeError, ValueError) as exc:
                if not extra:
                    raise
                fail(f"--policy-param: policy {n!r} rejects {', '.join(sorted(extra))}: {exc}")
                return
            prog.update(task, completed=total)
            rows.append(row)
    used = {r.request.slo_class for r in prepared[1]}
    _print_table(sc.name, seed, load, rows, [c.name for c in sc.slo_classes if c.name in used])
    doc = {"scenario": sc.name, "seed": seed, "load": load,
           "trace": str(trace) if trace else None, "results": rows}
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if plot is not None:
        from qlm.sim.plots import attainment_plot

        attainment_plot(doc, plot)


@app.command()
def solve(
    snapshot: Annotated[Path, typer.Argument(help="solver input JSON (from simulate --dump-snapshots)")],
    backend: Annotated[str, typer.Option(help="cpsat, pulp-cbc, pulp-highs, pulp-gurobi, pulp-cplex")] = "cpsat",
    time_limit: Annotated[float, typer.Option(help="wall-clock budget, seconds")] = 1.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the plan as JSON")] = None,
) -> None:
    """Solve one scheduling snapshot offline and explain the plan."""
    from qlm.solver.cli import SnapshotError, solve_command

    if time_limit <= 0:
        fail(f"--time-limit must be > 0 (got {time_limit})")
    try:
        solve_command(snapshot, backend, time_limit, json_out)
    except (SnapshotError, ValueError) as exc:
        fail(" ".join(str(exc).split()))


@app.command()
def emulate(
    model: Annotated[str, typer.Option(help="served model name (any string), as vLLM's --served-model-name")],
    gpu: Annotated[str, typer.Option(help="GPU type from the performance catalogue")] = "A100-80G",
    tp: Annotated[int, typer.Option(help="tensor-parallel degree")] = 1,
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    sleep_mode: Annotated[bool, typer.Option("--sleep-mode", help="enable /sleep, /wake_up, /is_sleeping")] = False,
    scheduling_policy: Annotated[str, typer.Option(help="fcfs or priority")] = "fcfs",
    speed: Annotated[float, typer.Option(help="time compression (2 = twice as fast)")] = 1.0,
    profile: Annotated[str | None, typer.Option(help="catalogue model whose timings to use")] = None,
    seed: Annotated[int, typer.Option(help="seed of output lengths")] = 0,
) -> None:
    """Serve vLLM's HTTP contract with timings from the engine model (no GPU needed)."""
    from qlm.runtime.emulator.cli import emulate_command

    emulate_command(model, gpu, tp, port, host, sleep_mode, scheduling_policy, speed, profile, seed)


def _register_serve() -> None:
    from qlm.api.cli import serve

    app.command(help="Serve the OpenAI-compatible gateway (embedded emulated cluster without --config).")(serve)


_register_serve()


def _register_bench() -> None:
    from qlm.bench.cli import bench

    app.command(help="Load an OpenAI-compatible endpoint with a scenario's timed requests; TTFT, TPOT, "
                     "goodput and SLO attainment per class.")(bench)


_register_bench()


def _snapshot_writer(folder: Path) -> Any:
    """A callback writing each solver input as ``folder/epoch-NNNNN.json`` (for ``qlm solve``)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = [0]

    def write(problem: Any) -> None:
        (folder / f"epoch-{count[0]:05d}.json").write_text(problem.model_dump_json(indent=1), encoding="utf-8")
        count[0] += 1

    return write


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _print_table(name: str, seed: int, load: float, rows: list[dict[str, Any]], classes: list[str]) -> None:
    t = Table(title=f"scenario {name}  seed {seed}  load {load:g}")
    t.add_column("policy")
    t.add_column("SLO met", justify="right")
    for c in classes:
        t.add_column(c, justify="right")
    for col in ("done/submitted", "req/s", "out tok/s", "GPU util", "swaps", "preempt", "wall s"):
        t.add_column(col, justify="right")
    for r in rows:
        by = r["slo_attainment_by_class"]
        t.add_row(
            r["policy"], _pct(r["slo_attainment"]), *[_pct(by.get(c)) for c in classes],
            f"{r['completed']}/{r['submitted']}", f"{r['throughput_rps']:.2f}",
            f"{r['output_tokens_per_s']:.0f}", _pct(r["gpu_utilization"]),
            str(r["model_swaps"]), str(r["preemptions"]), f"{r['wall_s']:.2f}",
        )
    out.print(t)


def main() -> None:
    try:
        app()
    except ConfigError as exc:  # pragma: no cover - commands catch their own
        err.print(f"error: {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
