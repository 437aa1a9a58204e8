"""Solver-neutral data of the on-time selection program (the "model" layer).

The program chooses which groups run *on time* on which instance. On one machine, a set of
jobs can all meet their deadlines iff EDF order does, so for every instance ``i`` and every
deadline checkpoint ``d_k`` (ascending)::

    start_i + sum(p[g,i] * y[g,i] for g with deadline <= d_k)
            + sum(swap[i,m] * z[i,m,k] for models m)            <= d_k

where ``z[i,m,k]`` = 1 when some on-time group of model ``m`` with deadline <= ``d_k`` runs
on ``i`` (each non-active model charged once per prefix: a relaxation, the order is rebuilt
and re-scored exactly afterwards). Backends (``qlm/solver/ortools``, ``qlm/solver/pulp``)
translate :class:`OnTimeModel` into their own variables; see ``docs/solver.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from qlm.solver._index import EPS, ProblemIndex, Timeline
from qlm.solver.greedy import FleetState
from qlm.solver.options import SolverOptions

__all__ = [
    "Candidate",
    "InstanceTerms",
    "OnTimeModel",
    "OnTimeResult",
    "build_model",
    "pinned_timelines",
]


@dataclass(frozen=True)
class Candidate:
    """A (group, instance) pair that could meet its deadline: one binary ``y``."""

    group: str
    instance: int
    model: str
    service_s: float
    bucket: int
    """Index of the group's (rounded-down) deadline among the instance's checkpoints."""
    reward: float
    """Objective coefficient: value + throughput proxy."""


@dataclass
class InstanceTerms:
    """Per-instance data: start after pinned work, checkpoints, swap costs, candidates."""

    instance_id: str
    start_s: float
    checkpoints: list[float]
    swap_s: dict[str, float]
    """Activation cost of every model with candidates here that is not active after pinning."""
    candidates: list[int] = field(default_factory=list)
    model_buckets: dict[str, list[int]] = field(default_factory=dict)
    """Sorted checkpoint indices where a swapped-in model has candidates (z[i,m,k] exists)."""


@dataclass
class OnTimeModel:
    """Everything a backend needs; indices into ``candidates`` identify the ``y`` binaries."""

    candidates: list[Candidate]
    instances: list[InstanceTerms]
    by_group: dict[str, list[int]]
    swap_penalty: float
    hint: set[int]
    scope: list[str]
    """Groups the program decides about; every other unpinned group goes to the tail."""
    timelines: dict[str, Timeline]
    """Instance timelines after pinned groups (start state of the on-time part)."""
    pinned_queues: dict[str, list[str]]

    @property
    def size(self) -> int:
        return len(self.candidates)


@dataclass
class OnTimeResult:
    """A backend's answer: chosen candidate indices, or None if it found nothing."""

    status: str
    """"optimal", "feasible" or "none"."""
    chosen: list[int] | None
    objective: float | None = None


def pinned_timelines(idx: ProblemIndex) -> tuple[dict[str, Timeline], dict[str, list[str]]]:
    """Timelines after the pinned groups (EDF at the head of their instance), and their queues."""
    timelines = {iid: idx.timeline(iid) for iid in idx.instances}
    queues: dict[str, list[str]] = {iid: [] for iid in idx.instances}
    pinned = [g.id for g in idx.problem.groups if g.pinned_instance is not None]
    for gid in sorted(pinned, key=idx.edf_key):
        iid = idx.groups[gid].pinned_instance
        assert iid is not None
        timelines[iid].append(idx.groups[gid].model, idx.service(gid, iid))
        queues[iid].append(gid)
    return timelines, queues


