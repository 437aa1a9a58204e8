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

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

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
    rate_window_s: float = 10.0  # arrival rates per (model, class) over this window
    model_sd: float = 0.1  # log-normal spread of pooled predictions (model error)


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
        self._pool_cache: dict[str, tuple[object, float, int, tuple[Any, ...]]] = {}
        self._arrivals: dict[tuple[str, str], deque[float]] = {}
        # standard normals (one per sample) for the model-error spread of pooled predictions
        self._z = ndtri((np.arange(cfg.samples) + 0.5) / cfg.samples)

    # ---- learning -----------------------------------------------------------------------
    def set_prompt_prior(self, model: str, slo_class: str, mean_tokens: float) -> None:
        """Configured mean prompt tokens of a (model, class), the start of its EWMA."""
        self._prompt_cls[(model, slo_class)] = mean_tokens
        self._prompt.setdefault(model, mean_tokens)

    def observe_arrival(self, request: Request) -> None:
        self._arrivals.setdefault((request.model, request.slo_class), deque()).append(request.arrival_s)
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

    # ---- pooled service under load balancing --------------------------------------------
    def mean_projected(self, model: str, slo_class: str) -> float:
        """Mean :meth:`projected_tokens` of a request of ``(model, slo_class)`` (mean prompt +
        the ``kv_quantile`` output length): the KV budget the pulling rule charges it."""
        return self.mean_prompt(model, slo_class) + self.lengths.tail(model, slo_class, self.config.kv_quantile)

    def arrival_rate(self, model: str, slo_class: str, now: float) -> float:
        """Arrivals per second of ``(model, slo_class)`` over the last ``rate_window_s``."""
        q = self._arrivals.get((model, slo_class))
        if not q:
            return 0.0
        w = self.config.rate_window_s
        while q and q[0] < now - w:
            q.popleft()
        return len(q) / w

    def engine_first_token(
        self, inst: InstanceView, model: str, prompt: float, now: float, *, fresh: bool = False
    ) -> float:
        """Seconds from a dispatch to ``inst`` now to the first token of a ``prompt``-token
        request, under chunked prefill.

        The engine prefills FCFS: the prompts dispatched before (no first token yet) come first,
        minus what it has prefilled since the oldest of them was dispatched. Each step carries
        ``max_num_batched_tokens - n_dec`` prompt tokens next to the ``n_dec`` decoding
        sequences; the first token comes at the end of the step that completes the prompt.
        A busy engine picks new work up at its next step boundary (half a step on average).
        ``fresh``: the engine starts empty (just woken with ``model``)."""
        prof = inst.profiles[model]
        f = self.service.factor(inst.id, model)
        outstanding = [] if fresh else list(inst.outstanding.values())
        pend = [r for r in outstanding if r.first_token_s is None or r.evictions]
        n_dec = len(outstanding) - len(pend)
        mean_out, _ = self.lengths.mean_var(model, "")
        ctx = int(n_dec * (self.mean_prompt(model) + mean_out / 2))
        chunk = max(1, prof.max_num_batched_tokens - n_dec)
        step = prof.step_time(chunk, n_dec, ctx) * f
        backlog = 0.0
        if pend:
            backlog = float(sum(r.prompt_tokens + r.generated_tokens for r in pend))
            oldest = min((r.dispatched_s if r.dispatched_s is not None else now) for r in pend)
            backlog = max(0.0, backlog - chunk * max(0.0, now - oldest) / step)
        total = backlog + max(1.0, prompt)
        full = int(np.ceil(total / chunk)) - 1  # full steps before the one completing the prompt
        last = prof.step_time(int(total - full * chunk), n_dec, ctx) * f
        phase = 0.0
        if outstanding:
            phase = 0.5 * (step if pend else prof.step_time(0, n_dec, ctx) * f)
        return phase + full * step + last

    def _pool_releases(
        self, instances: Sequence[InstanceView], model: str, now: float, exclude: frozenset[str] | set[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float], int, float]:
        """The pool's KV releases: ``(S, R)`` sorted release times (seconds from ``now``), the
        cumulative projected tokens they free, the pool index of the releasing instance; the
        KV room and sequence room free now; the pool's KV capacity. Cached per model for
        ``release_cache_s`` while the in-flight count moved by at most 10% (times shifted)."""
        n_out = sum(len(i.outstanding) for i in instances)
        key = (tuple(i.id for i in instances), frozenset(exclude))
        hit = self._pool_cache.get(model)
        if (hit is not None and hit[0] == key and now - hit[1] <= self.config.release_cache_s
                and abs(hit[2] - n_out) <= max(1, n_out // 10)):
            t, cum, eng, rooms0, seqs, cap = hit[3]
            return t - (now - hit[1]), cum, eng, rooms0, seqs, cap
        s = self.config.samples
        blocks, toks, engs = [], [], []
        rooms: list[float] = []
        seqs = 0
        cap = 0.0
        for e, inst in enumerate(instances):
            prof = inst.profiles[model]
            reqs = sorted((r for r in inst.outstanding.values() if r.id not in exclude), key=lambda r: r.id)
            tk = np.array([self.projected_tokens(r) for r in reqs])
            rooms.append(max(0.0, prof.kv_capacity_tokens - float(tk.sum())))
            seqs += max(0, prof.max_num_seqs - len(reqs))
            cap += prof.kv_capacity_tokens
            if reqs:
                blocks.append(self.running_residuals(inst, now, exclude))
                toks.append(tk)
                engs.append(np.full(len(reqs), e))
        if blocks:
            times = np.concatenate(blocks, axis=1)
            order = np.argsort(times, axis=1)
            t = np.take_along_axis(times, order, axis=1)
            cum = np.cumsum(np.concatenate(toks)[order], axis=1)
            eng = np.concatenate(engs)[order]
        else:
            t, cum, eng = np.zeros((s, 0)), np.zeros((s, 0)), np.zeros((s, 0), dtype=int)
        self._pool_cache[model] = (key, now, n_out, (t, cum, eng, rooms, seqs, cap))
        return t, cum, eng, rooms, seqs, cap

    def pooled_wait(
        self,
        instances: Sequence[InstanceView],
        r: Request,
        ahead: int,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
        *,
        ahead_tokens: float | None = None,
        home: InstanceView | None = None,
        urgent: Sequence[tuple[float, float]] = (),
        queued: WaitSamples | None = None,
        open_ids: frozenset[str] | set[str] | None = None,
        joining: Sequence[InstanceView] = (),
    ) -> WaitSamples:
        """Waiting time of ``r`` when the instances serving its model (``instances``) dispatch
        queued requests of that model in deadline order whenever the pulling rule
        (:meth:`admits`: the projected KV of what an instance holds fits its cache) lets them
        (load balancing), and each engine prefills what it was given FCFS in chunks.

        - ``home``: the instance that dispatches ``r`` now (nothing ahead of it in its virtual
          queue and :meth:`admits` holds): the wait is its prefill (:meth:`engine_first_token`).
        - Otherwise ``r`` is dispatched when the KV the pool frees covers the projected tokens
          of the ``ahead`` requests before it (``ahead_tokens``), its own, and those of more
          urgent requests still to arrive (``urgent``: ``(tokens per second, seconds from now
          during which they arrive ahead of r)``). KV frees as in-flight requests leave
          (sampled times, their projected tokens), as instances swapping to the model
          (``joining``) wake with an empty cache, and now on instances with nothing queued
          of their own (``open_ids``; default all), less half a request of fragment each.
          Past the last release the pool frees KV at the rate it frees the in-flight set.
        - The instance that frees the KV prefills ``r`` after the prompts of the requests
          ahead that this release admitted (and, for room free now, the prompts it holds).
        - ``queued``: the own-queue prediction when ``r``'s instance is still swapping to the
          model; the earlier of the two serves ``r``.
        """
        s = self.config.samples
        model = r.model
        prompt = float(r.prompt_tokens + r.generated_tokens)
        if home is not None:
            return self._spread(self.engine_first_token(home, model, prompt, now),
                                ahead + len(home.outstanding), queued)
        if not instances and not joining:
            return WaitSamples(np.full(s, np.inf), ahead, self.config.n_clt)
        own = self.projected_tokens(r)
        if ahead_tokens is None:
            ahead_tokens = ahead * self.mean_projected(model, r.slo_class)
        t, cum, eng, rooms, _, _ = self._pool_releases(instances, model, now, exclude)
        p_bar = (ahead_tokens + own) / (ahead + 1)
        frac = self.mean_prompt(model) / max(1.0, self.mean_projected(model, ""))
        # KV free now on open instances, and on joining ones when they wake (deterministic)
        ext_t, ext_tok, ext_inst, ext_now = [], [], [], []
        for inst, room in zip(instances, rooms, strict=True):
            if open_ids is None or inst.id in open_ids:
                ext_t.append(0.0)
                ext_tok.append(max(0.0, room - 0.5 * p_bar))
                ext_inst.append(inst)
                ext_now.append(True)
        for inst in joining:
            ext_t.append(self.join_in_s(inst, model, now))
            ext_tok.append(max(0.0, inst.profiles[model].kv_capacity_tokens - 0.5 * p_bar))
            ext_inst.append(inst)
            ext_now.append(False)
        order = np.argsort(ext_t, kind="stable")
        et = np.array(ext_t)[order]
        ecum = np.cumsum(np.array(ext_tok)[order]) if len(order) else np.zeros(0)
        need = ahead_tokens + own

        def urgent_by(x: np.ndarray) -> np.ndarray:
            return need + np.zeros_like(x) + sum(a * np.minimum(x, h) for a, h in urgent)

        rows = np.arange(s)
        best = np.full(s, np.inf)
        used = np.zeros(s)  # KV of the crossing release taken by the requests ahead
        via: list[tuple[int, np.ndarray]] = []  # (external event index or -1, sample mask)
        # crossing at an external event (room now / a wake): freed = ext so far + releases by then
        if len(et):
            # releases by each external time (few distinct times: now and the wakes)
            uniq, inv = np.unique(et, return_inverse=True)
            rel_by = (np.stack([(t <= u).sum(axis=1) for u in uniq], axis=1)[:, inv] if t.shape[1]
                      else np.zeros((s, len(et)), int))
            cum_rel = np.where(rel_by > 0, np.take_along_axis(cum, np.maximum(rel_by - 1, 0), axis=1), 0.0) \
                if t.shape[1] else np.zeros((s, len(et)))
            freed = cum_rel + ecum[None, :]
            dem = urgent_by(np.broadcast_to(et, (s, len(et))))
            ok = freed >= dem
            hit = ok.any(axis=1)
            j = ok.argmax(axis=1)
            tj = np.where(hit, et[j], np.inf)
            prev = freed[rows, j] - np.array(ext_tok)[order][j]
            best = tj
            used = np.where(hit, np.maximum(0.0, dem[rows, j] - own - prev), 0.0)
            for k in np.unique(j[hit]):
                via.append((int(order[k]), hit & (j == k)))
        # crossing at an in-flight release
        rel_w = np.full(s, np.inf)
        if t.shape[1]:
            tt = np.maximum(t, 0.0)
            n_ext = np.searchsorted(et, tt, side="right") if len(et) else np.zeros_like(t, dtype=int)
            ext_by = np.where(n_ext > 0, ecum[np.maximum(n_ext - 1, 0)] if len(et) else 0.0, 0.0)
            freed = cum + ext_by
            dem = urgent_by(tt)
            ok = freed >= dem
            hit = ok.any(axis=1)
            i = ok.argmax(axis=1)
            td = np.where(hit, tt[rows, i], np.inf)
            # past the last release: the pool frees KV at the rate it frees the in-flight set
            last_t = tt[:, -1]
            total = freed[:, -1]
            rate = cum[:, -1] / np.maximum(1e-9, 2.0 * tt.mean(axis=1))
            urgent_rate = sum(a for a, h in urgent if h > float(last_t.mean()))
            short = np.maximum(0.0, dem[:, -1] - total)
            td = np.where(hit, td, last_t + short / np.maximum(rate - urgent_rate, 0.1 * rate))
            sts = [self.step_times(x, model, slo_class=r.slo_class) for x in instances]
            first = np.array([st.first_token_s(prompt) for st in sts])
            per_tok = np.array([st.prefill_s_per_token for st in sts])
            e = eng[rows, i]
            prev = np.where(i > 0, freed[rows, np.maximum(i - 1, 0)], 0.0)
            taken = np.where(hit, np.maximum(0.0, dem[rows, i] - own - prev), 0.0)
            # prompts the release admitted before r go through its engine's prefill first
            rel_w = td + first[e] + frac * taken * per_tok[e]
        w = np.minimum(rel_w, np.inf)
        for k, mask in via:
            ext = ext_inst[k]
            pre = self.engine_first_token(ext, model, prompt + frac * float(np.mean(used[mask])), now,
                                          fresh=not ext_now[k])
            w = np.where(mask & (best + pre < w), best + pre, w)
        running_ahead = sum(len(x.outstanding) for x in instances)
        return self._spread(w, ahead + running_ahead, queued)

    def join_in_s(self, inst: InstanceView, model: str, now: float) -> float:
        """Seconds until ``inst``, swapping (or draining to swap) to ``model``, serves it."""
        cost = inst.activate_cost_s(model)
        if inst.state is InstanceState.SWAPPING:
            started = inst.swap_started_s if inst.swap_started_s is not None else now
            return max(0.0, started + cost - now)
        drain = float(self.running_residuals(inst, now).max(axis=1).mean()) if inst.outstanding else 0.0
        return drain + cost

    def _spread(self, w: float | np.ndarray, ahead: int, queued: WaitSamples | None) -> WaitSamples:
        """Samples of a pooled prediction: ``w`` with a log-normal model-error spread
        (``model_sd``), or the earlier of it and ``queued`` (the own-queue prediction)."""
        x = np.asarray(w, dtype=float) * np.exp(self.config.model_sd * self._z)
        if queued is not None:
            x = np.minimum(x, queued.samples)
        return WaitSamples(x, ahead, self.config.n_clt)

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
