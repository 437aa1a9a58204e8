"""Global scheduler: assign request groups to serving instances and order them each epoch.

Data -> model -> result::

    from qlm.solver import SchedulingProblem, solve
    plan = solve(problem, backend="cpsat", time_limit=0.1, hint=previous_plan)
    plan.queues["inst-0"]        # ordered group ids, head first
    plan.decision("g1").meets_slo

See ``docs/solver.md`` for the formulation.
"""

from qlm.solver.epoch import EpochConfig, EpochController, EpochDecision, ResolveReason
from qlm.solver.errors import BackendUnavailableError, UnknownBackendError
from qlm.solver.options import SolverOptions
from qlm.solver.plan import (
    GroupDecision,
    ObjectiveTerms,
    Plan,
    Schedule,
    SolveStatus,
    SwapEvent,
    evaluate,
    simulate,
)
from qlm.solver.problem import (
    GroupSpec,
    InstanceSpec,
    OperatorWeights,
    SchedulingProblem,
    ServiceTime,
)
from qlm.solver.registry import available_backends, get_backend, known_backends
from qlm.solver.solve import greedy_plan, solve

__all__ = [
    "BackendUnavailableError",
    "EpochConfig",
    "EpochController",
    "EpochDecision",
    "GroupDecision",
    "GroupSpec",
    "InstanceSpec",
    "ObjectiveTerms",
    "OperatorWeights",
    "Plan",
    "ResolveReason",
    "Schedule",
    "SchedulingProblem",
    "ServiceTime",
    "SolveStatus",
    "SolverOptions",
    "SwapEvent",
    "UnknownBackendError",
    "available_backends",
    "evaluate",
    "get_backend",
    "greedy_plan",
    "known_backends",
    "simulate",
    "solve",
]
