"""Local search on the on-time sets: the fast improvement phase of :func:`qlm.solver.solve`.

State: per instance, a set of groups that all meet their deadlines when run in EDF order
after the instance's pinned work (the greedy plan's on-time part to begin with). Its score is
the on-time value minus ``swap_penalty`` per model change of that EDF walk. Every move below is
checked by an exact walk and applied only when it strictly raises the total score, so the
search terminates; ties between moves of equal gain go to the first found (groups by value,
then EDF key; instances in problem order).

Moves, for each group ``g`` outside the on-time part (highest value first):

* *insert*: ``g`` joins an instance's set (``swap_penalty`` charged if it adds a swap);
* *eject*: ``g`` joins instance ``i``'s set in place of one group ``e`` there; ``e`` is
  *relocated* to the best other instance where it fits as is (an ejection chain of depth 2:
  the move that makes room for large groups on a busy fleet), else it leaves the on-time part
  (only worth it when ``v_e < v_g``) and may come back later as an outside group;
* *eject two*: as *eject*, with a pair ``e1, e2`` of ``i``'s groups, each relocated if it
  fits elsewhere.

A cheap slack test (finish times and suffix slack of each instance's walk) picks the few
instances and groups worth an exact walk. Bounded by a wall-clock deadline and by a count of
exact walks (``max_walks``; deterministic whatever the machine's speed).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qlm.solver._index import EPS, ProblemIndex, Timeline
from qlm.solver.greedy import FleetState
from qlm.solver.options import SolverOptions

__all__ = ["LocalSearch"]

_LEVELS: list[tuple[int, int, bool]] = [(6, 5, False), (24, 12, False), (24, 12, True)]
"""Neighbourhood stages: (instances tried for an ejection, smallest shortfall first; groups of
one instance tried as the ejected one, longest first; whether pairs are ejected)."""


@dataclass
class _Move:
    gain: float
    row: int
    new_order: list[str]
    relocate: list[tuple[str, int, list[str]]]
    """(ejected group, target row, target's new order) for each relocated ejected group."""
    dropped: list[str]


class LocalSearch:
    """Insert / eject / relocate search over per-instance EDF on-time sets (module doc)."""

    def __init__(
        self,
        idx: ProblemIndex,
        timelines: Mapping[str, Timeline],
        on_time: Mapping[str, str],
        scope: Sequence[str],
    ) -> None:
        problem = idx.problem
        self.penalty = problem.weights.swap_penalty
        self.ids = [i.id for i in problem.instances]
        self.base = [timelines[iid] for iid in self.ids]
        fleet = FleetState(idx)  # model and instance numbering
        n = len(self.ids)
        self.deadline = {gid: idx.groups[gid].deadline_s for gid in scope}
        self.key = {gid: idx.edf_key(gid) for gid in scope}
        self.model = {gid: idx.groups[gid].model for gid in scope}
        self.value = {gid: idx.value[gid] for gid in scope}
        start = np.array([tl.t for tl in self.base])
        act = np.full((n, len(fleet.model_ix)), np.inf)  # activation cost after pinned work
        for r, tl in enumerate(self.base):
            for m in tl.inst.hostable_models:
                act[r, fleet.model_ix[m]] = tl.activation_cost(m)
        scope = list(scope)
        p = idx.service_matrix(scope)  # (N, G)
        gm = [fleet.model_ix[self.model[g]] for g in scope]
        ok = start[:, None] + act[:, gm] + p <= np.array([self.deadline[g] for g in scope]) + EPS
        self.svc = idx.service_by_type
        self.itype = [tl.inst.instance_type for tl in self.base]
        g_at, r_at = np.nonzero(ok.T)  # group-major, so each host list comes out sorted
        cuts = np.searchsorted(g_at, np.arange(1, len(scope))).tolist()
        self.hosts: dict[str, list[int]] = dict(
            zip(scope, (a.tolist() for a in np.split(r_at, cuts)), strict=False))
        self.order: list[list[str]] = [[] for _ in range(n)]
        for gid, iid in on_time.items():
            if gid in self.key:
                self.order[fleet.pos[iid]].append(gid)
        self.owner: dict[str, int] = {}
        self.score: list[float] = [0.0] * n
        self.fin: list[list[float]] = [[] for _ in range(n)]
        self.slack: list[list[float]] = [[] for _ in range(n)]
        self.keys: list[list[tuple[float, float, str]]] = [[] for _ in range(n)]
        self.by_size: list[list[tuple[float, int, str]]] = [[] for _ in range(n)]
        """Per row: (service time, EDF position, group), longest first."""
        self.walks = 0
        self.version = 0
        self._cache: dict[str, tuple[int, list[tuple[float, int, list[str]]]]] = {}
        for r in range(n):
            self.order[r].sort(key=self.key.__getitem__)
            self._commit(r, self.order[r], check=False)
        self.outside = [g for g in scope if g not in self.owner]

    def _p(self, gid: str, r: int) -> float:
        return self.svc[(gid, self.itype[r])]

    # -- exact walk ------------------------------------------------------------------------
    def _walk(self, r: int, order: Sequence[str]) -> tuple[float, list[float]] | None:
        """(score, finish times) of ``order`` on row ``r`` if every group meets, else None."""
        self.walks += 1
        tl = self.base[r]
        inst = tl.inst
        svc, itype = self.svc, self.itype[r]
        t, cur, seen = tl.t, tl.model, set(tl.seen)
        score = 0.0
        fin: list[float] = []
        for gid in order:
            m = self.model[gid]
            if m != cur:
                if m in seen:
                    back = tl.swap_back
                    t += back if m == inst.active_model else min(inst.swap_in_s[m], back)
                else:
                    t += inst.swap_in_s[m]
                    seen.add(m)
                cur = m
                score -= self.penalty
            t += svc[(gid, itype)]
            if t > self.deadline[gid] + EPS:
                return None
            score += self.value[gid]
            fin.append(t)
        return score, fin

    def _commit(self, r: int, order: list[str], check: bool = True) -> None:
        """Make ``order`` row ``r``'s on-time set; refresh its walk, slack and lookups."""
        res = self._walk(r, order)
        if res is None:
            if check:
                raise AssertionError(f"local search: infeasible order on row {r}")
            # an initial set that does not all meet in EDF order: keep those that do
            kept: list[str] = []
            for gid in order:
                if self._walk(r, [*kept, gid]) is not None:
                    kept.append(gid)
            order = kept
            res = self._walk(r, order)
            assert res is not None
        score, fin = res
        self.order[r] = order
        self.score[r] = score
        self.fin[r] = fin
        slack = [0.0] * len(order)
        low = float("inf")
        for k in range(len(order) - 1, -1, -1):
            low = min(low, self.deadline[order[k]] - fin[k])
            slack[k] = low
        self.slack[r] = slack
        self.keys[r] = [self.key[g] for g in order]
        itype = self.itype[r]
        self.by_size[r] = sorted(((self.svc[(g, itype)], k, g) for k, g in enumerate(order)),
                                 key=lambda x: (-x[0], self.key[x[2]]))
        self.version += 1
        for gid in order:
            self.owner[gid] = r

    def _with(self, r: int, gid: str, without: Sequence[str] = ()) -> list[str]:
        """Row ``r``'s order with ``gid`` inserted at its EDF place and ``without`` removed."""
        order = [x for x in self.order[r] if x not in without] if without else self.order[r]
        keys = [self.key[x] for x in order] if without else self.keys[r]
        k = bisect_left(keys, self.key[gid])
        return [*order[:k], gid, *order[k:]]

    def _shortfall(self, r: int, gid: str) -> float:
        """Lower estimate of the time missing to insert ``gid`` on row ``r`` (<= 0: may fit)."""
        k = bisect_left(self.keys[r], self.key[gid])
        before = self.fin[r][k - 1] if k > 0 else self.base[r].t
        p = self._p(gid, r)
        own = before + p - self.deadline[gid]
        after = p - self.slack[r][k] if k < len(self.slack[r]) else own
        return max(own, after)

    # -- moves -----------------------------------------------------------------------------
    def _inserts(self, gid: str) -> list[tuple[float, int, list[str]]]:
        """Best plain insertions of ``gid`` now: up to 3 (gain, row, new order), best first.

        Cached until the next change of any instance (moves are rare next to evaluations).
        """
        hit = self._cache.get(gid)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        found: list[tuple[float, int, list[str]]] = []
        full = self.value[gid] - EPS
        own = self.owner.get(gid)
        for r in self.hosts[gid]:
            if r == own or self._shortfall(r, gid) > EPS:
                continue
            order = self._with(r, gid)
            res = self._walk(r, order)
            if res is None:
                continue
            found.append((res[0] - self.score[r], r, order))
            if sum(1 for x in found if x[0] >= full) >= 3:
                break  # three without a new swap: nothing can do better
        found.sort(key=lambda x: -x[0])  # stable: ties keep problem order
        self._cache[gid] = (self.version, found[:3])
        return found[:3]

    def _best_insert(self, gid: str, exclude: Sequence[int] = ()) -> tuple[float, int, list[str]]:
        """Best plain insertion of ``gid`` (gain, row, new order) on a row not in ``exclude``;
        gain -inf if none."""
        for move in self._inserts(gid):
            if move[1] not in exclude:
                return move
        return float("-inf"), -1, []

    def _eject(self, gid: str, level: tuple[int, int, bool],
               out_of_time: Callable[[], bool]) -> _Move | None:
        """Best ejection move for an outside group (module doc), or None."""
        hosts_tried, eject_tried, pairs = level
        short = sorted((self._shortfall(r, gid), r) for r in self.hosts[gid])
        best: _Move | None = None
        v = self.value[gid]
        slack_pen = 2 * self.penalty
        for need, r in [x for x in short if x[0] > EPS][:hosts_tried]:
            if out_of_time():
                break
            # g itself late by `own`: only groups ahead of it (EDF) can make room for that
            k = bisect_left(self.keys[r], self.key[gid])
            own = (self.fin[r][k - 1] if k > 0 else self.base[r].t) + self._p(gid, r) \
                - self.deadline[gid]
            big = self.by_size[r][:eject_tried]
            pb = [p for p, _, _ in big]
            pa = [p if pos < k else 0.0 for p, pos, _ in big]
            big_ids = [x for _, _, x in big]
            # upper bound of a move's gain: ejected groups with no relocation are lost
            lost = [0.0 if self._best_insert(x, exclude=(r,))[0] > EPS else self.value[x]
                    for x in big_ids]
            outs: list[tuple[float, tuple[str, ...]]] = [
                (v - lost[n] + slack_pen, (big_ids[n],)) for n in range(len(big))
                if pb[n] >= need - EPS and pa[n] >= own - EPS]
            if pairs:
                outs += [(v - lost[a] - lost[b] + 2 * slack_pen, (big_ids[a], big_ids[b]))
                         for a in range(len(big)) for b in range(a + 1, len(big))
                         if pb[a] + pb[b] >= need - EPS and pa[a] + pa[b] >= own - EPS]
            for bound, out in outs:
                if best is not None and best.gain >= v - EPS:
                    return best
                if bound <= EPS or (best is not None and bound <= best.gain + EPS):
                    continue
                new = self._with(r, gid, out)
                res = self._walk(r, new)
                if res is None:
                    continue
                gain = res[0] - self.score[r]
                reloc: list[tuple[str, int, list[str]]] = []
                dropped: list[str] = []
                used = [r]
                for e in out:
                    g2, r2, o2 = self._best_insert(e, exclude=used)
                    if g2 > EPS:
                        gain += g2
                        reloc.append((e, r2, o2))
                        used.append(r2)
                    else:
                        dropped.append(e)
                if gain > EPS and (best is None or gain > best.gain + EPS):
                    best = _Move(gain, r, new, reloc, dropped)
        return best

    def _apply(self, gid: str, move: _Move) -> None:
        """Carry out an ejection move found for outside group ``gid``."""
        for e in move.dropped:
            del self.owner[e]
        self._commit(move.row, move.new_order)
        for _, r2, o2 in move.relocate:
            self._commit(r2, o2)
        self.outside.extend(move.dropped)
        assert self.owner[gid] == move.row

    def _pass(self, stage: int, out_of_time: Callable[[], bool]) -> bool:
        """One sweep over the outside groups at one neighbourhood stage; True if some move
        was applied."""
        improved = False
        level = _LEVELS[stage]
        todo = sorted(set(self.outside) - self.owner.keys(),
                      key=lambda g: (-self.value[g], self.key[g]))
        for gid in todo:
            if out_of_time():
                break
            if gid in self.owner or not self.hosts[gid]:
                continue
            gain, r, order = self._best_insert(gid)
            if gain > EPS:
                self._commit(r, order)
                improved = True
                continue
            move = self._eject(gid, level, out_of_time)
            if move is not None:
                self._apply(gid, move)
                improved = True
        self.outside = [g for g in {*self.outside, *todo} if g not in self.owner]
        self.outside.sort(key=lambda g: self.key[g])
        return improved

    def run(self, deadline: float, max_walks: int | None = None) -> None:
        """Improve until no move helps, ``time.perf_counter() > deadline`` or the walk cap.

        Neighbourhoods grow in stages (variable neighbourhood descent): cheap sweeps first,
        a larger one only when the smaller ones are exhausted, then back to the smallest.
        """
        def out_of_time() -> bool:
            return (time.perf_counter() > deadline
                    or (max_walks is not None and self.walks >= max_walks))

        level = 0
        while level < len(_LEVELS) and not out_of_time():
            level = 0 if self._pass(level, out_of_time) else level + 1

    def model_size_estimate(self, options: SolverOptions) -> int:
        """Candidates ``model.build_model`` would keep (same feasibility test, same pruning
        threshold; the pruned count assumes one extra instance per group for the hints)."""
        total = sum(len(h) for h in self.hosts.values())
        if total <= options.full_pairs_limit or len(self.ids) <= options.max_candidates:
            return total
        return sum(min(len(h), options.max_candidates + 1) for h in self.hosts.values())

    def sets(self) -> dict[str, list[str]]:
        """Instance id -> on-time groups in EDF order."""
        return {iid: list(self.order[r]) for r, iid in enumerate(self.ids)}

