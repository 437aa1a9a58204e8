"""Known optima on tiny instances, on every backend (see conftest)."""

from __future__ import annotations

from typing import Any

import pytest

from qlm.solver import SolveStatus, evaluate, greedy_plan, solve
from qlm.solver.errors import UnknownBackendError
from qlm.solver.synthetic import random_problem


def test_only_one_of_two_can_meet(backend: str, group: Any, instance: Any,
                                  problem: Any) -> None:
    # One instance, both groups need 2 s and are due at 3 s: only the first meets.
    # a: value 2 (size 2), b: value 1 -> optimum 2, a first; b late at 4 s.
    prob = problem([group("a", size=2, deadline=3, service=2),
                    group("b", size=1, deadline=3, service=2)], [instance("i0")])
    plan = solve(prob, backend=backend)
    assert plan.objective == pytest.approx(2.0)
    assert plan.queues["i0"] == ["a", "b"]
    assert plan.decision("b").meets_slo is False
    assert plan.decision("b").decision == "scheduled"


def test_solver_beats_edf_greedy(backend: str, group: Any, instance: Any,
                                 problem: Any) -> None:
    # All due at 2 s. EDF greedy takes a (2 s) and b, c miss: 1. Optimum: b, c (1 s each,
    # ft 1 and 2) meet, a misses: 2.
    prob = problem([group("a", deadline=2, service=2), group("b", deadline=2, service=1),
                    group("c", deadline=2, service=1)], [instance("i0")])
    assert greedy_plan(prob).objective == pytest.approx(1.0)
    plan = solve(prob, backend=backend)
    assert plan.status is SolveStatus.OPTIMAL
    assert plan.objective == pytest.approx(2.0)
    assert plan.queues["i0"] == ["b", "c", "a"]


def test_swap_makes_group_miss(backend: str, group: Any, instance: Any,
                               problem: Any) -> None:
    # i0 runs m7; x (m13) needs a 10 s cold load + 1 s > deadline 5: it misses anyway.
    # y (m7) meets at 1 s. x is served late after y: one swap (penalty 0.5).
    # Objective = 1 (y) - 0.5 (swap) = 0.5.
    prob = problem([group("x", model="m13", deadline=5), group("y", deadline=5)],
                   [instance("i0", hostable=("m7", "m13"))])
    plan = solve(prob, backend=backend)
    assert plan.objective == pytest.approx(0.5)
    assert plan.queues["i0"] == ["y", "x"]
    assert not plan.decision("x").meets_slo
    assert [(s.from_model, s.to_model) for s in plan.swaps] == [("m7", "m13")]


def test_swap_priced_against_attainment(backend: str, group: Any, instance: Any,
                                        problem: Any) -> None:
    # Two idle instances. i0 runs m7, i1 sleeps m13 (wake 1 s). a (m13, due 3 s, 1 s)
    # meets only on i1 via a wake: 1 + 1 = 2 <= 3, worth 1 - 0.5 swap = 0.5 > 0: swap done.
    # b (m7) on i0 at 1 s. Objective 2 - 0.5 = 1.5.
    prob = problem([group("a", model="m13", deadline=3), group("b", deadline=3)],
                   [instance("i0", hostable=("m7",)),
                    instance("i1", active=None, hostable=("m7", "m13"),
                             sleeping_models=["m13"], swap={"m13": 1.0, "m7": 10.0})])
    plan = solve(prob, backend=backend)
    assert plan.objective == pytest.approx(1.5)
    assert plan.decision("a").instance_id == "i1"
    assert plan.decision("b").instance_id == "i0"


def test_big_model_only_on_big_gpu(backend: str, group: Any, instance: Any,
                                   problem: Any) -> None:
    # The 70B group can only go on "big" (a 4 x A100 engine), even though "small" is idle.
    # big: active m70, free at 1 s; g70 ft = 1 + 2 = 3 <= 5. Small ones go on small.
    # Objective: 3 groups meet = 3.
    prob = problem(
        [group("g70", model="m70", deadline=5, service=2, types=("A10", "A100x4")),
         group("s1", deadline=5, service=1, types=("A10", "A100x4")),
         group("s2", deadline=5, service=1, types=("A10", "A100x4"))],
        [instance("small", itype="A10", memory=24),
         instance("big", itype="A100x4", active="m70", hostable=("m7", "m70"), free_in=1.0,
                  memory=320)])
    plan = solve(prob, backend=backend)
    assert plan.decision("g70").instance_id == "big"
    assert plan.objective == pytest.approx(3.0)


