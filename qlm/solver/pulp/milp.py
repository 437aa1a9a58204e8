"""The on-time selection program (``qlm.solver.model``) in PuLP (real-valued times)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pulp

from qlm.solver.errors import BackendUnavailableError
from qlm.solver.model import OnTimeModel, OnTimeResult
from qlm.solver.options import SolverOptions

__all__ = ["PulpOnTime", "make_solver_factory", "solve_on_time", "solver_available"]

SolverFactory = Callable[[float, SolverOptions], Any]

_SOLVERS: dict[str, tuple[str, Callable[..., Any]]] = {
    "cbc": ("PULP_CBC_CMD", pulp.PULP_CBC_CMD),
    "highs": ("HiGHS", pulp.HiGHS),
    "gurobi": ("GUROBI", pulp.GUROBI),
    "cplex": ("CPLEX_PY", pulp.CPLEX_PY),
}


def solver_available(name: str) -> bool:
    """Whether PuLP can run the named solver ("cbc", "highs", "gurobi", "cplex") here."""
    _, cls = _SOLVERS[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return bool(cls(msg=False).available())
    except Exception:  # noqa: BLE001 - a broken optional install counts as unavailable
        return False


def make_solver_factory(name: str) -> SolverFactory:
    """Factory of configured PuLP solver objects; BackendUnavailableError if not installed."""
    label, cls = _SOLVERS[name]
    if not solver_available(name):
        raise BackendUnavailableError(
            f"backend 'pulp-{name}': PuLP solver {label} is not available on this machine"
        )

    def factory(time_limit: float, options: SolverOptions) -> Any:
        limit = max(time_limit, 0.01)
        if name == "cbc":
            with warnings.catch_warnings():  # PULP_CBC_CMD: bundled CBC, deprecated in PuLP 4
                warnings.simplefilter("ignore", DeprecationWarning)
                return cls(msg=False, timeLimit=limit, threads=options.num_workers, warmStart=True,
                           options=[f"randomSeed {options.seed + 1}"])
        if name == "highs":
            return cls(msg=False, timeLimit=limit, threads=options.num_workers,
                       random_seed=options.seed)
        return cls(msg=False, timeLimit=limit)

    return factory


class PulpOnTime:
    """Builds the PuLP model, one method per constraint family (see docs/solver.md)."""

    def __init__(self, data: OnTimeModel, options: SolverOptions) -> None:
        self.data = data
        self.options = options
        self.lp = pulp.LpProblem("qlm_on_time", pulp.LpMaximize)
        self.y: list[pulp.LpVariable] = []
        self.z: dict[tuple[int, str, int], pulp.LpVariable] = {}
        self.work: dict[tuple[int, int], pulp.LpVariable] = {}
        # [START variables]
        self._variables()
        # [END variables]
        # [START constraints]
        self._one_instance_per_group()
        self._model_use()
        self._cumulative_work()
        self._edf_deadlines()
        # [END constraints]
        # [START objective]
        self._objective()
        # [END objective]
        self._hint()

    def _variables(self) -> None:
        """y[c] binary; z[i,m,k] in [0,1] (integral at an optimum since y is); W[i,k] >= 0."""
        self.y = [self.lp.add_variable(f"y{n}", 0, 1, cat=pulp.LpBinary)
                  for n in range(len(self.data.candidates))]
        for r, term in enumerate(self.data.instances):
            for m, buckets in term.model_buckets.items():
                for k in buckets:
                    self.z[(r, m, k)] = self.lp.add_variable(f"z{r}_{len(self.z)}_{k}", 0, 1)
            if term.candidates:
                for k in range(len(term.checkpoints)):
                    self.work[(r, k)] = self.lp.add_variable(f"W{r}_{k}", 0)

    def _one_instance_per_group(self) -> None:
        """A group is on time on at most one instance: sum_i y[g,i] <= 1."""
        for idxs in self.data.by_group.values():
            if len(idxs) > 1:
                self.lp += pulp.lpSum(self.y[n] for n in idxs) <= 1

    def _model_use(self) -> None:
        """z[i,m_g,k_g] >= y[g,i]; z[i,m,k'] >= z[i,m,k] for the next bucket k' of m."""
        for n, c in enumerate(self.data.candidates):
            key = (c.instance, c.model, c.bucket)
            if key in self.z:
                self.lp += self.z[key] >= self.y[n]
        for r, term in enumerate(self.data.instances):
            for m, buckets in term.model_buckets.items():
                for a, b in zip(buckets, buckets[1:], strict=False):
                    self.lp += self.z[(r, m, b)] >= self.z[(r, m, a)]

    def _cumulative_work(self) -> None:
        """W[i,k] = W[i,k-1] + sum of p[g,i] * y[g,i] over candidates in bucket k."""
        for r, term in enumerate(self.data.instances):
            if not term.candidates:
                continue
            by_bucket: dict[int, list[int]] = {}
            for n in term.candidates:
                by_bucket.setdefault(self.data.candidates[n].bucket, []).append(n)
            for k in range(len(term.checkpoints)):
                added = pulp.lpSum(self.data.candidates[n].service_s * self.y[n]
                                   for n in by_bucket.get(k, []))
                prev = self.work[(r, k - 1)] if k > 0 else 0
                self.lp += self.work[(r, k)] == prev + added

    def _edf_deadlines(self) -> None:
        """start_i + W[i,k] + sum_m swap[i,m] * z[i,m,last bucket of m <= k] <= d_k."""
        for r, term in enumerate(self.data.instances):
            if not term.candidates:
                continue
            latest: dict[str, int] = {}
            starts: dict[int, list[str]] = {}
            for m, buckets in term.model_buckets.items():
                for b in buckets:
                    starts.setdefault(b, []).append(m)
            for k, d_k in enumerate(term.checkpoints):
                for m in starts.get(k, ()):
                    latest[m] = k
                swaps = pulp.lpSum(term.swap_s[m] * self.z[(r, m, b)] for m, b in latest.items())
                self.lp += self.work[(r, k)] + swaps <= max(0.0, d_k - term.start_s)

    def _objective(self) -> None:
        """max sum reward[c] * y[c] - swap_penalty * sum_{i,m} z[i,m,last bucket]."""
        swaps = [self.z[(r, m, b[-1])] for r, t in enumerate(self.data.instances)
                 for m, b in t.model_buckets.items()]
        self.lp += (pulp.lpSum(c.reward * y for c, y in zip(self.data.candidates, self.y,
                                                              strict=True))
                    - self.data.swap_penalty * pulp.lpSum(swaps))

    def _hint(self) -> None:
        """Initial values from the hint (used by solvers that take a warm start)."""
        for n, y in enumerate(self.y):
            y.setInitialValue(1 if n in self.data.hint else 0)

    def solve(self, factory: SolverFactory, time_limit: float) -> OnTimeResult:
        """Solve; statuses are mapped to "optimal" / "feasible" / "none"."""
        self.lp.solve(factory(time_limit, self.options))
        if self.lp.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
            return OnTimeResult("none", None)
        chosen = [n for n, y in enumerate(self.y) if (y.value() or 0.0) > 0.5]
        status = "optimal" if self.lp.sol_status == pulp.LpSolutionOptimal else "feasible"
        return OnTimeResult(status, chosen, pulp.value(self.lp.objective))


def solve_on_time(
    data: OnTimeModel, time_limit: float, options: SolverOptions, factory: SolverFactory
) -> OnTimeResult:
    """Registry entry point of the ``pulp-*`` backends (factory picks the solver)."""
    if not data.candidates:
        return OnTimeResult("optimal", [], 0.0)
    return PulpOnTime(data, options).solve(factory, time_limit)
