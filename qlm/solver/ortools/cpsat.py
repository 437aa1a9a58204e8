"""The on-time selection program (``qlm.solver.model``) in OR-Tools CP-SAT.

Times are integers in ``options.time_unit_s`` (service and swap times rounded up, deadlines
down, so every CP-SAT solution is feasible in real time); the objective is scaled by 1000.
"""

from __future__ import annotations

import math
import time

from ortools.sat.python import cp_model

from qlm.solver.model import OnTimeModel, OnTimeResult
from qlm.solver.options import SolverOptions

__all__ = ["CPSATOnTime", "solve_on_time"]

_OBJ_SCALE = 1000


class CPSATOnTime:
    """Builds the CP-SAT model, one method per constraint family (see docs/solver.md)."""

    def __init__(self, data: OnTimeModel, options: SolverOptions) -> None:
        self.data = data
        self.options = options
        self.cp = cp_model.CpModel()
        self.y: list[cp_model.IntVar] = []
        self.z: dict[tuple[int, str, int], cp_model.IntVar] = {}
        self.work: dict[tuple[int, int], cp_model.IntVar] = {}
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

    def _ticks_up(self, seconds: float) -> int:
        return max(0, math.ceil(seconds / self.options.time_unit_s - 1e-9))

    def _ticks_down(self, seconds: float) -> int:
        return max(0, math.floor(seconds / self.options.time_unit_s + 1e-9))

    def _variables(self) -> None:
        """y[c]: candidate c on time; z[i,m,k]: model m swapped in on i by checkpoint k;
        W[i,k]: service time of on-time groups on i due by checkpoint k."""
        cp = self.cp
        self.y = [cp.new_bool_var(f"y{n}") for n in range(len(self.data.candidates))]
        for r, term in enumerate(self.data.instances):
            for m, buckets in term.model_buckets.items():
                for k in buckets:
                    self.z[(r, m, k)] = cp.new_bool_var(f"z{r}_{m}_{k}")
            if term.candidates:
                cap = self._ticks_down(term.checkpoints[-1] - term.start_s)
                for k in range(len(term.checkpoints)):
                    self.work[(r, k)] = cp.new_int_var(0, cap, f"W{r}_{k}")

    def _one_instance_per_group(self) -> None:
        """A group is on time on at most one instance: sum_i y[g,i] <= 1."""
        for idxs in self.data.by_group.values():
            if len(idxs) > 1:
                self.cp.add_at_most_one(self.y[n] for n in idxs)

    def _model_use(self) -> None:
        """y[g,i] => z[i,m_g,k_g] and z[i,m,k] => z[i,m,k'] for the next bucket k' of m."""
        for n, c in enumerate(self.data.candidates):
            key = (c.instance, c.model, c.bucket)
            if key in self.z:
                self.cp.add_implication(self.y[n], self.z[key])
        for r, term in enumerate(self.data.instances):
            for m, buckets in term.model_buckets.items():
                for a, b in zip(buckets, buckets[1:], strict=False):
                    self.cp.add_implication(self.z[(r, m, a)], self.z[(r, m, b)])

    def _cumulative_work(self) -> None:
        """W[i,k] = W[i,k-1] + sum of p[g,i] * y[g,i] over candidates in bucket k."""
        for r, term in enumerate(self.data.instances):
            if not term.candidates:
                continue
            by_bucket: dict[int, list[int]] = {}
            for n in term.candidates:
                by_bucket.setdefault(self.data.candidates[n].bucket, []).append(n)
            for k in range(len(term.checkpoints)):
                members = by_bucket.get(k, [])
                exprs: list[cp_model.IntVar] = [self.work[(r, k)]]
                coeffs = [1]
                if k > 0:
                    exprs.append(self.work[(r, k - 1)])
                    coeffs.append(-1)
                exprs.extend(self.y[n] for n in members)
                coeffs.extend(-self._ticks_up(self.data.candidates[n].service_s)
                              for n in members)
                self.cp.add(cp_model.LinearExpr.weighted_sum(exprs, coeffs) == 0)

    def _edf_deadlines(self) -> None:
        """start_i + W[i,k] + sum_m swap[i,m] * z[i,m,last bucket of m <= k] <= d_k."""
        for r, term in enumerate(self.data.instances):
            if not term.candidates:
                continue
            latest: dict[str, int] = {}  # model -> last bucket <= k
            starts: dict[int, list[str]] = {}
            for m, buckets in term.model_buckets.items():
                for b in buckets:
                    starts.setdefault(b, []).append(m)
            swap_ticks = {m: self._ticks_up(c) for m, c in term.swap_s.items()}
            for k, d_k in enumerate(term.checkpoints):
                for m in starts.get(k, ()):
                    latest[m] = k
                exprs = [self.work[(r, k)], *(self.z[(r, m, b)] for m, b in latest.items())]
                coeffs = [1, *(swap_ticks[m] for m in latest)]
                rhs = self._ticks_down(d_k - term.start_s)
                self.cp.add(cp_model.LinearExpr.weighted_sum(exprs, coeffs) <= rhs)

    def _objective(self) -> None:
        """max sum reward[c] * y[c] - swap_penalty * sum_{i,m} z[i,m,last bucket]."""
        coeffs = [round(c.reward * _OBJ_SCALE) for c in self.data.candidates]
        pen = round(self.data.swap_penalty * _OBJ_SCALE)
        swaps = [self.z[(r, m, b[-1])] for r, t in enumerate(self.data.instances)
                 for m, b in t.model_buckets.items()]
        self.cp.maximize(cp_model.LinearExpr.weighted_sum(
            [*self.y, *swaps], [*coeffs, *([-pen] * len(swaps))]))

    def _hint(self) -> None:
        """Hint the greedy/previous plan's on-time pairs, completed with the z and W values
        they imply, so that CP-SAT can take a feasible hint as its first solution."""
        on = self.data.hint
        for n, y in enumerate(self.y):
            self.cp.add_hint(y, n in on)
        used: dict[tuple[int, str], int] = {}
        work: dict[tuple[int, int], int] = {}
        for n in on:
            c = self.data.candidates[n]
            used[(c.instance, c.model)] = min(used.get((c.instance, c.model), c.bucket), c.bucket)
            key = (c.instance, c.bucket)
            work[key] = work.get(key, 0) + self._ticks_up(c.service_s)
        for (r, m, k), z in self.z.items():
            first = used.get((r, m))
            self.cp.add_hint(z, first is not None and first <= k)
        for r, term in enumerate(self.data.instances):
            total = 0
            for k in range(len(term.checkpoints) if term.candidates else 0):
                total += work.get((r, k), 0)
                self.cp.add_hint(self.work[(r, k)], total)

    def solve(self, time_limit: float) -> OnTimeResult:
        """Solve within ``time_limit`` seconds (wall, or deterministic if requested)."""
        solver = cp_model.CpSolver()
        params = solver.parameters
        params.num_workers = self.options.num_workers
        params.random_seed = self.options.seed
        if self.options.deterministic:
            params.max_deterministic_time = max(time_limit, 0.001)
        else:
            params.max_time_in_seconds = max(time_limit, 0.001)
        code = solver.solve(self.cp)
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return OnTimeResult("none", None)
        chosen = [n for n, y in enumerate(self.y) if solver.boolean_value(y)]
        status = "optimal" if code == cp_model.OPTIMAL else "feasible"
        return OnTimeResult(status, chosen, solver.objective_value / _OBJ_SCALE)


def solve_on_time(data: OnTimeModel, time_limit: float, options: SolverOptions) -> OnTimeResult:
    """Build and solve the CP-SAT on-time model; ``time_limit`` covers both (building the model
    in Python takes a noticeable share of it on large instances)."""
    if not data.candidates:
        return OnTimeResult("optimal", [], 0.0)
    t0 = time.perf_counter()
    model = CPSATOnTime(data, options)
    return model.solve(time_limit - (time.perf_counter() - t0))
