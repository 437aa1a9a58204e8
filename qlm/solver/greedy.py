"""Greedy plans: the always-available baseline, the MILP's hint, and the paper's EDF fallback.

Greedy (:func:`greedy_queues`): pinned groups first; then groups in EDF order (ties: larger
value, then id), each placed on an instance where it meets its deadline, preferring one with
the group's model already active, then the earliest first token (ties: problem order). Groups
that can meet nowhere, or are due after ``horizon_s``, go to the *tail* (:func:`place_tail`),
laid out after all on-time work, where they are scheduled (possibly late), rejected
(``can_reject`` and cheaper than being late) or deferred (would start after ``horizon_s``).

EDF (:func:`edf_queues`): the QLM paper's fallback: every group in EDF order on the instance
giving its earliest first token, late or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from qlm.solver._index import EPS, ProblemIndex

__all__ = ["FleetState", "GreedyResult", "edf_queues", "greedy_queues", "place_tail"]


class FleetState:
    """Vectorised per-instance timelines (same rules as ``_index.Timeline``)."""

    def __init__(self, idx: ProblemIndex) -> None:
        self.idx = idx
        insts = idx.problem.instances
        self.ids = [i.id for i in insts]
        self.pos = {iid: n for n, iid in enumerate(self.ids)}
        models = sorted({m for i in insts for m in i.hostable_models}
                        | {g.model for g in idx.problem.groups})
        self.model_ix = {m: n for n, m in enumerate(models)}
        n, m = len(insts), len(models)
        self.t = np.array([i.free_in_s for i in insts], dtype=float)
        self.cur = np.array(
            [self.model_ix[i.active_model] if i.active_model is not None else -1 for i in insts],
            dtype=np.int64,
        )
        self.act = np.full((n, m), np.inf)
        self.react = np.full((n, m), np.inf)
        for r, inst in enumerate(insts):
            back = idx.swap_back[inst.id]
            for model, cost in inst.swap_in_s.items():
                c = self.model_ix[model]
                self.react[r, c] = back if model == inst.active_model else min(cost, back)
                self.act[r, c] = self.react[r, c] if model == inst.active_model else cost
        self.queues: dict[str, list[str]] = {iid: [] for iid in self.ids}

    def service_vector(self, gid: str) -> np.ndarray:
        """Planning service time of a group on every instance (inf where not hostable)."""
        return self.idx.service_table[:, self.idx.group_pos[gid]]

    def activation(self, gid: str) -> np.ndarray:
        """Activation (swap) cost of the group's model on every instance, now."""
        m = self.model_ix[self.idx.groups[gid].model]
        return np.where(self.cur == m, 0.0, self.act[:, m])

    def finish(self, gid: str) -> tuple[np.ndarray, np.ndarray]:
        """(first-token time, activation cost) if the group were appended on each instance."""
        act = self.activation(gid)
        return self.t + act + self.service_vector(gid), act

    def append(self, gid: str, row: int) -> None:
        """Append a group to the queue of instance number ``row``."""
        m = self.model_ix[self.idx.groups[gid].model]
        if self.cur[row] != m:
            self.t[row] += self.act[row, m]
            if self.cur[row] >= 0:
                self.act[row, self.cur[row]] = self.react[row, self.cur[row]]
            self.cur[row] = m
        self.t[row] += self.service_vector(gid)[row]
        self.queues[self.ids[row]].append(gid)

    def append_queues(self, queues: Mapping[str, Sequence[str]]) -> None:
        """Append whole queues (e.g. the on-time part of a plan) in order."""
        for iid, queue in queues.items():
            row = self.pos[iid]
            for gid in queue:
                self.append(gid, row)

    def pick(self, gid: str, ft: np.ndarray, act: np.ndarray, mask: np.ndarray) -> int:
        """Row with the earliest first token in ``mask``, preferring no swap on ties."""
        cand = np.where(mask, ft, np.inf)
        best = cand.min()
        tied = cand <= best + EPS
        noswap = tied & (act == 0.0)
        return int(np.argmax(noswap)) if noswap.any() else int(np.argmax(tied))


def place_pinned(idx: ProblemIndex, fleet: FleetState) -> None:
    """Put pinned groups at the head of their instance's queue, in EDF order."""
    pinned = [g.id for g in idx.problem.groups if g.pinned_instance is not None]
    for gid in sorted(pinned, key=idx.edf_key):
        pinned_to = idx.groups[gid].pinned_instance
        assert pinned_to is not None
        fleet.append(gid, fleet.pos[pinned_to])


def place_tail(idx: ProblemIndex, fleet: FleetState, tail: Iterable[str]) -> list[str]:
    """Lay out groups after the on-time work; returns the rejected ids (see module doc)."""
    w = idx.problem.weights
    horizon = idx.problem.horizon_s
    rejected: list[str] = []
    for gid in sorted(tail, key=idx.edf_key):
        ft, act = fleet.finish(gid)
        finite = np.isfinite(ft)
        g = idx.groups[gid]
        if not finite.any():
            continue  # hosted nowhere: deferred
        row = fleet.pick(gid, ft, act, finite)
        finish = float(ft[row])
        if finish > g.deadline_s + EPS and g.can_reject:
            v = idx.value[gid]
            late = v * (w.late_penalty + w.tardiness_penalty_per_s * (finish - g.deadline_s))
            if v * w.reject_penalty < late:
                rejected.append(gid)
                continue
        start = finish - float(fleet.service_vector(gid)[row])
        if horizon is not None and start > horizon + EPS:
            continue  # deferred to a later epoch
        fleet.append(gid, row)
    return rejected


class GreedyResult:
    """Greedy queues, rejected ids, and the groups it placed on time (group -> instance)."""

    def __init__(self, queues: dict[str, list[str]], rejected: list[str],
                 on_time: dict[str, str]) -> None:
        self.queues = queues
        self.rejected = rejected
        self.on_time = on_time


def greedy_queues(idx: ProblemIndex) -> GreedyResult:
    """EDF with swap-aware placement and late groups moved to the tail (module docstring)."""
    fleet = FleetState(idx)
    place_pinned(idx, fleet)
    on_time: dict[str, str] = {}
    tail: list[str] = []
    horizon = idx.problem.horizon_s
    free = [g.id for g in idx.problem.groups if g.pinned_instance is None]
    for gid in sorted(free, key=idx.edf_key):
        if horizon is not None and idx.groups[gid].deadline_s > horizon:
            tail.append(gid)  # beyond the horizon: laid out after the on-time work
            continue
        ft, act = fleet.finish(gid)
        ok = ft <= idx.groups[gid].deadline_s + EPS
        if not ok.any():
            tail.append(gid)
            continue
        noswap = ok & (act == 0.0)
        row = fleet.pick(gid, ft, act, noswap if noswap.any() else ok)
        fleet.append(gid, row)
        on_time[gid] = fleet.ids[row]
    rejected = place_tail(idx, fleet, tail)
    return GreedyResult(fleet.queues, rejected, on_time)


def edf_queues(idx: ProblemIndex) -> dict[str, list[str]]:
    """The paper's fallback: EDF over all groups, each on its earliest-first-token instance."""
    fleet = FleetState(idx)
    place_pinned(idx, fleet)
    free = [g.id for g in idx.problem.groups if g.pinned_instance is None]
    for gid in sorted(free, key=idx.edf_key):
        ft, act = fleet.finish(gid)
        finite = np.isfinite(ft)
        if finite.any():
            fleet.append(gid, fleet.pick(gid, ft, act, finite))
    return fleet.queues
