"""Lookup tables and the per-instance timeline shared by evaluation, greedy and reconstruction.

Private module: one place defines how a queue turns into times, so that every plan (greedy,
MILP, paper baseline) is scored by exactly the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from qlm.solver.problem import GroupSpec, InstanceSpec, SchedulingProblem

EPS = 1e-9


class ProblemIndex:
    """Read-only lookups over a validated problem (planning service times, values, hosts)."""

    def __init__(self, problem: SchedulingProblem) -> None:
        self.problem = problem
        self.groups: dict[str, GroupSpec] = {g.id: g for g in problem.groups}
        self.instances: dict[str, InstanceSpec] = {i.id: i for i in problem.instances}
        self.value: dict[str, float] = {g.id: problem.value(g) for g in problem.groups}
        self.scale = problem.time_scale_s()
        z = problem.weights.risk_z
        self.service_by_type: dict[tuple[str, str], float] = {}
        """(group id, instance type) -> planning service time."""
        for g in problem.groups:
            for itype, st in g.service_s.items():
                self.service_by_type[(g.id, itype)] = st.mean_s + z * st.std_s
        hosts: dict[str, list[str]] = {}
        for inst in problem.instances:
            for model in inst.hostable_models:
                hosts.setdefault(model, []).append(inst.id)
        self.hosts_by_model = hosts
        self.swap_back: dict[str, float] = {
            i.id: i.resolved_swap_back_s() for i in problem.instances
        }

    @cached_property
    def group_pos(self) -> dict[str, int]:
        """Group id -> its index in ``problem.groups``."""
        return {g.id: n for n, g in enumerate(self.problem.groups)}

    @cached_property
    def service_table(self) -> np.ndarray:
        """Planning service times, instances x groups (problem order; inf: not hostable)."""
        problem = self.problem
        types = sorted({i.instance_type for i in problem.instances})
        tix = {t: n for n, t in enumerate(types)}
        by_type = np.full((len(types), len(problem.groups)), np.inf)
        z = problem.weights.risk_z
        for n, g in enumerate(problem.groups):
            for itype, st in g.service_s.items():
                row = tix.get(itype)
                if row is not None:
                    by_type[row, n] = st.mean_s + z * st.std_s
        return by_type[[tix[i.instance_type] for i in problem.instances]]

    def service_matrix(self, group_ids: list[str]) -> np.ndarray:
        """Planning service times of some groups, instances x groups (inf: not hostable)."""
        pos = self.group_pos
        return self.service_table[:, [pos[g] for g in group_ids]]

    def hosts(self, group_id: str) -> list[str]:
        """Instances that can host the group's model, in problem order."""
        return self.hosts_by_model.get(self.groups[group_id].model, [])

    def service(self, group_id: str, instance_id: str) -> float:
        """Planning service time (mean + risk_z * std) of a group on an instance."""
        return self.service_by_type[(group_id, self.instances[instance_id].instance_type)]

    def edf_key(self, group_id: str) -> tuple[float, float, str]:
        """EDF order with explicit ties: deadline, then larger value first, then id."""
        g = self.groups[group_id]
        return (g.deadline_s, -self.value[group_id], g.id)

    def timeline(self, instance_id: str) -> Timeline:
        """A fresh timeline of an instance at the snapshot time."""
        inst = self.instances[instance_id]
        seen = {inst.active_model} if inst.active_model is not None else set()
        return Timeline(inst, inst.free_in_s, inst.active_model, seen, self.swap_back[inst.id])


@dataclass
class Timeline:
    """Mutable state of one instance while its queue is laid out in time."""

    inst: InstanceSpec
    t: float
    model: str | None
    seen: set[str] = field(default_factory=set)
    swap_back: float = 0.0

    def activation_cost(self, model: str) -> float:
        """Seconds to make ``model`` active now (0 if it already is)."""
        if model == self.model:
            return 0.0
        if model in self.seen:
            if model == self.inst.active_model:
                return self.swap_back
            return min(self.inst.swap_in_s[model], self.swap_back)
        return self.inst.swap_in_s[model]

    def finish_if_appended(self, model: str, service: float) -> float:
        """First-token time of a group appended now (no state change)."""
        return self.t + self.activation_cost(model) + service

    def append(self, model: str, service: float) -> tuple[bool, float, float, float]:
        """Append a group; returns (swapped, swap_start, start, first_token)."""
        swapped = model != self.model
        swap_start = self.t
        if swapped:
            self.t += self.activation_cost(model)
            self.model = model
            self.seen.add(model)
        start = self.t
        self.t += service
        return swapped, swap_start, start, self.t

    def copy(self) -> Timeline:
        return Timeline(self.inst, self.t, self.model, set(self.seen), self.swap_back)
