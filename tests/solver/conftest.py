"""Solver test setup: every test taking ``backend`` runs on every available backend.

Set ``QLM_SOLVER_BACKENDS=cpsat,pulp-highs`` to restrict the list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from qlm.solver import GroupSpec, InstanceSpec, OperatorWeights, SchedulingProblem, ServiceTime
from qlm.solver.registry import available_backends

_DEFAULT = ("cpsat", "pulp-cbc", "pulp-highs")


def _backends() -> list[str]:
    wanted = os.environ.get("QLM_SOLVER_BACKENDS")
    names = wanted.split(",") if wanted else list(_DEFAULT)
    available = set(available_backends())
    return [n for n in names if n in available]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends())


def make_group(gid: str, *, model: str = "m7", deadline: float = 10.0, service: float = 1.0,
               size: int = 1, weight: float = 1.0, slo_class: str = "int",
               types: tuple[str, ...] = ("T",), **kw: Any) -> GroupSpec:
    """A group with the same service time on every listed instance type."""
    return GroupSpec(id=gid, model=model, slo_class=slo_class, size=size, deadline_s=deadline,
                     weight=weight, service_s={t: ServiceTime(mean_s=service) for t in types},
                     **kw)


def make_instance(iid: str, *, itype: str = "T", active: str | None = "m7",
                  hostable: tuple[str, ...] = ("m7",), swap: dict[str, float] | None = None,
                  free_in: float = 0.0, memory: float = 80.0, **kw: Any) -> InstanceSpec:
    """An instance; swap costs default to 0 for the active model and 10 s otherwise."""
    costs = {m: (0.0 if m == active else 10.0) for m in hostable}
    costs.update(swap or {})
    return InstanceSpec(id=iid, instance_type=itype, gpu_type="A100", gpu_memory_gb=memory,
                        active_model=active, hostable_models=list(hostable),
                        free_in_s=free_in, swap_in_s=costs, **kw)


def make_problem(groups: list[GroupSpec], instances: list[InstanceSpec],
                 **weights: Any) -> SchedulingProblem:
    """A problem with throughput_weight 0 unless given (objectives are then hand-computable)."""
    weights.setdefault("throughput_weight", 0.0)
    horizon = weights.pop("horizon_s", None)
    return SchedulingProblem(groups=groups, instances=instances,
                             weights=OperatorWeights(**weights), horizon_s=horizon)


@pytest.fixture
def group() -> Callable[..., GroupSpec]:
    return make_group


@pytest.fixture
def instance() -> Callable[..., InstanceSpec]:
    return make_instance


@pytest.fixture
def problem() -> Callable[..., SchedulingProblem]:
    return make_problem