def build_model(
    idx: ProblemIndex,
    hint_on_time: Mapping[str, str],
    options: SolverOptions,
    keep: Mapping[str, str] | None = None,
) -> OnTimeModel:
    """Build the pruned on-time program.

    Candidates: (g, i) with i hosting g's model and ``start_i + swap + p <= deadline`` alone.
    When there are more than ``options.full_pairs_limit`` of them, each group keeps its
    ``max_candidates`` best instances by a load-aware estimate (start + swap + service + the
    hint's on-time work on i due no later than g), plus its hint instance and ``keep[g]``.
    """
    problem = idx.problem
    w = problem.weights
    timelines, pinned_queues = pinned_timelines(idx)
    inst_ids = [i.id for i in problem.instances]
    horizon = problem.horizon_s
    scope = [
        g.id for g in problem.groups
        if g.pinned_instance is None and (horizon is None or g.deadline_s <= horizon)
    ]
    fleet = FleetState(idx)
    n_inst = len(inst_ids)
    start = np.array([timelines[i].t for i in inst_ids])
    models = list(fleet.model_ix)
    swap = np.full((n_inst, len(models)), np.inf)
    for r, iid in enumerate(inst_ids):
        tl = timelines[iid]
        for m in tl.inst.hostable_models:
            swap[r, fleet.model_ix[m]] = tl.activation_cost(m)
    if not scope:
        return OnTimeModel([], [InstanceTerms(i, float(start[r]), [], {}) for r, i in
                                enumerate(inst_ids)], {}, w.swap_penalty, set(), [],
                           timelines, pinned_queues)
    gm = np.array([fleet.model_ix[idx.groups[g].model] for g in scope])
    deadline = np.array([idx.groups[g].deadline_s for g in scope])
    p = np.stack([fleet.service_vector(g) for g in scope], axis=1)  # (N, G)
    s = swap[:, gm]  # (N, G)
    alone = start[:, None] + s + p
    feasible = alone <= deadline[None, :] + EPS
    hint_rows = np.array([fleet.pos.get(hint_on_time.get(g, ""), -1) for g in scope])
    extra = keep
    keep_mask = feasible
    if int(feasible.sum()) > options.full_pairs_limit and n_inst > options.max_candidates:
        # load-aware estimate: hint's on-time work on i due no later than g's deadline
        load = np.zeros((n_inst, len(scope)))
        order = np.argsort(deadline, kind="stable")
        for r in range(n_inst):
            mine = hint_rows == r
            if mine.any():
                work = np.where(mine, p[r], 0.0)[order]
                cum = np.cumsum(work)
                sorted_d = deadline[order]
                pos = np.searchsorted(sorted_d, deadline, side="right") - 1
                load[r] = np.where(pos >= 0, cum[np.maximum(pos, 0)], 0.0)
                load[r] -= np.where(mine, p[r], 0.0)
        est = np.where(feasible, alone + load, np.inf)
        k = options.max_candidates
        top = np.argpartition(est, k - 1, axis=0)[:k]  # (k, G)
        keep_mask = np.zeros_like(feasible)
        np.put_along_axis(keep_mask, top, True, axis=0)
        keep_mask &= feasible
        cols = np.nonzero(hint_rows >= 0)[0]
        keep_mask[hint_rows[cols], cols] |= feasible[hint_rows[cols], cols]
        if extra is not None:
            extra_rows = np.array([fleet.pos.get(extra.get(g, ""), -1) for g in scope])
            cols = np.nonzero(extra_rows >= 0)[0]
            keep_mask[extra_rows[cols], cols] |= feasible[extra_rows[cols], cols]
    terms = [InstanceTerms(iid, float(start[r]), [], {}) for r, iid in enumerate(inst_ids)]
    rows, cols = np.nonzero(keep_mask)
    per_inst: dict[int, list[int]] = {}
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        per_inst.setdefault(r, []).append(c)
    candidates: list[Candidate] = []
    by_group: dict[str, list[int]] = {}
    hint: set[int] = set()
    scale = idx.scale
    for r in sorted(per_inst):
        cols_r = per_inst[r]
        term = terms[r]
        dl = sorted({float(deadline[c]) for c in cols_r})
        if len(dl) > options.max_checkpoints:
            picks = np.linspace(0, len(dl) - 1, options.max_checkpoints).round().astype(int)
            dl = sorted({dl[j] for j in picks.tolist()})
        term.checkpoints = dl
        cps = np.array(dl)
        for c in sorted(cols_r, key=lambda c: idx.edf_key(scope[c])):
            gid = scope[c]
            g = idx.groups[gid]
            bucket = int(np.searchsorted(cps, g.deadline_s + EPS, side="right") - 1)
            bucket = max(bucket, 0)  # deadline below the first checkpoint cannot happen
            model = g.model
            if timelines[term.instance_id].model != model:
                term.swap_s.setdefault(model, float(swap[r, gm[c]]))
                buckets = term.model_buckets.setdefault(model, [])
                if not buckets or buckets[-1] != bucket:
                    buckets.append(bucket)
            reward = idx.value[gid] + w.throughput_weight * g.size * max(
                0.0, 1.0 - float(alone[r, c]) / scale)
            n = len(candidates)
            candidates.append(Candidate(gid, r, model, float(p[r, c]), bucket, reward))
            term.candidates.append(n)
            by_group.setdefault(gid, []).append(n)
            if hint_rows[c] == r:
                hint.add(n)
    for term in terms:
        for buckets in term.model_buckets.values():
            buckets.sort()
    return OnTimeModel(candidates, terms, by_group, w.swap_penalty, hint, scope,
                       timelines, pinned_queues)
