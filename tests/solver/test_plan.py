from __future__ import annotations

from typing import Any

import pytest

from qlm.solver import evaluate, simulate


def test_evaluate_arithmetic(group: Any, instance: Any, problem: Any) -> None:
    # i0 active m7, free at 1 s. a: m7 1 s (ft 2, d 3: meets, v=2*1*3=6 with importance 3);
    # b: m13, swap 4 s then 2 s (ft 8 > d 5: late, late_penalty 0.5 * v 1 = 0.5).
    prob = problem(
        [group("a", size=2, deadline=3, service=1), group("b", model="m13", deadline=5,
                                                          service=2)],
        [instance("i0", hostable=("m7", "m13"), swap={"m13": 4.0}, free_in=1.0)],
        class_importance={"int": 3.0}, swap_penalty=0.25, late_penalty=0.5,
    )
    # 6 (a meets) - 0.25 (one swap) - 0.5 (b late, v=3) * ... v_b = 1*1*3 = 3 -> 1.5
    sched = simulate(prob, {"i0": ["a", "b"]})
    assert sched.decisions[1].est_first_token_s == pytest.approx(8.0)
    assert sched.objective == pytest.approx(6 - 0.25 - 1.5)
    assert evaluate(prob, {"i0": ["a", "b"]}) == pytest.approx(sched.objective)
    assert [s.to_model for s in sched.swaps] == ["m13"]


def test_swap_back_costs_the_wake_time(group: Any, instance: Any, problem: Any) -> None:
    # m7 -> m13 (3 s) -> m7 again: swap_back_s 2 s. Times: 3+1=4, then 4+2+1=7.
    prob = problem(
        [group("a", model="m13"), group("b")],
        [instance("i0", hostable=("m7", "m13"), swap={"m13": 3.0}, swap_back_s=2.0)],
    )
    sched = simulate(prob, {"i0": ["a", "b"]})
    assert [d.est_first_token_s for d in sched.decisions] == [4.0, 7.0]
    assert len(sched.swaps) == 2


def test_unlisted_groups_are_deferred(group: Any, instance: Any, problem: Any) -> None:
    prob = problem([group("a"), group("b", can_reject=True)], [instance("i0")],
                   defer_penalty=0.5, reject_penalty=2.0)
    sched = simulate(prob, {"i0": []}, rejected=["b"])
    assert [d.decision for d in sched.decisions] == ["deferred", "rejected"]
    assert sched.objective == pytest.approx(-0.5 - 2.0)


@pytest.mark.parametrize(
    ("queues", "rejected", "message"),
    [
        ({"zz": []}, [], "unknown instance"),
        ({"i0": ["a", "a"]}, [], "listed twice"),
        ({"i0": ["big"]}, [], "cannot host"),
        ({"i0": []}, ["a"], "cannot be rejected"),
        ({"i0": ["a"]}, [], "pinned group 'p' missing"),
    ],
)
def test_simulate_rejects_invalid_orders(group: Any, instance: Any, problem: Any,
                                         queues: Any, rejected: Any, message: str) -> None:
    prob = problem([group("a"), group("big", model="m70"), group("p", pinned_instance="i1")],
                   [instance("i0"), instance("i1", hostable=("m7", "m70"))])
    with pytest.raises(ValueError, match=message):
        simulate(prob, queues, rejected)


def test_pinned_must_lead(group: Any, instance: Any, problem: Any) -> None:
    prob = problem([group("a"), group("p", pinned_instance="i0")], [instance("i0")])
    with pytest.raises(ValueError, match="behind unpinned"):
        simulate(prob, {"i0": ["a", "p"]})