def test_overload_stays_feasible(backend: str, group: Any, instance: Any,
                                 problem: Any) -> None:
    # 6 groups of 10 s, all due at 10 s, one instance: exactly one can meet.
    # The program is still feasible (missing is priced, not forbidden): objective 1.
    prob = problem([group(f"g{k}", deadline=10, service=10) for k in range(6)],
                   [instance("i0")])
    plan = solve(prob, backend=backend)
    assert plan.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE, SolveStatus.GREEDY,
                           SolveStatus.HEURISTIC)
    assert plan.objective == pytest.approx(1.0)
    assert sum(d.meets_slo for d in plan.decisions) == 1
    assert len(plan.queues["i0"]) == 6


def test_pinned_group_stays_at_head(backend: str, group: Any, instance: Any,
                                    problem: Any) -> None:
    # p is running on i0 (5 s left); q (due 3 s) cannot wait: 5 + 1 = 6 > 3 on i0, but
    # i1 (free at 1 s) gives 2 s. Objective 2.
    prob = problem([group("p", deadline=100, service=5, pinned_instance="i0"),
                    group("q", deadline=3, service=1)],
                   [instance("i0"), instance("i1", free_in=1.0)])
    plan = solve(prob, backend=backend)
    assert plan.queues["i0"][0] == "p"
    assert plan.decision("q").instance_id == "i1"
    assert plan.objective == pytest.approx(2.0)


def test_reject_when_cheaper_than_late(backend: str, group: Any, instance: Any,
                                       problem: Any) -> None:
    # b cannot meet (ft 4 > 3); late costs 1.0 per value unit, rejecting 0.2: rejected.
    # Objective 1 (a) - 0.2 = 0.8.
    prob = problem([group("a", deadline=3, service=2),
                    group("b", deadline=3, service=2, can_reject=True, weight=0.5)],
                   [instance("i0")], late_penalty=1.0, reject_penalty=0.2)
    plan = solve(prob, backend=backend)
    assert plan.decision("b").decision == "rejected"
    assert plan.objective == pytest.approx(1.0 - 0.2 * 0.5)


def test_defer_beyond_horizon(backend: str, group: Any, instance: Any, problem: Any) -> None:
    # Horizon 5 s: c (due 100 s) is out of scope; it would start at 6 s > 5 s: deferred.
    prob = problem([group("a", deadline=3, service=3), group("b", deadline=6, service=3),
                    group("c", deadline=100, service=3)], [instance("i0")], horizon_s=5.0)
    plan = solve(prob, backend=backend)
    assert plan.decision("c").decision == "deferred"
    assert plan.objective == pytest.approx(2.0)


@pytest.mark.parametrize("seed", range(4))
def test_never_worse_than_greedy(backend: str, seed: int) -> None:
    prob = random_problem(seed, 8, 30, 3, load=1.4)
    plan = solve(prob, backend=backend, time_limit=2.0)
    assert plan.objective >= plan.greedy_objective - 1e-9
    assert plan.greedy_objective == pytest.approx(greedy_plan(prob).objective)
    assert evaluate(prob, plan) == pytest.approx(plan.objective)


def test_warm_start_from_previous_plan(backend: str) -> None:
    prob = random_problem(7, 8, 30, 2)
    first = solve(prob, backend=backend, time_limit=2.0)
    again = solve(prob, backend=backend, time_limit=2.0, hint=first)
    assert again.objective >= again.greedy_objective - 1e-9


def test_unknown_backend_lists_known(group: Any, instance: Any, problem: Any) -> None:
    prob = problem([group("a")], [instance("i0")])
    with pytest.raises(UnknownBackendError, match="'nope'.*cpsat.*pulp-cbc.*pulp-highs"):
        solve(prob, backend="nope")
    with pytest.raises(ValueError):
        solve(prob, backend="nope")


def test_empty_problem(backend: str, instance: Any, problem: Any) -> None:
    plan = solve(problem([], [instance("i0")]), backend=backend)
    assert plan.objective == 0.0 and plan.decisions == []


def test_time_limit_too_small_returns_heuristic_or_greedy() -> None:
    prob = random_problem(1, 16, 60, 2)
    plan = solve(prob, time_limit=0.0)
    assert plan.status in (SolveStatus.GREEDY, SolveStatus.HEURISTIC)
    assert plan.objective >= plan.greedy_objective - 1e-9
