"""Tuning knobs of the solver pipeline (not of the objective: see ``OperatorWeights``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SolverOptions"]


@dataclass(frozen=True)
class SolverOptions:
    """Engineering parameters of :func:`qlm.solver.solve`.

    Defaults suit a 2-core controller; ``SolverOptions(num_workers=8)`` on a bigger one.
    """

    num_workers: int = 2
    """CP-SAT search workers / MILP threads."""
    seed: int = 0
    """Random seed given to every backend that takes one."""
    max_candidates: int = 4
    """Instances kept per group when the model is pruned (the hint's instance always is)."""
    full_pairs_limit: int = 4000
    """Keep every feasible (group, instance) pair when there are at most this many."""
    max_checkpoints: int = 100_000
    """Deadline checkpoints per instance; more distinct deadlines are rounded down to them."""
    time_unit_s: float = 1e-3
    """Integer time unit of CP-SAT (service and swap times round up, deadlines down)."""
    paper_max_binaries: int = 300_000
    """The paper baseline is not built above this many x[g,i,j] binaries (-> EDF fallback)."""
    pull_forward_limit: int = 400
    """Reconstruction tries same-model pull-forward only on queues up to this length."""
    local_search_share: float = 0.3
    """Share of time_limit given to the local search on the greedy plan (0 disables it); all
    of the budget but the reserve when the backend is skipped (model too big for the rest)."""
    walks_per_s: float = 200_000.0
    """With ``deterministic``: the local search stops after (its budget in s) x walks_per_s
    exact timeline walks instead of at a wall-clock time (about the rate of a 2-core
    controller)."""
    backend_s_per_candidate: float = 6e-5
    """The backend is skipped when less than this x model size (+5 ms) of time is left."""
    reserve_share: float = 0.1
    """Share of time_limit kept back for rebuilding and scoring the last plan (at least 6x the
    time the greedy plan took to score, measured in the call; at most 25 % of time_limit)."""
    deterministic: bool = False
    """CP-SAT: bound by deterministic time (reproducible) instead of wall time."""

    def __post_init__(self) -> None:
        for name in ("num_workers", "max_candidates", "full_pairs_limit", "max_checkpoints",
                     "paper_max_binaries"):
            if getattr(self, name) < 1:
                raise ValueError(f"SolverOptions.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.time_unit_s > 0:
            raise ValueError(f"SolverOptions.time_unit_s: must be > 0, got {self.time_unit_s}")
