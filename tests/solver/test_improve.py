"""The local search's moves (qlm/solver/improve.py) on hand-built problems, on every backend.

Each problem is one where greedy (EDF, earliest first token) provably misses value that one
move recovers. ``_LS_ONLY`` gives the search a budget too small for any backend (5 ms, counted
in walks, so the result is reproducible), which shows the search alone reaches the optimum;
every backend with its default budget must reach it too.
"""

from __future__ import annotations

from typing import Any

import pytest

from qlm.solver import SolverOptions, SolveStatus, greedy_plan, solve
from qlm.solver._index import ProblemIndex
from qlm.solver.greedy import greedy_queues
from qlm.solver.improve import LocalSearch
from qlm.solver.model import pinned_timelines
from qlm.solver.synthetic import random_problem

_LS_ONLY = {"time_limit": 0.005, "options": SolverOptions(deterministic=True)}


def _search(prob: Any) -> LocalSearch:
    idx = ProblemIndex(prob)
    timelines, _ = pinned_timelines(idx)
    scope = [g.id for g in prob.groups if g.pinned_instance is None]
    search = LocalSearch(idx, timelines, greedy_queues(idx).on_time, scope)
    search.run(float("inf"))
    return search


@pytest.fixture
def relocate_problem(group: Any, instance: Any, problem: Any) -> Any:
    # i0 free now, i1 free at 1 s. e (due 3, 1 s, v 1) comes first in EDF and greedy puts it
    # on i0 (first token 1 < 2 on i1). g (due 4, 4 s, v 2) then misses everywhere: i0 gives
    # 1 + 4 = 5 > 4, i1 gives 1 + 4 = 5 > 4. Greedy = 1 (e).
    # Eject + relocate: g alone on i0 (first token 4 <= 4), e moves to i1 (1 + 1 = 2 <= 3).
    # Objective 2 + 1 = 3, the optimum (both meet).
    return problem([group("e", deadline=3, service=1), group("g", size=2, deadline=4, service=4)],
                   [instance("i0"), instance("i1", free_in=1.0)])


@pytest.fixture
def replace_problem(group: Any, instance: Any, problem: Any) -> Any:
    # One instance. e (due 1, 1 s, v 1) is placed first; g (due 2, 2 s, v 3) then finishes at
    # 3 > 2. Greedy = 1. Eject e (nowhere else to go): g meets at 2 s, e is late (3 > 1).
    # Objective 3 (g) instead of 1 (e): the optimum, since only one of them can meet.
    return problem([group("e", deadline=1, service=1), group("g", size=3, deadline=2, service=2)],
                   [instance("i0")])


@pytest.fixture
def pair_problem(group: Any, instance: Any, problem: Any) -> Any:
    # i0 free now, i1 free at 1.5 s. e1, e2 (due 3, 1 s, v 1 each) go on i0 (first tokens 1
    # and 2, earlier than i1's 2.5). g (due 4, 4 s, v 3): 2 + 4 = 6 on i0, 1.5 + 4 on i1: late.
    # Greedy = 2. Ejecting one of e1, e2 is not enough (1 + 4 = 5 > 4); ejecting both is: g
    # alone meets at 4. e1 moves to i1 (1.5 + 1 = 2.5 <= 3); e2 cannot follow it there
    # (3.5 > 3) and is late. Objective 3 + 1 = 4, the optimum (g and both e's cannot all meet:
    # 4 + 1 + 1 s of work due by 4 s on i0, and i1 fits only one e by 3 s).
    return problem([group("e1", deadline=3, service=1), group("e2", deadline=3, service=1),
                    group("g", size=3, deadline=4, service=4)],
                   [instance("i0"), instance("i1", free_in=1.5)])


def test_eject_and_relocate(backend: str, relocate_problem: Any) -> None:
    assert greedy_plan(relocate_problem).objective == pytest.approx(1.0)
    assert _search(relocate_problem).sets() == {"i0": ["g"], "i1": ["e"]}
    fast = solve(relocate_problem, backend, **_LS_ONLY)
    assert fast.status is SolveStatus.HEURISTIC
    assert fast.objective == pytest.approx(3.0)
    plan = solve(relocate_problem, backend)
    assert plan.objective == pytest.approx(3.0)
    assert plan.queues == {"i0": ["g"], "i1": ["e"]}


def test_eject_replaces_smaller_value(backend: str, replace_problem: Any) -> None:
    assert greedy_plan(replace_problem).objective == pytest.approx(1.0)
    assert _search(replace_problem).sets() == {"i0": ["g"]}
    fast = solve(replace_problem, backend, **_LS_ONLY)
    assert fast.objective == pytest.approx(3.0)
    assert fast.queues["i0"] == ["g", "e"]  # e laid out late behind the on-time part
    assert solve(replace_problem, backend).objective == pytest.approx(3.0)


def test_eject_pair(backend: str, pair_problem: Any) -> None:
    assert greedy_plan(pair_problem).objective == pytest.approx(2.0)
    assert _search(pair_problem).sets() == {"i0": ["g"], "i1": ["e1"]}
    fast = solve(pair_problem, backend, **_LS_ONLY)
    assert fast.status is SolveStatus.HEURISTIC
    assert fast.objective == pytest.approx(4.0)
    assert solve(pair_problem, backend).objective == pytest.approx(4.0)


def test_insert_needs_no_ejection(group: Any, instance: Any, problem: Any) -> None:
    # The search keeps every set on time in EDF order; a group that fits as is only joins.
    # Greedy already places both (a on i0 at 1 s, b on i0 at 2 s): nothing to improve.
    prob = problem([group("a", deadline=3), group("b", deadline=3)], [instance("i0")])
    search = _search(prob)
    assert search.sets() == {"i0": ["a", "b"]}
    assert search.score == [pytest.approx(2.0)]


@pytest.mark.parametrize("seed", range(3))
def test_search_never_below_greedy_and_reproducible(seed: int) -> None:
    prob = random_problem(seed, 16, 80, 2, load=1.4)
    opts = SolverOptions(deterministic=True)
    first = solve(prob, time_limit=0.02, options=opts)
    again = solve(prob, time_limit=0.02, options=opts)
    assert first.objective >= first.greedy_objective - 1e-9
    assert first.queues == again.queues
    assert first.objective == again.objective
