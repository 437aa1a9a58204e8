"""Solver-neutral scheduling problem: the data layer of the global scheduler.

A :class:`SchedulingProblem` is one epoch's snapshot: request groups waiting for a queue
position, the serving instances, and the operator weights of the objective. It is pure,
validated data (pydantic v2, no I/O) and round-trips through JSON, which is the on-disk
snapshot format used by ``qlm solve``::

    text = problem.model_dump_json()
    assert SchedulingProblem.model_validate_json(text) == problem

All times are in seconds relative to ``now_s`` (the snapshot time), except ``now_s`` itself.
Validation errors name the offending field path (``groups.3.service_s``) and value.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "GroupSpec",
    "InstanceSpec",
    "OperatorWeights",
    "SchedulingProblem",
    "ServiceTime",
]

_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class ServiceTime(BaseModel):
    """Estimated time for one instance type to take a whole group through to first token.

    This is also the time until the group frees the instance's capacity for the next group
    in its queue. ``std_s`` is used when ``OperatorWeights.risk_z > 0``.
    """

    model_config = _CONFIG

    mean_s: float = Field(ge=0.0, description="Mean service time in seconds.")
    std_s: float = Field(default=0.0, ge=0.0, description="Standard deviation in seconds.")


class GroupSpec(BaseModel):
    """Requests sharing a model and an SLO class, served FCFS inside the group."""

    model_config = _CONFIG

    id: str = Field(min_length=1)
    model: str = Field(min_length=1)
    slo_class: str = Field(min_length=1)
    size: int = Field(ge=1, description="Number of requests in the group.")
    deadline_s: float = Field(
        description="Seconds from now by which the first token is due; negative = already late."
    )
    weight: float = Field(default=1.0, gt=0.0, description="Importance per request.")
    service_s: dict[str, ServiceTime] = Field(
        description="Service time per instance type (key: InstanceSpec.instance_type)."
    )
    can_reject: bool = Field(default=False, description="May the scheduler reject the group?")
    pinned_instance: str | None = Field(
        default=None,
        description="Instance the group already started on (non-preemptive: it stays there).",
    )


class InstanceSpec(BaseModel):
    """A serving instance (one vLLM engine on a set of GPUs).

    ``swap_in_s[m]`` is the time to make model ``m`` active on this instance: 0 for the active
    model, a wake from CPU RAM for a sleeping one, a cold load otherwise. Every hostable model
    needs an entry. ``swap_back_s`` is the time to re-activate a model that the plan itself put
    to sleep earlier on this instance (e.g. the model active now); ``None`` means the cheapest
    wake of a sleeping model, else the cheapest positive swap-in, else 0.
    """

    model_config = _CONFIG

    id: str = Field(min_length=1)
    instance_type: str = Field(min_length=1, description="Key into GroupSpec.service_s.")
    gpu_type: str = Field(min_length=1)
    gpu_memory_gb: float = Field(gt=0.0)
    active_model: str | None = None
    sleeping_models: list[str] = Field(default_factory=list)
    hostable_models: list[str] = Field(min_length=1)
    free_in_s: float = Field(
        default=0.0, ge=0.0, description="Time until running work frees enough capacity."
    )
    swap_in_s: dict[str, float] = Field(description="Seconds to make each hostable model active.")
    swap_back_s: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _check_models(self) -> Self:
        hostable = set(self.hostable_models)
        if len(hostable) != len(self.hostable_models):
            raise ValueError(f"hostable_models: duplicate model in {self.hostable_models!r}")
        if self.active_model is not None and self.active_model not in hostable:
            raise ValueError(f"active_model: {self.active_model!r} is not in hostable_models")
        for model in self.sleeping_models:
            if model not in hostable:
                raise ValueError(f"sleeping_models: {model!r} is not in hostable_models")
            if model == self.active_model:
                raise ValueError(f"sleeping_models: {model!r} is the active model")
        for model in self.hostable_models:
            if model not in self.swap_in_s:
                raise ValueError(f"swap_in_s: missing cost for hostable model {model!r}")
        for model, cost in self.swap_in_s.items():
            if model not in hostable:
                raise ValueError(f"swap_in_s.{model}: model is not in hostable_models")
            if cost < 0:
                raise ValueError(f"swap_in_s.{model}: must be >= 0, got {cost}")
            if model == self.active_model and cost != 0:
                raise ValueError(f"swap_in_s.{model}: must be 0 for the active model, got {cost}")
        return self

    def resolved_swap_back_s(self) -> float:
        """Cost to re-activate a model this plan put to sleep (see class docstring)."""
        if self.swap_back_s is not None:
            return self.swap_back_s
        wakes = [self.swap_in_s[m] for m in self.sleeping_models if self.swap_in_s[m] > 0]
        if wakes:
            return min(wakes)
        positive = [c for c in self.swap_in_s.values() if c > 0]
        return min(positive) if positive else 0.0


class OperatorWeights(BaseModel):
    """Operator knobs of the objective; changed at run time, so a plain validated model.

    Value of a group: ``v = size * weight * class_importance.get(slo_class, 1.0)``.
    The objective (maximised; see ``docs/solver.md``) is::

        sum(v for groups meeting their deadline)
        - swap_penalty * number_of_swaps
        - sum(v * (late_penalty + tardiness_penalty_per_s * lateness_s) for late groups)
        - sum(v * reject_penalty for rejected groups)
        - sum(v * defer_penalty for deferred groups)
        + throughput_weight * sum(size * max(0, 1 - first_token_s / time_scale))
    """

    model_config = _CONFIG

    class_importance: dict[str, float] = Field(
        default_factory=dict,
        description="Multiplier of the group weight per SLO class (missing class: 1.0).",
    )
    swap_penalty: float = Field(
        default=0.5, ge=0.0, description="Cost of one model swap, in weighted-request units."
    )
    throughput_weight: float = Field(
        default=0.01,
        ge=0.0,
        description="Reward per request for finishing early (0..1 of the time scale); keep it "
        "small so that it only breaks ties between plans with the same attainment.",
    )
    late_penalty: float = Field(
        default=0.0, ge=0.0, description="Cost per value unit of a scheduled group that misses."
    )
    tardiness_penalty_per_s: float = Field(
        default=0.0, ge=0.0, description="Cost per value unit per second of lateness."
    )
    reject_penalty: float = Field(
        default=1.0,
        ge=0.0,
        description="Cost per value unit of rejecting a group (only where can_reject). A late "
        "group is rejected when this is cheaper than its late cost.",
    )
    defer_penalty: float = Field(
        default=0.0,
        ge=0.0,
        description="Cost per value unit of deferring a group (it would start after horizon_s).",
    )
    risk_z: float = Field(
        default=0.0,
        ge=0.0,
        description="Plan with service time mean + risk_z * std (0: mean only).",
    )

    @model_validator(mode="after")
    def _check_importance(self) -> Self:
        for name, value in self.class_importance.items():
            if not value > 0:
                raise ValueError(f"class_importance.{name}: must be > 0, got {value}")
        return self

    def importance(self, slo_class: str) -> float:
        """Importance multiplier of an SLO class (1.0 when not listed)."""
        return self.class_importance.get(slo_class, 1.0)


class SchedulingProblem(BaseModel):
    """One scheduling epoch: groups, instances and operator weights (see module docstring)."""

    model_config = _CONFIG

    now_s: float = Field(default=0.0, description="Absolute snapshot time (informational).")
    groups: list[GroupSpec] = Field(default_factory=list)
    instances: list[InstanceSpec] = Field(min_length=1)
    weights: OperatorWeights = Field(default_factory=OperatorWeights)
    horizon_s: float | None = Field(
        default=None,
        gt=0.0,
        description="Planning horizon: groups with a later deadline are placed greedily after "
        "the optimised ones, and a group that would start after it is deferred.",
    )

    @model_validator(mode="after")
    def _cross_validate(self) -> Self:
        instances: dict[str, InstanceSpec] = {}
        for n, inst in enumerate(self.instances):
            if inst.id in instances:
                raise ValueError(f"instances.{n}.id: duplicate instance id {inst.id!r}")
            instances[inst.id] = inst
        seen: set[str] = set()
        for n, group in enumerate(self.groups):
            where = f"groups.{n}"
            if group.id in seen:
                raise ValueError(f"{where}.id: duplicate group id {group.id!r}")
            seen.add(group.id)
            for inst in self.instances:
                hosts = group.model in inst.hostable_models
                if hosts and inst.instance_type not in group.service_s:
                    raise ValueError(
                        f"{where}.service_s: missing entry for instance type "
                        f"{inst.instance_type!r} (instance {inst.id!r} hosts {group.model!r})"
                    )
            if group.pinned_instance is not None:
                pinned = instances.get(group.pinned_instance)
                if pinned is None:
                    raise ValueError(
                        f"{where}.pinned_instance: unknown instance {group.pinned_instance!r}"
                    )
                if group.model not in pinned.hostable_models:
                    raise ValueError(
                        f"{where}.pinned_instance: instance {pinned.id!r} cannot host model "
                        f"{group.model!r}"
                    )
        return self

    def value(self, group: GroupSpec) -> float:
        """Objective value of a group meeting its deadline: size * weight * class importance."""
        return group.size * group.weight * self.weights.importance(group.slo_class)

    def time_scale_s(self) -> float:
        """Time scale of the throughput term: horizon_s, else the latest deadline (>= 1 s)."""
        if self.horizon_s is not None:
            return self.horizon_s
        return max([1.0, *(g.deadline_s for g in self.groups)])
