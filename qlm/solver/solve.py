"""Single entry point of the global scheduler: ``solve(problem, backend, time_limit, hint)``.

Pipeline (on-time backends): greedy plan -> local search on its on-time sets (``improve.py``)
-> pruned on-time program with the best plan so far (or the previous plan) as hint -> backend
-> queues rebuilt and re-scored by ``evaluate`` -> the best of greedy, local search and backend.
The backend is skipped when the time left is too small for the model's size (the local search
then gets the whole budget). The returned plan is never worse than greedy by the program's own
objective. The ``qlm-paper`` baseline returns its own plan (or its EDF fallback) unguarded.
"""

from __future__ import annotations

import time

from qlm.solver._index import ProblemIndex
from qlm.solver.greedy import edf_queues, greedy_queues
from qlm.solver.improve import LocalSearch
from qlm.solver.model import OnTimeResult, build_model, pinned_timelines
from qlm.solver.options import SolverOptions
from qlm.solver.plan import Plan, Schedule, SolveStatus, simulate
from qlm.solver.problem import SchedulingProblem
from qlm.solver.pulp.paper import PaperResult
from qlm.solver.reconstruct import queues_from_selection
from qlm.solver.registry import get_backend

__all__ = ["MIN_SOLVER_TIME_S", "greedy_plan", "solve"]

MIN_SOLVER_TIME_S = 0.005
"""The backend is skipped (greedy returned) when less than this is left of time_limit."""

_MAX_RESERVE_SHARE = 0.25
"""The measured reserve for rebuilding and scoring is capped at this share of time_limit."""

_STATUS = {"optimal": SolveStatus.OPTIMAL, "feasible": SolveStatus.FEASIBLE}


def _plan(sched: Schedule, status: SolveStatus, greedy_obj: float, backend: str, t0: float,
          program_objective: float | None = None, note: str = "") -> Plan:
    return Plan(status=status, objective=sched.objective, greedy_objective=greedy_obj,
                backend=backend, solve_s=time.perf_counter() - t0, queues=sched.queues,
                decisions=sched.decisions, swaps=sched.swaps, terms=sched.terms,
                program_objective=program_objective, note=note)


def _hint_pairs(plan: Plan | None, problem: SchedulingProblem) -> dict[str, str]:
    """On-time (group -> instance) pairs of a previous plan that still make sense."""
    if plan is None:
        return {}
    groups = {g.id: g for g in problem.groups}
    hosts = {i.id: set(i.hostable_models) for i in problem.instances}
    out: dict[str, str] = {}
    for d in plan.decisions:
        g = groups.get(d.group_id)
        if (d.meets_slo and d.instance_id is not None and g is not None
                and g.model in hosts.get(d.instance_id, set())):
            out[d.group_id] = d.instance_id
    return out


def _on_time_pairs(sched: Schedule, pinned: dict[str, list[str]]) -> dict[str, str]:
    pinned_ids = {g for q in pinned.values() for g in q}
    return {d.group_id: d.instance_id for d in sched.decisions
            if d.meets_slo and d.instance_id is not None and d.group_id not in pinned_ids}


def greedy_plan(problem: SchedulingProblem) -> Plan:
    """The greedy plan alone (status GREEDY, backend "greedy")."""
    t0 = time.perf_counter()
    idx = ProblemIndex(problem)
    g = greedy_queues(idx)
    sched = simulate(problem, g.queues, g.rejected, index=idx)
    return _plan(sched, SolveStatus.GREEDY, sched.objective, "greedy", t0)


