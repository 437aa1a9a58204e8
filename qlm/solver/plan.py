"""Solver-free result of the global scheduler, and the one objective every plan is scored by.

:func:`simulate` lays out any assignment + order (per-instance queues, plus the set of rejected
groups; every other group is deferred) in time and scores it with the program's objective
(see :class:`~qlm.solver.problem.OperatorWeights`). :func:`evaluate` returns only the score.
Greedy, MILP and paper-baseline plans are all scored by it, so their objectives compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qlm.solver._index import EPS, ProblemIndex
from qlm.solver.problem import SchedulingProblem

__all__ = [
    "GroupDecision",
    "ObjectiveTerms",
    "Plan",
    "Schedule",
    "SolveStatus",
    "SwapEvent",
    "evaluate",
    "simulate",
]

Queues = Mapping[str, Sequence[str]]


class SolveStatus(StrEnum):
    """How a plan was obtained (never a solver's own status code)."""

    OPTIMAL = "optimal"
    """The backend proved its program optimal; the plan is its reconstruction."""
    FEASIBLE = "feasible"
    """The backend found a solution but stopped (time limit) before proving optimality."""
    HEURISTIC = "heuristic"
    """Greedy improved by local search (backend skipped, empty-handed, or not better)."""
    GREEDY = "greedy"
    """The greedy plan: nothing else found in time was better."""
    EDF_FALLBACK = "edf_fallback"
    """Paper baseline only: its hard-deadline program was infeasible/too big/timed out -> EDF."""


class GroupDecision(BaseModel):
    """What the plan does with one group. Times are seconds from the snapshot time."""

    model_config = ConfigDict(extra="forbid")

    group_id: str
    instance_id: str | None
    position: int | None = Field(description="Index in the instance's queue (0 = head).")
    est_start_s: float | None
    est_first_token_s: float | None
    meets_slo: bool
    decision: Literal["scheduled", "deferred", "rejected"]


class SwapEvent(BaseModel):
    """A model swap on an instance, before the group at ``position`` of its queue."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str
    from_model: str | None
    to_model: str
    position: int
    at_s: float
    duration_s: float


class ObjectiveTerms(BaseModel):
    """Breakdown of the objective (objective = attainment - costs + throughput)."""

    model_config = ConfigDict(extra="forbid")

    attainment: float = 0.0
    swap_cost: float = 0.0
    late_cost: float = 0.0
    reject_cost: float = 0.0
    defer_cost: float = 0.0
    throughput: float = 0.0

    @property
    def total(self) -> float:
        return (
            self.attainment
            - self.swap_cost
            - self.late_cost
            - self.reject_cost
            - self.defer_cost
            + self.throughput
        )


class Schedule(BaseModel):
    """Output of :func:`simulate`: decisions, swaps and the objective of an order."""

    model_config = ConfigDict(extra="forbid")

    objective: float
    terms: ObjectiveTerms
    queues: dict[str, list[str]]
    decisions: list[GroupDecision]
    swaps: list[SwapEvent]


class Plan(BaseModel):
    """The scheduler's answer for one epoch (JSON-serialisable, no solver types)."""

    model_config = ConfigDict(extra="forbid")

    status: SolveStatus
    objective: float = Field(description="Score of this plan by evaluate().")
    greedy_objective: float = Field(description="Score of the greedy plan by evaluate().")
    backend: str
    solve_s: float = Field(description="Wall time of the whole solve() call.")
    queues: dict[str, list[str]] = Field(description="Per-instance group ids, head first.")
    decisions: list[GroupDecision]
    swaps: list[SwapEvent]
    terms: ObjectiveTerms
    program_objective: float | None = Field(
        default=None, description="The backend program's own objective value, if any."
    )
    note: str = ""

    def decision(self, group_id: str) -> GroupDecision:
        """The decision for one group (KeyError if the group is unknown)."""
        for d in self.decisions:
            if d.group_id == group_id:
                return d
        raise KeyError(group_id)

    @property
    def rejected(self) -> list[str]:
        return [d.group_id for d in self.decisions if d.decision == "rejected"]

    @property
    def deferred(self) -> list[str]:
        return [d.group_id for d in self.decisions if d.decision == "deferred"]

    def explain(self) -> str:
        """Human-readable summary: who meets or misses, swaps, per-instance order."""
        meet = [d for d in self.decisions if d.meets_slo]
        late = [d for d in self.decisions if d.decision == "scheduled" and not d.meets_slo]
        lines = [
            f"backend={self.backend} status={self.status.value} objective={self.objective:.3f} "
            f"(greedy {self.greedy_objective:.3f}) solve={self.solve_s * 1000:.1f} ms",
            f"groups: {len(meet)} meet, {len(late)} late, {len(self.deferred)} deferred, "
            f"{len(self.rejected)} rejected; {len(self.swaps)} swaps",
        ]
        if self.note:
            lines.append(f"note: {self.note}")
        by_id = {d.group_id: d for d in self.decisions}
        swaps_at: dict[tuple[str, int], list[str]] = {}
        for s in self.swaps:
            swaps_at.setdefault((s.instance_id, s.position), []).append(
                f"[swap {s.from_model} -> {s.to_model}, {s.duration_s:.1f}s]"
            )
        for inst in sorted(self.queues):
            parts: list[str] = []
            for pos, gid in enumerate(self.queues[inst]):
                parts.extend(swaps_at.get((inst, pos), []))
                d = by_id[gid]
                mark = "ok" if d.meets_slo else "LATE"
                parts.append(f"{gid}@{d.est_first_token_s:.1f}s:{mark}")
            lines.append(f"  {inst}: " + (" ".join(parts) if parts else "(idle)"))
        for label, ids in (("deferred", self.deferred), ("rejected", self.rejected)):
            if ids:
                lines.append(f"  {label}: " + ", ".join(sorted(ids)))
        return "\n".join(lines)


def simulate(
    problem: SchedulingProblem,
    queues: Queues,
    rejected: Iterable[str] = (),
    *,
    index: ProblemIndex | None = None,
) -> Schedule:
    """Lay out queues in time and score them with the program's objective.

    Each instance starts at ``free_in_s`` with its active model, then serves its queue head
    first; switching model costs the activation time (``InstanceSpec.swap_in_s`` or
    ``swap_back_s``) and one ``swap_penalty``. Groups in no queue and not rejected are deferred.

    Raises
    ------
    ValueError
        Unknown instance/group, a group listed twice, a model the instance cannot host, a
        pinned group elsewhere than on its instance or behind a non-pinned group, or a
        rejected group that cannot be rejected.
    """
    idx = index if index is not None else ProblemIndex(problem)
    w = problem.weights
    terms = ObjectiveTerms()
    decisions: dict[str, GroupDecision] = {}
    swaps: list[SwapEvent] = []
    out_queues: dict[str, list[str]] = {i.id: [] for i in problem.instances}
    for inst_id, queue in queues.items():
        if inst_id not in idx.instances:
            raise ValueError(f"queues: unknown instance {inst_id!r}")
        tl = idx.timeline(inst_id)
        inst = idx.instances[inst_id]
        pinned_done = False
        for pos, gid in enumerate(queue):
            g = idx.groups.get(gid)
            if g is None:
                raise ValueError(f"queues.{inst_id}: unknown group {gid!r}")
            if gid in decisions:
                raise ValueError(f"queues.{inst_id}: group {gid!r} is listed twice")
            if g.model not in inst.hostable_models:
                raise ValueError(f"queues.{inst_id}: cannot host model {g.model!r} of {gid!r}")
            if g.pinned_instance is not None:
                if g.pinned_instance != inst_id:
                    raise ValueError(
                        f"queues.{inst_id}: {gid!r} is pinned to {g.pinned_instance!r}")
                if pinned_done:
                    raise ValueError(f"queues.{inst_id}: pinned {gid!r} is behind unpinned work")
            else:
                pinned_done = True
            before = tl.model
            cost = tl.activation_cost(g.model)
            swapped, swap_at, start, ft = tl.append(g.model, idx.service(gid, inst_id))
            if swapped:
                swaps.append(SwapEvent(instance_id=inst_id, from_model=before, to_model=g.model,
                                       position=pos, at_s=swap_at, duration_s=cost))
                terms.swap_cost += w.swap_penalty
            v = idx.value[gid]
            meets = ft <= g.deadline_s + EPS
            if meets:
                terms.attainment += v
            else:
                lateness = ft - g.deadline_s
                terms.late_cost += v * (w.late_penalty + w.tardiness_penalty_per_s * lateness)
            terms.throughput += w.throughput_weight * g.size * max(0.0, 1.0 - ft / idx.scale)
            decisions[gid] = GroupDecision(group_id=gid, instance_id=inst_id, position=pos,
                                           est_start_s=start, est_first_token_s=ft,
                                           meets_slo=meets, decision="scheduled")
        out_queues[inst_id] = list(queue)
    for gid in rejected:
        g = idx.groups.get(gid)
        if g is None:
            raise ValueError(f"rejected: unknown group {gid!r}")
        if gid in decisions:
            raise ValueError(f"rejected: group {gid!r} is also queued")
        if not g.can_reject or g.pinned_instance is not None:
            raise ValueError(f"rejected: group {gid!r} cannot be rejected")
        terms.reject_cost += idx.value[gid] * w.reject_penalty
        decisions[gid] = GroupDecision(group_id=gid, instance_id=None, position=None,
                                       est_start_s=None, est_first_token_s=None,
                                       meets_slo=False, decision="rejected")
    for g in problem.groups:
        if g.id not in decisions:
            if g.pinned_instance is not None:
                raise ValueError(
                    f"queues: pinned group {g.id!r} missing from {g.pinned_instance!r}")
            terms.defer_cost += idx.value[g.id] * w.defer_penalty
            decisions[g.id] = GroupDecision(group_id=g.id, instance_id=None, position=None,
                                            est_start_s=None, est_first_token_s=None,
                                            meets_slo=False, decision="deferred")
    ordered = [decisions[g.id] for g in problem.groups]
    return Schedule(objective=terms.total, terms=terms, queues=out_queues,
                    decisions=ordered, swaps=swaps)


def evaluate(
    problem: SchedulingProblem,
    order: Queues | Plan,
    rejected: Iterable[str] = (),
) -> float:
    """Objective of any assignment + order (a Plan, or queues plus rejected ids)."""
    if isinstance(order, Plan):
        return simulate(problem, order.queues, order.rejected).objective
    return simulate(problem, order, rejected).objective
