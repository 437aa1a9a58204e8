"""The ``qlm`` policy's MILP planner: the planner interface on top of :mod:`qlm.solver`.

Turns a :class:`~qlm.policies.qlm_policy.PlannerInput` into a solver-neutral
:class:`~qlm.solver.SchedulingProblem` (instances with identical estimated service columns
share an instance type), solves it with the configured backend (the greedy plan is computed
first and kept when the program does not beat it), warm-starts from the previous epoch's plan,
and maps the plan back to virtual queues.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from qlm.domain.slo import SLOClass
from qlm.policies.qlm_policy import GroupPlan, PlannerInput, PlannerOutput
from qlm.solver import (
    GroupSpec,
    InstanceSpec,
    OperatorWeights,
    Plan,
    SchedulingProblem,
    ServiceTime,
    solve,
)
from qlm.solver.options import SolverOptions


class MILPPlanner:
    """Places and orders groups with :func:`qlm.solver.solve` every epoch.

    ``weights`` are the operator weights (class importance, swap penalty, ...); they may be
    replaced between epochs (:meth:`set_weights`). In the simulator the solver runs with
    deterministic time limits so that a seed gives one result.
    """

    name = "milp"

    def __init__(
        self,
        backend: str = "cpsat",
        time_limit: float = 0.1,
        weights: OperatorWeights | None = None,
        slo_classes: Mapping[str, SLOClass] | None = None,
        deterministic: bool = True,
        on_problem: Callable[[SchedulingProblem], None] | None = None,
    ) -> None:
        self.backend = backend
        self.on_problem = on_problem  # sees every epoch's solver input (what-if snapshots)
        self.time_limit = time_limit
        self.slo_classes = dict(slo_classes or {})
        self.weights = weights
        self.options = SolverOptions(deterministic=deterministic, local_search_share=0.3)
        self.previous: Plan | None = None
        self.last_plan: Plan | None = None
        self.solves = 0
        self.solve_s = 0.0

    def limit_cores(self, cores: int) -> None:
        """Solve with at most ``cores`` threads (the runtime solves beside its event loop)."""
        self.options = replace(self.options, num_workers=max(1, min(self.options.num_workers, cores)))

    def set_weights(self, weights: OperatorWeights) -> None:
        self.weights = weights

    def _weights(self, classes: set[str]) -> OperatorWeights:
        if self.weights is not None:
            return self.weights
        importance = {c: self.slo_classes[c].weight for c in classes if c in self.slo_classes}
        return OperatorWeights(class_importance=importance)

    def problem(self, inp: PlannerInput) -> SchedulingProblem:
        """The solver snapshot of one planner call."""
        mean, std = inp.service_mean_s, inp.service_std_s
        types: dict[bytes, str] = {}
        itype: list[str] = []
        for k in range(len(inp.instances)):
            key = mean[:, k].tobytes() + std[:, k].tobytes()
            itype.append(types.setdefault(key, f"type{len(types)}"))
        instances = []
        for k, inst in enumerate(inp.instances):
            swap = {m: (0.0 if m == inst.model else float(inst.swap_in_s.get(m, 0.0))) for m in inst.models}
            instances.append(
                InstanceSpec(
                    id=inst.id, instance_type=itype[k], gpu_type=itype[k], gpu_memory_gb=1.0,
                    active_model=inst.model, hostable_models=list(inst.models),
                    free_in_s=max(0.0, float(inst.ready_in_s)), swap_in_s=swap,
                )
            )
        groups = []
        for g_idx, g in enumerate(inp.groups):
            service: dict[str, ServiceTime] = {}
            for k, inst in enumerate(inp.instances):
                if g.model in inst.models and np.isfinite(mean[g_idx, k]):
                    service.setdefault(
                        itype[k], ServiceTime(mean_s=float(mean[g_idx, k]), std_s=float(std[g_idx, k]))
                    )
            pinned = g.pinned_instance if g.pinned_instance in {i.id for i in inp.instances} else None
            groups.append(
                GroupSpec(
                    id=g.id, model=g.model, slo_class=g.slo_class, size=g.size, deadline_s=g.deadline_s,
                    weight=g.weight, service_s=service, pinned_instance=pinned,
                )
            )
        return SchedulingProblem(
            now_s=0.0, groups=groups, instances=instances,
            weights=self._weights({g.slo_class for g in inp.groups}),
        )

    def plan(self, inp: PlannerInput) -> PlannerOutput:
        if not inp.groups:
            return PlannerOutput(queues={i.id: [] for i in inp.instances})
        problem = self.problem(inp)
        if self.on_problem is not None:
            self.on_problem(problem)
        plan = solve(problem, self.backend, self.time_limit, hint=self.previous, options=self.options)
        self.previous = self.last_plan = plan
        self.solves += 1
        self.solve_s += plan.solve_s
        deadline = {g.id: (g.deadline_s, g.id) for g in inp.groups}
        model_of = {g.id: g.model for g in inp.groups}
        out = PlannerOutput(
            queues={i.id: _edf_runs(plan.queues.get(i.id, []), model_of, deadline) for i in inp.instances}
        )
        position = {gid: k for q in out.queues.values() for k, gid in enumerate(q)}
        for d in plan.decisions:
            decision = "scheduled" if d.decision == "scheduled" and d.instance_id is not None else "deferred"
            out.decisions[d.group_id] = GroupPlan(
                d.instance_id if decision == "scheduled" else None,
                position.get(d.group_id) if decision == "scheduled" else None,
                d.est_start_s,
                decision,
            )
        return out


def _edf_runs(queue: list[str], model_of: dict[str, str], key: dict[str, tuple[float, str]]) -> list[str]:
    """Order each run of same-model groups by deadline: the plan's swaps stay where they are,
    and a started (pinned) group, which the solver puts first, no longer holds back more
    urgent groups of its model."""
    out: list[str] = []
    run: list[str] = []
    for gid in queue:
        if run and model_of[gid] != model_of[run[-1]]:
            out.extend(sorted(run, key=key.__getitem__))
            run = []
        run.append(gid)
    out.extend(sorted(run, key=key.__getitem__))
    return out
