"""Fast local search on the on-time sets (used when the time budget is too small for a MILP).

Moves, for each group outside the on-time part (highest value first): *insert* it into an
instance's EDF-ordered on-time set if every group there still meets its deadline; else
*exchange*: insert it and drop the groups it makes late when their total value is smaller.
Dropped groups go to the tail. Every accepted move strictly increases on-time value minus
swap penalties on that instance, so the search terminates.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from qlm.solver._index import EPS, ProblemIndex, Timeline
from qlm.solver.greedy import FleetState

__all__ = ["improve_on_time"]


def _score(idx: ProblemIndex, tl: Timeline, order: Sequence[str]) -> tuple[float, list[str]]:
    tl = tl.copy()
    score = 0.0
    late: list[str] = []
    for gid in order:
        g = idx.groups[gid]
        swapped, _, _, ft = tl.append(g.model, idx.service(gid, tl.inst.id))
        if swapped:
            score -= idx.problem.weights.swap_penalty
        if ft <= g.deadline_s + EPS:
            score += idx.value[gid]
        else:
            late.append(gid)
    return score, late


def improve_on_time(
    idx: ProblemIndex,
    timelines: Mapping[str, Timeline],
    on_time: Mapping[str, str],
    scope: Sequence[str],
    deadline: float,
    max_instances: int = 6,
) -> dict[str, list[str]]:
    """Improve an on-time assignment (group -> instance); returns instance -> EDF order.

    Stops at ``deadline`` (a ``time.perf_counter()`` value); the result is always valid.
    """
    sets: dict[str, list[str]] = {iid: [] for iid in timelines}
    for gid, iid in on_time.items():
        sets[iid].append(gid)
    for iid in sets:
        sets[iid].sort(key=idx.edf_key)
    scores = {iid: _score(idx, timelines[iid], sets[iid])[0] for iid in sets}
    outside = [g for g in scope if g not in on_time]
    outside.sort(key=lambda g: (-idx.value[g], idx.edf_key(g)))
    fleet = FleetState(idx)
    start = np.array([timelines[i].t for i in fleet.ids])
    queue = list(outside)
    while queue:
        if time.perf_counter() > deadline:
            break
        gid = queue.pop(0)
        g = idx.groups[gid]
        p = fleet.service_vector(gid)
        alone = start + p
        rows = [r for r in np.argsort(alone, kind="stable")[:max_instances].tolist()
                if alone[r] <= g.deadline_s + EPS]
        best: tuple[float, str, list[str], list[str]] | None = None
        for r in rows:
            iid = fleet.ids[r]
            trial = sorted([*sets[iid], gid], key=idx.edf_key)
            score, late = _score(idx, timelines[iid], trial)
            if gid in late:
                continue
            kept = [x for x in trial if x not in late]
            if late:
                score, late2 = _score(idx, timelines[iid], kept)
                if late2:
                    continue
            gain = score - scores[iid]
            if gain > EPS and (best is None or gain > best[0] + EPS):
                best = (gain, iid, kept, late)
        if best is not None:
            _, iid, kept, dropped = best
            sets[iid] = kept
            scores[iid] += best[0]
            queue.extend(d for d in dropped if idx.value[d] > 0)
    return sets
