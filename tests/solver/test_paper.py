from __future__ import annotations

from typing import Any

import pytest

from qlm.solver import SolveStatus, solve
from qlm.solver.options import SolverOptions
from qlm.solver.synthetic import random_problem


def test_paper_solves_feasible_instance(group: Any, instance: Any, problem: Any) -> None:
    # All can meet: a (due 2) then b (due 4) on i0; total completion 1 + 2 = 3 minimal.
    prob = problem([group("a", deadline=2), group("b", deadline=4)], [instance("i0")])
    plan = solve(prob, backend="qlm-paper")
    assert plan.status is SolveStatus.OPTIMAL
    assert plan.program_objective == pytest.approx(3.0)
    assert plan.objective == pytest.approx(2.0)


def test_paper_falls_back_to_edf_under_overload(group: Any, instance: Any,
                                                problem: Any) -> None:
    # Hard deadlines: 3 groups of 2 s due at 2 s on one instance is infeasible -> EDF.
    prob = problem([group(f"g{k}", deadline=2, service=2) for k in range(3)], [instance("i0")])
    plan = solve(prob, backend="qlm-paper")
    assert plan.status is SolveStatus.EDF_FALLBACK
    assert "infeasible" in plan.note


def test_paper_not_built_when_too_large() -> None:
    prob = random_problem(0, 8, 40, 2)
    plan = solve(prob, backend="qlm-paper", options=SolverOptions(paper_max_binaries=10))
    assert plan.status is SolveStatus.EDF_FALLBACK
    assert "not built" in plan.note
