"""The RWT (request waiting time) estimator: what a control plane can predict about a wait.

It combines the output-length model (:mod:`qlm.estimator.lengths`), the service-rate model
(:mod:`qlm.estimator.service`) and the queueing arithmetic (:mod:`qlm.estimator.waiting`)
over what :class:`~qlm.runtime.view.InstanceView` shows: the running batch (``outstanding``),
the active model, its residency and swap costs. Two kinds of query:

- :meth:`RWTEstimator.queue_waits`: the sampled first-token time of every request of one
  instance's virtual queue (running batch, then queued requests in order, model swaps where
  the model changes). Cost: one fixed-point list schedule over ``samples`` scenarios.
- :meth:`RWTEstimator.group_service`: mean and std of the time a whole group occupies each
  instance (``size * E[out] * tau / B``, Normal by the CLT), vectorised over every
  (group, instance) pair, for the planner.

:meth:`RWTEstimator.baseline_wait` is the QLM paper's mean-only estimator
(``n * mean_tokens / token_throughput`` plus swap time), kept as a named baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qlm.domain.request import Request
from qlm.estimator.lengths import LengthPrior, OutputLengthModel
from qlm.estimator.service import ServiceRateModel, StepTimes
from qlm.estimator.waiting import Segment, WaitSamples, queue_starts
from qlm.perf.swap_model import Residency
from qlm.runtime.events import EngineEvent, Finished
from qlm.runtime.view import ClusterView, InstanceState, InstanceView

__all__ = ["EstimatorConfig", "GroupLoad", "RWTEstimator"]


@dataclass(frozen=True, slots=True)
class EstimatorConfig:
    """Knobs of the RWT estimator.

    ``samples`` scenarios per query (common random numbers from ``seed``, so a query's
    answer depends only on the state it is asked about); ``n_clt`` requests ahead from which
    P(meet) uses the Normal approximation; ``exact_jobs`` queued jobs per segment solved
    exactly (default ``3 * B``); ``prompt_prior`` mean prompt tokens before any arrival.
    """

    samples: int = 64
    seed: int = 0
    n_clt: int = 30
    exact_jobs: int | None = None
    release_cache_s: float = 2.0  # reuse an instance's slot-release samples (time-shifted) this long
    # while its in-flight count moved by at most 10%
    prompt_prior: float = 600.0
    prompt_alpha: float = 0.02
    length_prior: LengthPrior = LengthPrior()
    length_window: int = 2000
    length_min_obs: int = 30
    online_service: bool = True
    kv_quantile: float = 0.8


@dataclass(frozen=True, slots=True)
class GroupLoad:
    """What the planner's service estimate needs to know about one group."""

    model: str
    slo_class: str
    size: int


