"""What-if command: solve a snapshot file and print the plan (``qlm solve SNAPSHOT.json``).

The typer registration lives in ``qlm/cli.py``; this module holds the logic.
Bad input raises :class:`SnapshotError` with a one-line message naming the file, the field
and the reason, e.g. ``snapshot.json: groups.3.size: Input should be greater than or equal
to 1``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from qlm.solver.plan import Plan
from qlm.solver.problem import SchedulingProblem
from qlm.solver.solve import solve

__all__ = ["SnapshotError", "load_snapshot", "plan_json", "solve_command"]


class SnapshotError(ValueError):
    """A snapshot file that cannot be read or validated (one-line message)."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def load_snapshot(path: Path) -> SchedulingProblem:
    """Read and validate a snapshot; SnapshotError names file, field and reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SnapshotError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(_one_line(f"{path}: cannot read: {exc}")) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    try:
        return SchedulingProblem.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        loc = ".".join(str(part) for part in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        where = f"{path}: {loc}: " if loc else f"{path}: "
        raise SnapshotError(_one_line(f"{where}{msg}{more}")) from None


def plan_json(plan: Plan) -> str:
    """JSON of a plan: status, objective, greedy_objective, solve_s, backend, decisions..."""
    return plan.model_dump_json(indent=2)


def _print_plan(plan: Plan, console: Console) -> None:
    summary = Table(title="qlm solve", show_header=False)
    summary.add_row("backend", plan.backend)
    summary.add_row("status", plan.status.value)
    summary.add_row("objective", f"{plan.objective:.3f} (greedy {plan.greedy_objective:.3f})")
    summary.add_row("solve time", f"{plan.solve_s * 1000:.1f} ms")
    summary.add_row("swaps", str(len(plan.swaps)))
    if plan.note:
        summary.add_row("note", plan.note)
    console.print(summary)
    table = Table(title="decisions")
    for col in ("group", "decision", "instance", "pos", "start s", "first token s", "SLO"):
        table.add_column(col)
    for d in plan.decisions:
        table.add_row(
            d.group_id, d.decision, d.instance_id or "-",
            "-" if d.position is None else str(d.position),
            "-" if d.est_start_s is None else f"{d.est_start_s:.2f}",
            "-" if d.est_first_token_s is None else f"{d.est_first_token_s:.2f}",
            "[green]meets[/green]" if d.meets_slo else "[red]misses[/red]",
        )
    console.print(table)
    console.print(plan.explain(), markup=False, highlight=False)


def solve_command(
    snapshot: Path,
    backend: str,
    time_limit: float,
    json_out: Path | None,
    *,
    console: Console | None = None,
) -> None:
    """Solve a snapshot file, print the plan with rich, optionally write it as JSON.

    Raises
    ------
    SnapshotError
        Missing file, bad JSON or a validation error (one-line message).
    ValueError
        Unknown or unavailable backend (``UnknownBackendError``/``BackendUnavailableError``).
    """
    problem = load_snapshot(snapshot)
    plan = solve(problem, backend=backend, time_limit=time_limit)
    _print_plan(plan, console or Console())
    if json_out is not None:
        json_out.write_text(plan_json(plan) + "\n", encoding="utf-8")
