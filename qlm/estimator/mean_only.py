"""The QLM paper's mean-only RWT estimator, as a drop-in for :class:`RWTEstimator` (ablation).

The paper (RWT estimator section) models the work ahead of a request as ``n`` requests of the
model's output-length distribution, whose sum is Normal(n*mu, n*sigma^2) by the CLT, and the
wait as that work over the profiled token throughput of the (model, GPU), plus swap time where
the model changes along the queue. Its prototype uses only the mean:
``n * workload_tokens / token_throughput[model]``, and ignores prefill. This class makes every
input the ``qlm`` policy decides with that prototype formula, so that the policy can run with
it in place of ours (``registry.create("qlm", estimator="mean-only")``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qlm.domain.request import Request
from qlm.estimator.rwt import GroupLoad, PoolMember, RWTEstimator
from qlm.estimator.waiting import WaitSamples
from qlm.runtime.view import InstanceView

__all__ = ["MeanOnlyEstimator"]


class MeanOnlyEstimator(RWTEstimator):
    """:class:`RWTEstimator` whose decision inputs are the paper's mean-only model.

    Contract:

    - Learning is :class:`RWTEstimator`'s (``observe``, ``observe_arrival``, the length model,
      prompt sizes, arrival rates), so the means are the learned ones.
    - ``mean_tokens(model)``: the model-level mean output length (the paper's
      ``workload_tokens``: one distribution per model, not per SLO class);
      ``token_throughput(inst, model)``: tokens per second of a full decode batch from the
      profile (the paper's ``token_throughput[model]`` per (model, GPU); no online correction,
      no prefill).
    - :meth:`group_service`: ``mean = size * mean_tokens / token_throughput``, ``std = 0``
      (``inf`` mean where the instance cannot host the model).
    - Waits are degenerate :class:`WaitSamples` (every sample the same value), so
      ``p_within(t)`` is 1 when the wait is ``<= t`` and 0 otherwise; ``ahead`` is the ``n`` of
      the formula:

      - :meth:`wait_at` and :meth:`dispatch_wait`: :meth:`~RWTEstimator.baseline_wait` over the
        request's virtual queue (``n`` = running, less ``exclude``, + queued ahead; swaps
        where the model changes); dispatched now, the queue is the request alone, so ``n`` is
        the running batch (the value recorded as ``pred_wait_base_s``).
      - :meth:`replay_wait` (left queued under load balancing): the same formula over the
        pool the policy balances across (not in the paper, which predicts per virtual queue):
        ``n`` = in flight on the members serving the model now (less ``exclude``) + the
        queued requests of the groups before ``r``'s in deadline order + those of its group
        ahead of it; throughput = the members' summed ``token_throughput``; when no member
        serves the model yet, plus the soonest ``ready_s``. :meth:`resume_wait` never resumes
        (returns None: the policy asks :meth:`replay_wait`, which is cheap here).

    Not changed: the pulling rule (``admits``, ``projected_tokens``, ``capacity``), the
    engine-prefill ordering of idle instances (``engine_first_token``, ``prefill_free_at``),
    ``step_times`` and ``queue_waits``: they are the policy's LSOs, not its predictions.
    """

    def mean_tokens(self, model: str) -> float:
        """The model-level mean output length (learned; the prior before enough data)."""
        return self.lengths.mean_var(model, "")[0]

    def _point(self, w: float, ahead: int) -> WaitSamples:
        return WaitSamples(np.full(self.config.samples, float(w)), ahead, self.config.n_clt)

    def group_service(
        self, groups: Sequence[GroupLoad], instances: Sequence[InstanceView]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(G, I)``: ``size * mean_tokens / token_throughput`` seconds, std 0."""
        models = sorted({g.model for g in groups})
        mi = {m: n for n, m in enumerate(models)}
        per_token = np.full((len(models), len(instances)), np.inf)  # seconds per output token
        for i, inst in enumerate(instances):
            for m in models:
                if m in inst.profiles:
                    per_token[mi[m], i] = 1.0 / self.token_throughput(inst, m)
        tokens = np.array([g.size * self.mean_tokens(g.model) for g in groups], dtype=float)
        mean = tokens[:, None] * per_token[[mi[g.model] for g in groups]].reshape(len(groups), len(instances))
        return mean, np.zeros_like(mean)

    def wait_at(
        self,
        inst: InstanceView,
        queue: Sequence[Request],
        index: int,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> WaitSamples:
        ahead = len(inst.outstanding) - sum(1 for q in inst.outstanding.values() if q.id in exclude) + index
        return self._point(self.baseline_wait(inst, queue, index, exclude), ahead)

    def dispatch_wait(
        self, inst: InstanceView, r: Request, now: float, before: float = 0.0, join_rate: float | None = None
    ) -> WaitSamples:
        return self._point(self.baseline_wait(inst, [r], 0), len(inst.outstanding))

    def resume_wait(self, r: Request, group_id: str, now: float, key: object) -> WaitSamples | None:
        return None

    def replay_wait(
        self,
        members: Sequence[PoolMember],
        groups: Sequence[tuple[str, Sequence[Request]]],
        order: Sequence[int],
        r: Request,
        now: float,
        key: object = None,
        exclude: frozenset[str] | set[str] = frozenset(),
        urgent: Sequence[tuple[str, float]] = (),
        replan_s: float | None = None,
    ) -> WaitSamples:
        model = r.model
        mine = next((k for k, (_, reqs) in enumerate(groups) if any(q is r for q in reqs)), None)
        if mine is None:
            raise ValueError(f"{r.id} is not among the queued requests given")
        n = 0
        for k in order:
            if k == mine:
                break
            n += len(groups[k][1])
        n += next(j for j, q in enumerate(groups[mine][1]) if q is r)
        tput = 0.0
        serving = False
        ready = np.inf
        for pm in members:
            inst = pm.inst
            if model not in inst.profiles:
                continue
            tput += self.token_throughput(inst, model)
            if pm.ready_s > 0 or inst.active_model != model:
                ready = min(ready, pm.ready_s)
                continue
            serving = True
            n += sum(1 for q in inst.outstanding.values() if q.id not in exclude)
        if tput <= 0:
            return self._point(np.inf, n)
        w = (0.0 if serving else ready) + n * self.mean_tokens(model) / tput
        return self._point(w, n)
