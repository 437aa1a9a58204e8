"""The one place where solver backends are registered by name.

Two kinds of backend:

* ``on_time``: solves the on-time selection program (:mod:`qlm.solver.model`); the pipeline
  in :func:`qlm.solver.solve` builds the model, reconstructs queues and guards the result
  with the greedy plan. ``cpsat``, ``pulp-cbc``, ``pulp-highs``, ``pulp-gurobi``,
  ``pulp-cplex``.
* ``full``: returns queues directly. ``qlm-paper`` (the paper's MILP, benchmark baseline; not
  guarded by greedy so that its own behaviour is measured).

Solver modules are imported lazily, when a backend is first used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from qlm.solver._index import ProblemIndex
from qlm.solver.errors import BackendUnavailableError, UnknownBackendError
from qlm.solver.model import OnTimeModel, OnTimeResult
from qlm.solver.options import SolverOptions

__all__ = [
    "BackendInfo",
    "available_backends",
    "get_backend",
    "known_backends",
    "register_backend",
]

OnTimeSolver = Callable[[OnTimeModel, float, SolverOptions], OnTimeResult]
FullSolver = Callable[[ProblemIndex, float, SolverOptions], object]


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend: kind, description, lazy loader and availability probe."""

    name: str
    kind: Literal["on_time", "full"]
    description: str
    load: Callable[[], Callable[..., object]]
    """Returns the solve function (raises BackendUnavailableError when not installed)."""
    available: Callable[[], bool]
    baseline: bool = False


_REGISTRY: dict[str, BackendInfo] = {}


def register_backend(info: BackendInfo) -> None:
    """Register a backend; a duplicate name is an error (never silently replaced)."""
    if info.name in _REGISTRY:
        raise ValueError(f"backend {info.name!r} is already registered")
    _REGISTRY[info.name] = info


def known_backends() -> list[str]:
    """All registered names, sorted."""
    return sorted(_REGISTRY)


def get_backend(name: str) -> BackendInfo:
    """The backend called ``name``; UnknownBackendError (a ValueError) lists the known ones."""
    info = _REGISTRY.get(name)
    if info is None:
        raise UnknownBackendError(
            f"unknown solver backend {name!r}; known backends: {', '.join(known_backends())}"
        )
    return info


def available_backends(*, include_baselines: bool = False) -> list[str]:
    """Registered backends that can run on this machine (baselines only on request)."""
    return [n for n in known_backends()
            if (include_baselines or not _REGISTRY[n].baseline) and _REGISTRY[n].available()]


def _load_cpsat() -> Callable[..., object]:
    try:
        from qlm.solver.ortools import solve_on_time
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendUnavailableError(
            f"backend 'cpsat': OR-Tools cannot be imported: {exc}"
        ) from exc
    return solve_on_time


def _cpsat_available() -> bool:
    try:
        _load_cpsat()
    except BackendUnavailableError:
        return False
    return True


def _pulp_loader(solver: str) -> Callable[[], Callable[..., object]]:
    def load() -> Callable[..., object]:
        from qlm.solver.pulp.milp import make_solver_factory, solve_on_time

        factory = make_solver_factory(solver)

        def run(data: OnTimeModel, time_limit: float, options: SolverOptions) -> OnTimeResult:
            return solve_on_time(data, time_limit, options, factory)

        return run

    return load


def _pulp_available(solver: str) -> Callable[[], bool]:
    def available() -> bool:
        try:
            from qlm.solver.pulp.milp import solver_available
        except ImportError:  # pragma: no cover
            return False
        return solver_available(solver)

    return available


def _load_paper() -> Callable[..., object]:
    from qlm.solver.pulp.paper import solve_paper

    return solve_paper


def _register_builtin() -> None:
    register_backend(BackendInfo("cpsat", "on_time", "OR-Tools CP-SAT (default)",
                                 _load_cpsat, _cpsat_available))
    for solver, label in (("cbc", "CBC"), ("highs", "HiGHS"), ("gurobi", "Gurobi"),
                          ("cplex", "CPLEX")):
        register_backend(BackendInfo(f"pulp-{solver}", "on_time", f"PuLP with {label}",
                                     _pulp_loader(solver), _pulp_available(solver)))
    register_backend(BackendInfo("qlm-paper", "full",
                                 "QLM paper's x[i,g,j] MILP on CBC, EDF fallback (baseline)",
                                 _load_paper, _pulp_available("cbc"), baseline=True))


_register_builtin()
