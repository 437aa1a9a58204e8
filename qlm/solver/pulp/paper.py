"""Baseline: the QLM paper's global-scheduler MILP (SoCC'24), in PuLP/CBC.

x[i,g,j] = 1 if group g is at position j of instance i's queue (O(G * N * G) binaries);
model-change indicators per slot; cumulative completion time per slot; HARD deadlines
(completion <= deadline); objective: minimise total completion time. When the program is
infeasible (overload), too big to build, or finds nothing in time, the paper falls back to EDF
(``greedy.edf_queues``). Kept only for benchmarking: it is not guarded by the greedy plan.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pulp

from qlm.solver._index import ProblemIndex
from qlm.solver.model import pinned_timelines
from qlm.solver.options import SolverOptions

__all__ = ["PaperResult", "solve_paper"]


@dataclass
class PaperResult:
    """Queues of the paper's program, or None (caller falls back to EDF) with a reason."""

    queues: dict[str, list[str]] | None
    status: str
    note: str
    objective: float | None = None


def solve_paper(idx: ProblemIndex, time_limit: float, options: SolverOptions) -> PaperResult:
    """Build and solve the paper's x[i,g,j] program on CBC."""
    timelines, pinned_queues = pinned_timelines(idx)
    free = [g.id for g in idx.problem.groups if g.pinned_instance is None]
    hosted = {iid: [g for g in free if idx.groups[g].model in idx.instances[iid].hostable_models]
              for iid in idx.instances}
    binaries = sum(len(gs) ** 2 for gs in hosted.values())
    if binaries > options.paper_max_binaries:
        return PaperResult(None, "none", f"not built: {binaries} x[i,g,j] binaries "
                           f"> paper_max_binaries={options.paper_max_binaries}")
    lp = pulp.LpProblem("qlm_paper", pulp.LpMinimize)
    # [START variables]
    x: dict[tuple[str, str, int], pulp.LpVariable] = {}
    completion = {g: lp.add_variable(f"c_{n}", 0) for n, g in enumerate(free)}
    slot_end: dict[tuple[str, int], pulp.LpVariable] = {}
    change: dict[tuple[str, int, str], pulp.LpVariable] = {}
    for r, (iid, gs) in enumerate(hosted.items()):
        for j in range(len(gs)):
            slot_end[(iid, j)] = lp.add_variable(f"C_{r}_{j}", 0)
            for n, g in enumerate(gs):
                x[(iid, g, j)] = lp.add_variable(f"x_{r}_{n}_{j}", 0, 1, cat=pulp.LpBinary)
            for m in sorted({idx.groups[g].model for g in gs}):
                change[(iid, j, m)] = lp.add_variable(f"w_{r}_{j}_{len(change)}", 0)
    # [END variables]
    # [START constraints]
    for g in free:
        slots = [x[(iid, g, j)] for iid, gs in hosted.items() if g in gs for j in range(len(gs))]
        if not slots:
            continue  # hosted nowhere: deferred
        lp += pulp.lpSum(slots) == 1
    for iid, gs in hosted.items():
        tl = timelines[iid]
        horizon = tl.t + sum(idx.service(g, iid) for g in gs) + sum(
            tl.inst.swap_in_s[m] for m in tl.inst.hostable_models) * len(gs)
        models = sorted({idx.groups[g].model for g in gs})
        for j in range(len(gs)):
            occupied = pulp.lpSum(x[(iid, g, j)] for g in gs)
            lp += occupied <= 1
            if j + 1 < len(gs):
                lp += pulp.lpSum(x[(iid, g, j + 1)] for g in gs) <= occupied
            swap_time = []
            for m in models:
                here = pulp.lpSum(x[(iid, g, j)] for g in gs if idx.groups[g].model == m)
                if j == 0:
                    if m != tl.model:
                        lp += change[(iid, j, m)] >= here
                else:
                    before = pulp.lpSum(x[(iid, g, j - 1)] for g in gs
                                        if idx.groups[g].model == m)
                    lp += change[(iid, j, m)] >= here - before
                swap_time.append(tl.activation_cost(m) * change[(iid, j, m)])
            prev = slot_end[(iid, j - 1)] if j > 0 else tl.t
            lp += slot_end[(iid, j)] >= prev + pulp.lpSum(
                idx.service(g, iid) * x[(iid, g, j)] for g in gs) + pulp.lpSum(swap_time)
            for g in gs:
                lp += completion[g] >= slot_end[(iid, j)] - horizon * (1 - x[(iid, g, j)])
    for g in free:
        lp += completion[g] <= idx.groups[g].deadline_s  # HARD deadline (the paper's penalty<=0)
    # [END constraints]
    # [START objective]
    lp += pulp.lpSum(completion.values())
    # [END objective]
    with warnings.catch_warnings():  # PULP_CBC_CMD: bundled CBC, deprecated in PuLP 4
        warnings.simplefilter("ignore", DeprecationWarning)
        cbc = pulp.PULP_CBC_CMD(msg=False, timeLimit=max(time_limit, 0.01),
                                threads=options.num_workers)
    lp.solve(cbc)
    if lp.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        reason = "infeasible (hard deadlines)" if lp.status == pulp.LpStatusInfeasible else (
            "no solution within the time limit")
        return PaperResult(None, "none", reason)
    queues = {iid: list(q) for iid, q in pinned_queues.items()}
    for iid, gs in hosted.items():
        row = sorted((j, g) for g in gs for j in range(len(gs))
                     if (x[(iid, g, j)].value() or 0.0) > 0.5)
        queues[iid].extend(g for _, g in row)
    status = "optimal" if lp.sol_status == pulp.LpSolutionOptimal else "feasible"
    return PaperResult(queues, status, "", pulp.value(lp.objective))