def solve(
    problem: SchedulingProblem,
    backend: str = "cpsat",
    time_limit: float = 1.0,
    hint: Plan | None = None,
    *,
    options: SolverOptions | None = None,
) -> Plan:
    """Plan one scheduling epoch.

    Parameters
    ----------
    problem
        The validated snapshot.
    backend
        A registered backend name (``qlm.solver.known_backends()``).
    time_limit
        Wall-clock budget in seconds for the whole call: greedy, local search (its share, or
        all when the backend is skipped), the backend (what is left, model building included),
        less a reserve for rebuilding and scoring the result. The greedy plan, model building
        in PuLP and the reconstruction are not interruptible; with ``options.deterministic``
        the search and CP-SAT are bounded by work, not by the clock.
    hint
        The previous epoch's plan: its on-time assignments warm-start the backend.
    options
        Engineering knobs (:class:`SolverOptions`).

    Raises
    ------
    UnknownBackendError, BackendUnavailableError
        Both ``ValueError``: unknown name (message lists known ones) / solver not installed.
    """
    t0 = time.perf_counter()
    opts = options or SolverOptions()
    info = get_backend(backend)
    run = info.load()
    idx = ProblemIndex(problem)
    greedy = greedy_queues(idx)
    t_sim = time.perf_counter()
    g_sched = simulate(problem, greedy.queues, greedy.rejected, index=idx)
    # what is left to do after the search (rebuild queues, score, build the plan) is measured
    # in layouts of the whole plan; keep that much of the budget back, under load too (capped:
    # one layout stretched by a preemption must not starve the search)
    reserve = min(_MAX_RESERVE_SHARE * time_limit,
                  max(opts.reserve_share * time_limit, 6 * (time.perf_counter() - t_sim)))
    g_obj = g_sched.objective

    def left() -> float:
        return time_limit - (time.perf_counter() - t0)

    if info.kind == "full":
        res = run(idx, max(left(), MIN_SOLVER_TIME_S), opts)
        assert isinstance(res, PaperResult)
        if res.queues is None:
            sched = simulate(problem, edf_queues(idx), index=idx)
            return _plan(sched, SolveStatus.EDF_FALLBACK, g_obj, backend, t0, note=res.note)
        sched = simulate(problem, res.queues, index=idx)
        return _plan(sched, _STATUS[res.status], g_obj, backend, t0, res.objective)

    timelines, pinned_q = pinned_timelines(idx)
    horizon = problem.horizon_s
    scope = [g.id for g in problem.groups if g.pinned_instance is None
             and (horizon is None or g.deadline_s <= horizon)]
    best, status, on_time, note = g_sched, SolveStatus.GREEDY, dict(greedy.on_time), ""
    search = LocalSearch(idx, timelines, greedy.on_time, scope)
    # Budget: the local search gets local_search_share of time_limit, the backend what is
    # left less the reserve; when that is too little for the model's size, the backend is
    # skipped and the search gets everything but the reserve. With options.deterministic
    # these decisions use the nominal budget (never the clock) and the search counts walks.
    backend_s = MIN_SOLVER_TIME_S + opts.backend_s_per_candidate * search.model_size_estimate(opts)
    ls_s = opts.local_search_share * time_limit
    if opts.deterministic:
        reserve = opts.reserve_share * time_limit
        backend_fits = time_limit - ls_s - reserve >= backend_s
        backend_limit = time_limit - ls_s - reserve
    else:
        backend_fits = left() - ls_s - reserve >= backend_s
    if not backend_fits:
        ls_s = (time_limit if opts.deterministic else left()) - reserve
    if opts.local_search_share > 0 and ls_s > 0:
        if opts.deterministic:
            search.run(float("inf"), max_walks=round(ls_s * opts.walks_per_s))
        else:
            search.run(time.perf_counter() + ls_s)
        queues, rejected = queues_from_selection(idx, timelines, pinned_q, search.sets(), opts)
        ls_sched = simulate(problem, queues, rejected, index=idx)
        if ls_sched.objective > best.objective + 1e-9:
            best, status = ls_sched, SolveStatus.HEURISTIC
            on_time = _on_time_pairs(ls_sched, pinned_q)

    if not opts.deterministic:
        backend_limit = left() - reserve
        backend_fits = backend_limit >= backend_s
    if not backend_fits:
        return _plan(best, status, g_obj, backend, t0,
                     note="backend skipped: time limit too small for the model size")
    previous = _hint_pairs(hint, problem)
    model = build_model(idx, {**on_time, **previous}, opts, keep=on_time)
    result = run(model, backend_limit, opts)
    assert isinstance(result, OnTimeResult)
    if result.chosen is None:
        return _plan(best, status, g_obj, backend, t0,
                     note="backend returned no solution in time")
    selection: dict[str, list[str]] = {}
    for n in result.chosen:
        c = model.candidates[n]
        selection.setdefault(model.instances[c.instance].instance_id, []).append(c.group)
    queues, rejected = queues_from_selection(idx, timelines, pinned_q, selection, opts)
    sched = simulate(problem, queues, rejected, index=idx)
    if sched.objective <= best.objective + 1e-9:
        note = f"backend plan scored {sched.objective:.3f}, not better; {status.value} kept"
        return _plan(best, status, g_obj, backend, t0, result.objective, note=note)
    return _plan(sched, _STATUS[result.status], g_obj, backend, t0, result.objective)
