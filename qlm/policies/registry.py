"""Policy registry: every implementation is registered here, by name, once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qlm.policies.base import Policy

if TYPE_CHECKING:
    from qlm.estimator import EstimatorConfig, RWTEstimator

PolicyFactory = Callable[..., Policy]

_REGISTRY: dict[str, PolicyFactory] = {}


def register(name: str, factory: PolicyFactory) -> None:
    """Register ``factory`` under ``name``; a second registration of a name is an error."""
    if name in _REGISTRY:
        raise ValueError(f"policy {name!r} is already registered")
    _REGISTRY[name] = factory


def available() -> list[str]:
    _ensure_builtins()
    return sorted(_REGISTRY)


def create(name: str, **params: Any) -> Policy:
    """A new policy instance by name; unknown names fail loudly."""
    _ensure_builtins()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**params)


ESTIMATORS: dict[str, str] = {
    "rwt": "ours: sampled waiting-time distributions (RWTEstimator)",
    "mean-only": "the QLM paper's n * mean_tokens / token_throughput (MeanOnlyEstimator)",
}


def make_estimator(name: str, config: EstimatorConfig | None = None) -> RWTEstimator:
    """The ``qlm`` policy's estimator by name (``ESTIMATORS``); unknown names fail loudly."""
    from qlm.estimator import MeanOnlyEstimator, RWTEstimator

    if name == "rwt":
        return RWTEstimator(config)
    if name == "mean-only":
        return MeanOnlyEstimator(config)
    raise ValueError(f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}")


_loaded = False


def _ensure_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from qlm.policies.edf import EDFPolicy
    from qlm.policies.fcfs import FCFSPolicy
    from qlm.policies.milp_planner import MILPPlanner
    from qlm.policies.qlm_policy import GreedyEDFPlanner, QLMPolicy
    from qlm.policies.shepherd import ShepherdPolicy

    def qlm(
        backend: str = "cpsat", time_limit: float = 0.1, on_problem: Any = None, estimator: str = "rwt",
        estimator_config: EstimatorConfig | None = None, **params: Any,
    ) -> Policy:
        planner = MILPPlanner(backend=backend, time_limit=time_limit, on_problem=on_problem)
        return QLMPolicy(planner=planner, estimator=make_estimator(estimator, estimator_config), **params)

    def qlm_greedy(estimator: str = "rwt", estimator_config: EstimatorConfig | None = None, **params: Any) -> Policy:
        return QLMPolicy(planner=GreedyEDFPlanner(), estimator=make_estimator(estimator, estimator_config), **params)

    register("fcfs", FCFSPolicy)
    register("edf", EDFPolicy)
    register("shepherd", ShepherdPolicy)
    register("qlm", qlm)
    register("qlm-greedy", qlm_greedy)
