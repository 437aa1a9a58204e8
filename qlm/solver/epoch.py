"""When to re-solve: the epoch controller (pure logic; the caller passes the time).

Re-solve on the first call, when ``period_s`` has passed since the last solve, when new groups
arrived, or when a violation is predicted (flag, or probability >= threshold), but never more
often than ``min_interval_s`` (a predicted violation may bypass that with
``violation_bypasses_min_interval``). The last plan is kept as the warm-start hint.

Typical loop::

    ctl = EpochController(EpochConfig(period_s=2.0))
    decision = ctl.should_solve(now_s, new_groups=3)
    if decision.solve:
        plan = solve(problem, hint=ctl.previous_plan)
        ctl.record(now_s, plan)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from qlm.solver.plan import Plan

__all__ = ["EpochConfig", "EpochController", "EpochDecision", "ResolveReason"]


class ResolveReason(StrEnum):
    """Why the controller asked (or did not ask) for a new plan."""

    FIRST = "first"
    VIOLATION = "violation"
    NEW_GROUPS = "new_groups"
    PERIOD = "period"
    TOO_SOON = "too_soon"
    NONE = "none"


@dataclass(frozen=True)
class EpochConfig:
    """Re-solve policy knobs (seconds)."""

    period_s: float = 5.0
    min_interval_s: float = 0.5
    violation_threshold: float = 0.5
    resolve_on_new_groups: bool = True
    violation_bypasses_min_interval: bool = True

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError(f"EpochConfig.period_s: must be > 0, got {self.period_s}")
        if not 0 <= self.min_interval_s <= self.period_s:
            raise ValueError(
                f"EpochConfig.min_interval_s: must be in [0, period_s={self.period_s}], "
                f"got {self.min_interval_s}"
            )
        if not 0 <= self.violation_threshold <= 1:
            raise ValueError(
                f"EpochConfig.violation_threshold: must be in [0, 1], got "
                f"{self.violation_threshold}"
            )


@dataclass(frozen=True)
class EpochDecision:
    """Answer of :meth:`EpochController.should_solve`."""

    solve: bool
    reason: ResolveReason


class EpochController:
    """Decides when to re-solve and keeps the previous plan (see module docstring)."""

    def __init__(self, config: EpochConfig | None = None) -> None:
        self.config = config or EpochConfig()
        self._last_solve_s: float | None = None
        self._plan: Plan | None = None

    @property
    def previous_plan(self) -> Plan | None:
        """The last recorded plan (warm-start hint for ``solve``), or None."""
        return self._plan

    @property
    def last_solve_s(self) -> float | None:
        return self._last_solve_s

    def should_solve(
        self,
        now_s: float,
        *,
        new_groups: int = 0,
        violation_predicted: bool = False,
        violation_probability: float = 0.0,
    ) -> EpochDecision:
        """Whether to re-solve at ``now_s``; reasons in priority order (module docstring)."""
        cfg = self.config
        if self._last_solve_s is None:
            return EpochDecision(True, ResolveReason.FIRST)
        if now_s < self._last_solve_s:
            raise ValueError(f"now_s={now_s} is before the last solve at {self._last_solve_s}")
        since = now_s - self._last_solve_s
        violation = violation_predicted or violation_probability >= cfg.violation_threshold
        if violation and (cfg.violation_bypasses_min_interval or since >= cfg.min_interval_s):
            return EpochDecision(True, ResolveReason.VIOLATION)
        wanted = None
        if violation:
            wanted = ResolveReason.VIOLATION
        elif cfg.resolve_on_new_groups and new_groups > 0:
            wanted = ResolveReason.NEW_GROUPS
        elif since >= cfg.period_s:
            wanted = ResolveReason.PERIOD
        if wanted is None:
            return EpochDecision(False, ResolveReason.NONE)
        if since < cfg.min_interval_s:
            return EpochDecision(False, ResolveReason.TOO_SOON)
        return EpochDecision(True, wanted)

    def record(self, now_s: float, plan: Plan | None) -> None:
        """Note that a solve happened at ``now_s`` and keep its plan for warm starts."""
        self._last_solve_s = now_s
        if plan is not None:
            self._plan = plan

    def reset(self) -> None:
        """Forget the history (next call solves)."""
        self._last_solve_s = None
        self._plan = None