class RWTEstimator:
    """Waiting-time distributions for requests at positions of virtual queues.

    Contract: deterministic (fixed seed per query); never reads a clock (``now`` is passed);
    learns only from ``observe`` (completions and prompt sizes); never sees true output
    lengths of requests still in flight.
    """

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        self.config = cfg = config or EstimatorConfig()
        self.lengths = OutputLengthModel(
            cfg.length_prior, window=cfg.length_window, min_obs=cfg.length_min_obs
        )
        self.service = ServiceRateModel()
        self._prompt: dict[str, float] = {}
        self._prompt_cls: dict[tuple[str, str], float] = {}
        u = np.random.default_rng(cfg.seed).random((cfg.samples, 4096))
        self._u = u  # common random numbers, columns recycled cyclically
        self._release_cache: dict[str, tuple[object, float, np.ndarray, int]] = {}

    # ---- learning -----------------------------------------------------------------------
    def set_prompt_prior(self, model: str, slo_class: str, mean_tokens: float) -> None:
        """Configured mean prompt tokens of a (model, class), the start of its EWMA."""
        self._prompt_cls[(model, slo_class)] = mean_tokens
        self._prompt.setdefault(model, mean_tokens)

    def observe_arrival(self, request: Request) -> None:
        a = self.config.prompt_alpha
        p = request.prompt_tokens
        old = self._prompt.get(request.model, self.config.prompt_prior)
        self._prompt[request.model] = (1 - a) * old + a * p
        key = (request.model, request.slo_class)
        old = self._prompt_cls.get(key, p)
        self._prompt_cls[key] = (1 - a) * old + a * p

    def observe(self, event: EngineEvent, view: ClusterView) -> None:
        """Learn from a completion: its output length, and its TPOT against the prediction."""
        if not isinstance(event, Finished):
            return
        r = view.requests.get(event.request_id)
        if r is None:
            return
        self.lengths.observe(r.model, r.slo_class, r.generated_tokens)
        inst = view.instances.get(event.instance_id)
        if (
            not self.config.online_service
            or inst is None
            or r.evictions
            or r.first_token_s is None
            or r.generated_tokens < 8
        ):
            return
        prof = inst.profiles.get(r.model)
        if prof is None:
            return
        occ = len(inst.outstanding) + 1
        st = self.step_times(inst, r.model, occ, corrected=False)
        observed = (event.t - r.first_token_s) / (r.generated_tokens - 1)
        self.service.observe_tpot(inst.id, r.model, observed, st.tau_s)

    # ---- building blocks ----------------------------------------------------------------
    def mean_prompt(self, model: str, slo_class: str | None = None) -> float:
        if slo_class is not None and (model, slo_class) in self._prompt_cls:
            return self._prompt_cls[(model, slo_class)]
        return self._prompt.get(model, self.config.prompt_prior)

    def projected_tokens(self, r: Request) -> float:
        """KV tokens ``r`` may hold when it ends: prompt + min(output ``kv_quantile``,
        max_tokens). Above the mean, so that a batch rarely outgrows the KV cache (the engine
        would preempt, by recompute, the newest requests: usually the urgent ones)."""
        q = self.lengths.tail(r.model, r.slo_class, self.config.kv_quantile)
        cap = q if r.max_tokens is None else min(q, r.max_tokens)
        return r.prompt_tokens + cap

    def capacity(
        self, inst: InstanceView, model: str | None = None, slo_class: str | None = None
    ) -> int:
        """Batch capacity (slots) for requests of ``(model, slo_class)``: ``max_num_seqs``
        or what the KV cache holds at their typical size (prompt + output)."""
        m = model or inst.pending_model or inst.active_model
        if m is None or m not in inst.profiles:
            return 0
        mean_out, _ = self.lengths.mean_var(m, slo_class or "")
        typical = self.mean_prompt(m, slo_class) + mean_out
        return ServiceRateModel.capacity(inst.profiles[m], typical)

    def segment_slots(self, inst: InstanceView, model: str, jobs: Sequence[Request]) -> int:
        """Slots for a run of ``jobs``: ``max_num_seqs`` or the KV cache over their mean
        projected size (the same rule :meth:`admits` applies request by request)."""
        prof = inst.profiles[model]
        head = jobs[: 4 * prof.max_num_seqs]
        typical = sum(self.projected_tokens(r) for r in head) / max(1, len(head))
        return ServiceRateModel.capacity(prof, typical)

    def slot_weights(
        self, inst: InstanceView, model: str, slots: int, exclude: frozenset[str] | set[str] = frozenset()
    ) -> np.ndarray:
        """Slots each in-flight request of ``inst`` takes (in :meth:`running_residuals`
        order) when a slot is ``kv_capacity / slots`` tokens: a long batch request holds the KV
        of several short ones."""
        prof = inst.profiles[model]
        slot_tokens = prof.kv_capacity_tokens / max(1, slots)
        reqs = sorted((r for r in inst.outstanding.values() if r.id not in exclude), key=lambda r: r.id)
        x = np.array([self.projected_tokens(r) / slot_tokens for r in reqs])
        if not len(x):
            return np.zeros(0, dtype=int)
        # integer slots summing to ceil(total): a slot is free only if a whole one is left
        w = np.maximum(1, np.floor(x)).astype(int)
        short = int(np.ceil(x.sum() - 1e-9)) - int(w.sum())
        if short > 0:
            order = np.lexsort((np.arange(len(x)), -(x - np.floor(x))))
            w[order[:short]] += 1
        return w

    def occupied_slots(self, inst: InstanceView, model: str, slo_class: str | None) -> tuple[int, int]:
        """(slots taken by in-flight work, slots) for requests of ``(model, slo_class)``."""
        b = self.capacity(inst, model, slo_class)
        if not inst.outstanding or inst.active_model is None:
            return 0, b
        return int(self.slot_weights(inst, inst.active_model, b).sum()), b

    def admits(self, inst: InstanceView, r: Request, held_tokens: float, held: int) -> bool:
        """Whether ``inst`` should take ``r`` now, holding ``held`` requests whose projected
        KV is ``held_tokens``: under ``max_num_seqs`` and within the KV cache."""
        prof = inst.profiles[r.model]
        if held >= prof.max_num_seqs:
            return False
        return held == 0 or held_tokens + self.projected_tokens(r) <= prof.kv_capacity_tokens

    def step_times(
        self,
        inst: InstanceView,
        model: str,
        batch: int | None = None,
        *,
        slo_class: str | None = None,
        corrected: bool = True,
    ) -> StepTimes:
        """Step times of ``model`` on ``inst`` at ``batch`` (default: its capacity), with the
        mean lengths of ``slo_class`` (default: the model's)."""
        b = self.capacity(inst, model, slo_class) if batch is None else batch
        mean_out, _ = self.lengths.mean_var(model, slo_class or "")
        prompt = self.mean_prompt(model, slo_class)
        return self.service.step_times(
            inst.id, inst.profiles[model], b, prompt, mean_out, corrected=corrected
        )

    def _uniforms(self, n: int, offset: int = 0) -> np.ndarray:
        cols = (np.arange(n) + offset) % self._u.shape[1]
        return self._u[:, cols]

    def running_residuals(
        self, inst: InstanceView, now: float, exclude: frozenset[str] | set[str] = frozenset()
    ) -> np.ndarray:
        """``(S, R)`` sampled seconds until each in-flight request of ``inst`` leaves
        (``exclude``: ids about to be evicted)."""
        reqs = sorted(
            (r for r in inst.outstanding.values() if r.id not in exclude), key=lambda r: r.id
        )
        s = self.config.samples
        if not reqs or inst.active_model is None:
            return np.zeros((s, 0))
        model = inst.active_model
        st = self.step_times(inst, model, max(1, len(reqs)))
        now_st = st
        u = self._uniforms(len(reqs), offset=2048)
        out = np.empty((s, len(reqs)))
        pending = sorted(
            (r for r in reqs if r.first_token_s is None or r.evictions),
            key=lambda r: (r.dispatched_s or 0.0, r.id),
        )
        backlog: dict[str, float] = {}
        acc = 0.0
        for r in pending:  # prefill runs FCFS; every prompt delays every sequence
            acc += r.prompt_tokens + r.generated_tokens
            backlog[r.id] = acc * st.prefill_s_per_token
        n = len(reqs)
        gen = np.empty(n)
        lead = np.zeros(n)
        cap = np.full(n, np.inf)
        by_key: dict[tuple[str, str], list[int]] = {}
        for j, r in enumerate(reqs):
            start = r.first_token_s if r.first_token_s is not None and not r.evictions else None
            if start is None:  # not started (or resumed): whole output ahead
                gen[j] = float(r.generated_tokens)
                lead[j] = st.decode_s + backlog.get(r.id, 0.0)
            else:
                gen[j] = r.generated_tokens + max(0.0, now - start) / now_st.tau_s
            if r.max_tokens is not None:
                cap[j] = r.max_tokens
            by_key.setdefault((r.model, r.slo_class), []).append(j)
        for (m, c), cols in by_key.items():  # one vectorised draw per (model, class)
            idx = np.array(cols)
            g = gen[idx]
            f = self.lengths.cdf(m, c, g)
            x = np.minimum(self.lengths.quantile(m, c, f + u[:, idx] * (1 - f)), cap[idx])
            out[:, idx] = lead[idx] + np.maximum(1.0, x - g) * st.decode_s
        return out

    def prefill_rate(self, inst: InstanceView, model: str, running: int) -> float:
        """Prompt tokens per second the engine prefills while ``running`` sequences decode:
        one ``max_num_batched_tokens`` chunk per step."""
        prof = inst.profiles[model]
        chunk = prof.max_num_batched_tokens
        mean_out, _ = self.lengths.mean_var(model, "")
        ctx = int(running * (self.mean_prompt(model) + mean_out / 2))
        step = prof.step_time(chunk, running, ctx) * self.service.factor(inst.id, model)
        return chunk / step

    def pending_prefill_tokens(self, inst: InstanceView) -> float:
        """Prompt tokens dispatched to ``inst`` and not yet prefilled (no first token)."""
        return float(
            sum(
                r.prompt_tokens + r.generated_tokens
                for r in inst.outstanding.values()
                if r.first_token_s is None or r.evictions
            )
        )

    def swap_s(self, inst: InstanceView, prev: str | None, nxt: str, woken: set[str]) -> float:
        """Seconds to switch ``prev`` -> ``nxt`` on ``inst`` (0 when equal); a model the queue
        put to sleep earlier (``woken``) wakes from CPU RAM."""
        if prev == nxt:
            return 0.0
        costs = inst.swap_costs[nxt]
        res = Residency.SLEEP_L1 if nxt in woken else inst.residency.get(nxt, Residency.COLD)
        t = costs.activate_s(res)
        if prev is not None:
            t += inst.swap_costs[prev].sleep_s
        return t

    # ---- queries ------------------------------------------------------------------------
    def queue_waits(
        self,
        inst: InstanceView,
        queue: Sequence[Request],
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sampled first-token times (seconds from ``now``) of every request of ``queue``
        (in order) on ``inst``, and the number of requests ahead of each (``exclude``:
        in-flight ids about to be evicted)."""
        s = self.config.samples
        running = self.running_residuals(inst, now, exclude)
        if not queue:
            return np.zeros((s, 0)), np.zeros(0, dtype=int)
        cur = inst.pending_model if inst.pending_model is not None else inst.active_model
        swap_left = 0.0
        if inst.state is InstanceState.SWAPPING and inst.pending_model is not None:
            started = inst.swap_started_s if inst.swap_started_s is not None else now
            swap_left = max(0.0, started + inst.activate_cost_s(inst.pending_model) - now)
        elif inst.state is InstanceState.DRAINING and inst.pending_model is not None:
            swap_left = inst.activate_cost_s(inst.pending_model)
        segments: list[Segment] = []
        woken: set[str] = {inst.active_model} if inst.active_model else set()
        prev = cur
        i = 0
        offset = 0
        while i < len(queue):
            model = queue[i].model
            j = i
            while j < len(queue) and queue[j].model == model:
                j += 1
            jobs = queue[i:j]
            if not segments:
                sw = swap_left + (inst.activate_cost_s(model) if model != cur else 0.0)
            else:
                sw = self.swap_s(inst, prev, model, woken)
            woken.add(model)
            b = self.segment_slots(inst, model, jobs)
            st = self.step_times(inst, model, b, slo_class=jobs[0].slo_class)
            u = self._uniforms(len(jobs), offset)
            offset += len(jobs)
            dur = np.empty((s, len(jobs)))
            ft = np.empty(len(jobs))
            prompts = np.empty(len(jobs))
            for k, r in enumerate(jobs):
                x = self.lengths.quantile(r.model, r.slo_class, u[:, k])
                if r.max_tokens is not None:
                    x = np.minimum(x, r.max_tokens)
                dur[:, k] = np.maximum(1.0, x - r.generated_tokens) * st.decode_s
                prompts[k] = r.prompt_tokens + r.generated_tokens
                ft[k] = st.first_token_s(prompts[k])
            first_seg = not segments and sw == 0.0
            backlog = self.pending_prefill_tokens(inst) if first_seg else 0.0
            # prefill ahead of job k: the backlog plus the prompts of jobs 0..k-1
            ahead_tokens = backlog + np.concatenate([[0.0], np.cumsum(prompts)[:-1]])
            prefill = ahead_tokens * st.prefill_s_per_token
            if not segments and running.shape[1]:  # in-flight work in units of this segment's slots
                running = np.repeat(running, self.slot_weights(inst, model, b, exclude), axis=1)
            segments.append(Segment(b, sw, dur, ft, prefill))
            prev = model
            i = j
        return queue_starts(running, segments, self.config.exact_jobs)

    def wait_at(
        self,
        inst: InstanceView,
        queue: Sequence[Request],
        index: int,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> WaitSamples:
        """The waiting-time distribution of ``queue[index]`` (seconds from ``now``)."""
        ft, ahead = self.queue_waits(inst, queue[: index + 1], now, exclude)
        return WaitSamples(ft[:, index], int(ahead[index]), self.config.n_clt)

    def slot_release_times(
        self,
        inst: InstanceView,
        model: str,
        slots: int,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> np.ndarray:
        """``(S, slots)`` sampled seconds from ``now`` at which each of ``inst``'s ``slots``
        slots (sized for the request being predicted) is free for new work: 0 for a free slot;
        when in-flight work holds ``w`` slot-units, the ``j``-th slot frees at the
        ``(w - slots + j)``-th release (a long request holds several units)."""
        s = self.config.samples
        if not inst.outstanding or inst.active_model != model:
            return np.zeros((s, slots))
        n_out = len(inst.outstanding)
        key = (model, slots, frozenset(exclude))
        hit = self._release_cache.get(inst.id)
        if (hit is not None and hit[0] == key and now - hit[1] <= self.config.release_cache_s
                and abs(hit[3] - n_out) <= max(1, n_out // 10)):
            # the same in-flight set a moment ago: shift its release times by the elapsed time
            return np.maximum(0.0, hit[2] - (now - hit[1]))
        running = self.running_residuals(inst, now, exclude)
        held = np.sort(np.repeat(running, self.slot_weights(inst, model, slots, exclude), axis=1), axis=1)
        w = held.shape[1]
        out = held[:, w - slots:] if w >= slots else np.concatenate([np.zeros((s, slots - w)), held], axis=1)
        self._release_cache[inst.id] = (key, now, out, n_out)
        return out

    def pooled_wait(
        self,
        instances: Sequence[InstanceView],
        r: Request,
        ahead: int,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> WaitSamples:
        """Waiting time of ``r`` when every instance in ``instances`` (those serving its model)
        takes queued requests of that model in deadline order as slots free (load balancing):
        ``r`` starts at the ``(ahead + 1)``-th earliest slot release of the pool (beyond the
        pool's slots, the fluid continuation: one more mean job duration per slot), then
        prefills on the instance that released that slot (a mean over the pool)."""
        s = self.config.samples
        blocks = []
        firsts = []
        mean_dur = []
        prefill_rate = 0.0
        backlog = ahead * self.mean_prompt(r.model, r.slo_class)
        caps = [self.capacity(inst, r.model, r.slo_class) for inst in instances]
        free_now = 0
        for inst, b in zip(instances, caps, strict=True):
            if b > 0:
                held = self.slot_weights(inst, r.model, b, exclude).sum() if inst.outstanding else 0
                free_now += max(0, b - int(held))
        sample = free_now <= ahead  # otherwise a slot is free for r now: no release sampling
        for inst, b in zip(instances, caps, strict=True):
            if b <= 0:
                continue
            blocks.append(self.slot_release_times(inst, r.model, b, now, exclude) if sample
                          else np.zeros((s, 0)))
            st = self.step_times(inst, r.model, b, slo_class=r.slo_class)
            firsts.append(st.first_token_s(r.prompt_tokens + r.generated_tokens))
            mean_out, _ = self.lengths.mean_var(r.model, r.slo_class)
            mean_dur.append(mean_out * st.decode_s)
            prefill_rate += 1.0 / st.prefill_s_per_token
            backlog += self.pending_prefill_tokens(inst)
        if not blocks:
            return WaitSamples(np.full(s, np.inf), ahead, self.config.n_clt)
        pool = np.concatenate(blocks, axis=1)
        n = pool.shape[1]
        if not sample:
            start = np.zeros(s)
        elif ahead < n:
            start = np.partition(pool, ahead, axis=1)[:, ahead]
        else:
            last = pool.max(axis=1)
            start = last + (ahead - n + 1) * float(np.mean(mean_dur)) / n
        # prompts dispatched and not yet prefilled, and those of the requests ahead, go
        # through the pool's chunked prefill before this one's
        start = np.maximum(start, backlog / prefill_rate)
        running_ahead = sum(len(i.outstanding) for i in instances)
        return WaitSamples(start + float(np.mean(firsts)), ahead + running_ahead, self.config.n_clt)

    def baseline_wait(
        self, inst: InstanceView, queue: Sequence[Request], index: int
    ) -> float:
        """QLM paper's mean-only estimate: ``n * mean_tokens / token_throughput`` over the
        ``n`` requests ahead (running and queued), plus swap time where the model changes."""
        running = len(inst.outstanding)
        cur = inst.pending_model if inst.pending_model is not None else inst.active_model
        t = inst.activate_cost_s(inst.pending_model) if inst.pending_model else 0.0
        woken: set[str] = {inst.active_model} if inst.active_model else set()
        prev = cur
        n_by_model: dict[str, int] = {}
        if cur is not None:
            n_by_model[cur] = running
        for r in queue[:index]:
            if r.model != prev:
                t += self.swap_s(inst, prev, r.model, woken)
                woken.add(r.model)
                prev = r.model
            n_by_model[r.model] = n_by_model.get(r.model, 0) + 1
        target = queue[index].model
        if target != prev:
            t += self.swap_s(inst, prev, target, woken)
        for m, n in n_by_model.items():
            prof = inst.profiles.get(m)
            if prof is None or n == 0:
                continue
            b = self.capacity(inst, m)
            tput = prof.decode_throughput(b, self.mean_prompt(m))
            mean_out, _ = self.lengths.mean_var(m, "")
            t += n * mean_out / tput
        return t

    def group_service(
        self, groups: Sequence[GroupLoad], instances: Sequence[InstanceView]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(G, I)`` mean and std of the seconds a group occupies an instance's full batch
        (``size * E[out] * tau / B``; std by the CLT); ``inf`` where the model is not hostable.
        """
        keys = sorted({(g.model, g.slo_class) for g in groups})
        ki = {k: n for n, k in enumerate(keys)}
        rate = np.full((len(keys), len(instances)), np.inf)  # seconds per output token
        for i, inst in enumerate(instances):
            for m, c in keys:
                if m in inst.profiles:
                    st = self.step_times(inst, m, slo_class=c)
                    rate[ki[(m, c)], i] = st.tau_s / st.batch
        mv = np.array([self.lengths.mean_var(g.model, g.slo_class) for g in groups]).reshape(-1, 2)
        size = np.array([g.size for g in groups], dtype=float)
        r = rate[[ki[(g.model, g.slo_class)] for g in groups]]
        mean = (size * mv[:, 0])[:, None] * r
        std = (np.sqrt(size * mv[:, 1]))[:, None] * r
        return mean, std
