"""Turn an on-time selection (group sets per instance) into ordered queues.

Per instance the on-time groups are ordered by the best (by the exact per-instance score) of:
EDF; EDF with same-model *pull-forward* (before a swap, later groups of the current model are
pulled ahead while every group that EDF keeps on time still is); model blocks (current model
first, then by earliest deadline). Groups the exact layout finds late leave the on-time part
and join the tail (``greedy.place_tail``) with all other unselected groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from qlm.solver._index import EPS, ProblemIndex, Timeline
from qlm.solver.greedy import FleetState, place_tail
from qlm.solver.options import SolverOptions

__all__ = ["order_on_time", "queues_from_selection"]


def _layout(idx: ProblemIndex, tl: Timeline, order: Sequence[str]) -> tuple[float, set[str]]:
    """Score (on-time value - swap penalties) and on-time ids of an order from ``tl``."""
    tl = tl.copy()
    penalty = idx.problem.weights.swap_penalty
    score = 0.0
    ok: set[str] = set()
    iid = tl.inst.id
    for gid in order:
        g = idx.groups[gid]
        swapped, _, _, ft = tl.append(g.model, idx.service(gid, iid))
        if swapped:
            score -= penalty
        if ft <= g.deadline_s + EPS:
            score += idx.value[gid]
            ok.add(gid)
    return score, ok


def _all_meet(idx: ProblemIndex, tl: Timeline, order: Sequence[str], must: set[str]) -> bool:
    tl = tl.copy()
    iid = tl.inst.id
    for gid in order:
        g = idx.groups[gid]
        _, _, _, ft = tl.append(g.model, idx.service(gid, iid))
        if gid in must and ft > g.deadline_s + EPS:
            return False
    return True


def _pull_forward(idx: ProblemIndex, tl: Timeline, edf: list[str]) -> list[str]:
    tl = tl.copy()
    rest = list(edf)
    out: list[str] = []
    iid = tl.inst.id
    while rest:
        head = rest[0]
        cur = tl.model
        if cur is not None and idx.groups[head].model != cur:
            _, must = _layout(idx, tl, rest)
            while True:
                j = next((n for n, gid in enumerate(rest) if idx.groups[gid].model == cur), None)
                if j is None:
                    break
                trial = tl.copy()
                trial.append(cur, idx.service(rest[j], iid))
                remaining = rest[:j] + rest[j + 1:]
                if not _all_meet(idx, trial, remaining, must - {rest[j]}):
                    break
                tl = trial
                out.append(rest[j])
                rest = remaining
            if not rest:
                break
            head = rest[0]
        g = idx.groups[head]
        tl.append(g.model, idx.service(head, iid))
        out.append(head)
        rest.pop(0)
    return out


def _blocks(idx: ProblemIndex, tl: Timeline, edf: list[str]) -> list[str]:
    by_model: dict[str, list[str]] = {}
    for gid in edf:
        by_model.setdefault(idx.groups[gid].model, []).append(gid)
    keys = sorted(by_model, key=lambda m: (m != tl.model, idx.edf_key(by_model[m][0])))
    return [gid for m in keys for gid in by_model[m]]


def order_on_time(
    idx: ProblemIndex, tl: Timeline, groups: Iterable[str], options: SolverOptions
) -> tuple[list[str], list[str]]:
    """Best order of on-time candidates on one instance -> (on-time order, late ids)."""
    edf = sorted(groups, key=idx.edf_key)
    if not edf:
        return [], []
    orders = [edf, _blocks(idx, tl, edf)]
    if len(edf) <= options.pull_forward_limit:
        orders.insert(1, _pull_forward(idx, tl, edf))
    best: list[str] = edf
    best_score = float("-inf")
    for order in orders:  # first best wins: EDF, pull-forward, blocks
        score, _ = _layout(idx, tl, order)
        if score > best_score + EPS:
            best, best_score = order, score
    late: list[str] = []
    order = list(best)
    while True:  # drop late groups; repeat since the layout changes
        _, ok = _layout(idx, tl, order)
        drop = [gid for gid in order if gid not in ok]
        if not drop:
            return order, late
        late.extend(drop)
        order = [gid for gid in order if gid in ok]


def queues_from_selection(
    idx: ProblemIndex,
    timelines: Mapping[str, Timeline],
    pinned_queues: Mapping[str, Sequence[str]],
    selection: Mapping[str, Iterable[str]],
    options: SolverOptions,
) -> tuple[dict[str, list[str]], list[str]]:
    """Queues (pinned, ordered on-time part, then tail) and rejected ids for a selection."""
    queues: dict[str, list[str]] = {iid: list(q) for iid, q in pinned_queues.items()}
    placed: set[str] = {gid for q in queues.values() for gid in q}
    tail: list[str] = []
    for iid in queues:
        on_time, late = order_on_time(idx, timelines[iid], selection.get(iid, ()), options)
        queues[iid].extend(on_time)
        placed.update(on_time)
        tail.extend(late)
    tail.extend(g.id for g in idx.problem.groups if g.id not in placed and g.id not in tail)
    fleet = FleetState(idx)
    fleet.append_queues(queues)
    rejected = place_tail(idx, fleet, tail)
    return fleet.queues, rejected
