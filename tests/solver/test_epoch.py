from __future__ import annotations

import pytest

from qlm.solver import EpochConfig, EpochController, ResolveReason, greedy_plan
from qlm.solver.synthetic import random_problem


def test_epoch_reasons() -> None:
    ctl = EpochController(EpochConfig(period_s=5.0, min_interval_s=1.0))
    assert ctl.should_solve(0.0).reason is ResolveReason.FIRST
    plan = greedy_plan(random_problem(0, 4, 5, 1))
    ctl.record(0.0, plan)
    assert ctl.previous_plan is plan
    assert ctl.should_solve(2.0) == ctl.should_solve(2.0)  # pure
    assert not ctl.should_solve(2.0).solve
    assert ctl.should_solve(0.5, new_groups=2).reason is ResolveReason.TOO_SOON
    assert ctl.should_solve(1.5, new_groups=2).reason is ResolveReason.NEW_GROUPS
    assert ctl.should_solve(0.1, violation_predicted=True).reason is ResolveReason.VIOLATION
    assert ctl.should_solve(0.1, violation_probability=0.7).solve
    assert not ctl.should_solve(0.1, violation_probability=0.2).solve
    assert ctl.should_solve(5.0).reason is ResolveReason.PERIOD
    ctl.record(5.0, None)
    assert ctl.previous_plan is plan and ctl.last_solve_s == 5.0
    with pytest.raises(ValueError, match="before the last solve"):
        ctl.should_solve(4.0)
    ctl.reset()
    assert ctl.should_solve(0.0).reason is ResolveReason.FIRST


def test_violation_can_respect_min_interval() -> None:
    ctl = EpochController(EpochConfig(min_interval_s=1.0, violation_bypasses_min_interval=False))
    ctl.record(0.0, None)
    assert ctl.should_solve(0.5, violation_predicted=True).reason is ResolveReason.TOO_SOON
    assert ctl.should_solve(1.0, violation_predicted=True).reason is ResolveReason.VIOLATION


@pytest.mark.parametrize(
    "kwargs", [{"period_s": 0.0}, {"min_interval_s": 10.0}, {"violation_threshold": 2.0}]
)
def test_epoch_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="EpochConfig"):
        EpochConfig(**kwargs)  # type: ignore[arg-type]
