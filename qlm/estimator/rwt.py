"""The RWT (request waiting time) estimator: what a control plane can predict about a wait.

It combines the output-length model (:mod:`qlm.estimator.lengths`), the service-rate model
(:mod:`qlm.estimator.service`) and the queueing arithmetic (:mod:`qlm.estimator.waiting`)
over what :class:`~qlm.runtime.view.InstanceView` shows: the running batch (``outstanding``),
the active model, its residency and swap costs. Queries:

- :meth:`RWTEstimator.dispatch_wait`: a request dispatched to an engine now; its wait is the
  engine's chunked prefill, replayed step by step (:mod:`qlm.estimator.prefill`).
- :meth:`RWTEstimator.replay_wait` / :meth:`~RWTEstimator.resume_wait`: a request left in the
  control-plane queue under load balancing; a replay of the pulling rule over the pool
  (:mod:`qlm.estimator.dispatch`), then its engine's prefill.
- :meth:`RWTEstimator.queue_waits`: the sampled first-token time of every request of one
  instance's virtual queue (running batch, then queued requests in order, model swaps where
  the model changes); the prediction without load balancing. Cost: one fixed-point list
  schedule over ``samples`` scenarios.
- :meth:`RWTEstimator.group_service`: mean and std of the time a whole group occupies each
  instance (``size * E[out] * tau / B``, Normal by the CLT), vectorised over every
  (group, instance) pair, for the planner.

:meth:`RWTEstimator.baseline_wait` is the QLM paper's mean-only estimator
(``n * mean_tokens / token_throughput`` plus swap time), kept as a named baseline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from qlm.domain.request import Request
from qlm.estimator.dispatch import DispatchReplay, Job, Member, Stream, Taken
from qlm.estimator.lengths import LengthPrior, OutputLengthModel
from qlm.estimator.prefill import prefill_done
from qlm.estimator.service import ServiceRateModel, StepTimes
from qlm.estimator.waiting import Segment, WaitSamples, queue_starts
from qlm.perf.swap_model import Residency
from qlm.runtime.events import Aborted, EngineEvent, Finished, FirstToken
from qlm.runtime.view import ClusterView, InstanceState, InstanceView

__all__ = ["EstimatorConfig", "GroupLoad", "PoolMember", "RWTEstimator"]

_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0  # stratified draws: u_k = frac(a + k * golden)


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
    prompt_prior: float = 600.0
    prompt_alpha: float = 0.02
    length_prior: LengthPrior = LengthPrior()
    length_window: int = 2000
    length_min_obs: int = 30
    online_service: bool = True
    kv_quantile: float = 0.8
    rate_window_s: float = 10.0  # arrival rates per (model, class) over this window
    model_sd: float = 0.1  # log-normal spread of predictions (model error)
    join_window_s: float = 2.0  # an engine's recent dispatch rate, for prompts joining a step
    replay_cache_s: float = 1.0  # resume a dispatch replay for later arrivals of a group this long
    replays: int = 2  # dispatch-replay scenarios per prediction (drawn lengths shifted between them)


@dataclass(frozen=True, slots=True)
class GroupLoad:
    """What the planner's service estimate needs to know about one group."""

    model: str
    slo_class: str
    size: int


@dataclass(frozen=True, slots=True)
class PoolMember:
    """An instance that serves (or will serve) a model under load balancing, as the policy
    sees it: ``own`` indices of its virtual queue's groups of the model (into the groups
    given with it), ``leaves``: its queue goes on with another model after them (it takes
    nothing more), ``ready_s``: seconds until it takes work (waking with the model),
    ``pinned``: the groups of ``own`` that stay with it when the policy replans (those it
    has started; None: all)."""

    inst: InstanceView
    own: tuple[int, ...] = ()
    leaves: bool = False
    ready_s: float = 0.0
    pinned: tuple[int, ...] | None = None


@dataclass(slots=True)
class _ReplayCache:
    key: object
    t0: float
    replays: list[DispatchReplay]
    group: str | None
    index: dict[str, int]
    ids: set[str]
    members: Sequence[PoolMember]


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
        self._kv_tail = self.lengths.tail_table(cfg.kv_quantile)  # read by projected_tokens
        self.service = ServiceRateModel()  # the planner's: model-level mean lengths
        self.batch_service = ServiceRateModel()  # per running batch: its own mix of lengths
        self._prompt: dict[str, float] = {}
        self._prompt_cls: dict[tuple[str, str], float] = {}
        u = np.random.default_rng(cfg.seed).random((cfg.samples, 4096))
        self._u = u  # common random numbers, columns recycled cyclically
        self._arrivals: dict[tuple[str, str], deque[float]] = {}
        self._boundary: dict[str, float] = {}
        self._replay: dict[str, _ReplayCache] = {}
        self._free_at: dict[str, tuple[object, float]] = {}
        self._first_arrival: dict[tuple[str, str], float] = {}
        self._rate_prior: dict[tuple[str, str], float] = {}
        self._speed: dict[str, float] = {}  # last step end an engine reported (event time)
        # standard normals (one per sample) for the model-error spread of replayed predictions
        self._z = ndtri((np.arange(cfg.samples) + 0.5) / cfg.samples)

    # ---- learning -----------------------------------------------------------------------
    def set_prompt_prior(self, model: str, slo_class: str, mean_tokens: float) -> None:
        """Configured mean prompt tokens of a (model, class), the start of its EWMA."""
        self._prompt_cls[(model, slo_class)] = mean_tokens
        self._prompt.setdefault(model, mean_tokens)

    def set_rate_prior(self, model: str, slo_class: str, rate: float) -> None:
        """Configured steady arrival rate (requests/s) of a (model, class): what
        :meth:`arrival_rate` answers until the key's first arrival is seen (then only the
        measured rate counts). A forecast of steady traffic, not of its start, end or bursts."""
        if rate < 0:
            raise ValueError(f"rate prior for ({model}, {slo_class}) must be >= 0, got {rate}")
        self._rate_prior[(model, slo_class)] = rate

    def set_traffic_prior(
        self, model: str, slo_class: str, *, rate: float | None = None,
        output: LengthPrior | None = None, prompt_mean: float | None = None,
    ) -> None:
        """What configuration expects of a (model, class), each part optional: its steady
        arrival ``rate`` (:meth:`set_rate_prior`), its ``output`` lengths (the length model's
        prior) and its mean prompt tokens (:meth:`set_prompt_prior`)."""
        if output is not None:
            self.lengths.set_prior((model, slo_class), output)
        if prompt_mean is not None:
            self.set_prompt_prior(model, slo_class, prompt_mean)
        if rate is not None:
            self.set_rate_prior(model, slo_class, rate)

    def observe_arrival(self, request: Request) -> None:
        self._arrivals.setdefault((request.model, request.slo_class), deque()).append(request.arrival_s)
        self._first_arrival.setdefault((request.model, request.slo_class), request.arrival_s)
        a = self.config.prompt_alpha
        p = request.prompt_tokens
        old = self._prompt.get(request.model, self.config.prompt_prior)
        self._prompt[request.model] = (1 - a) * old + a * p
        key = (request.model, request.slo_class)
        old = self._prompt_cls.get(key, p)
        self._prompt_cls[key] = (1 - a) * old + a * p

    def observe(self, event: EngineEvent, view: ClusterView) -> None:
        """Learn from a completion: its output length (in start order, see
        :class:`~qlm.estimator.lengths.OutputLengthModel`), and its TPOT against the
        prediction."""
        if isinstance(event, FirstToken | Finished):
            self._boundary[event.instance_id] = max(event.t, self._boundary.get(event.instance_id, event.t))
        if isinstance(event, FirstToken | Aborted):
            r = view.requests.get(event.request_id)
            if r is not None and isinstance(event, FirstToken):
                self.lengths.start(r.model, r.slo_class, r.id)
            elif r is not None:
                self.lengths.cancel(r.id)
            return
        if not isinstance(event, Finished):
            return
        r = view.requests.get(event.request_id)
        if r is None:
            return
        self.lengths.observe(r.model, r.slo_class, r.generated_tokens, r.id)
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
        observed = (event.t - r.first_token_s) / (r.generated_tokens - 1)
        st = self.step_times(inst, r.model, len(inst.outstanding) + 1, corrected=False)
        self.service.observe_tpot(inst.id, r.model, observed, st.tau_s)
        st = self.mix_step_times(inst, r.model, [*inst.outstanding.values(), r], corrected=False)
        self.batch_service.observe_tpot(inst.id, r.model, observed, st.tau_s)

    # ---- building blocks ----------------------------------------------------------------
    def mean_prompt(self, model: str, slo_class: str | None = None) -> float:
        if slo_class is not None and (model, slo_class) in self._prompt_cls:
            return self._prompt_cls[(model, slo_class)]
        return self._prompt.get(model, self.config.prompt_prior)

    def projected_tokens(self, r: Request) -> float:
        """KV tokens ``r`` may hold when it ends: prompt + min(output ``kv_quantile``,
        max_tokens). Above the mean, so that a batch rarely outgrows the KV cache (the engine
        would preempt, by recompute, the newest requests: usually the urgent ones)."""
        q = self._kv_tail.get((r.model, r.slo_class))  # hot: summed over batches at every pull
        if q is None:
            q = self.lengths.tail(r.model, r.slo_class, self.config.kv_quantile)
        cap = r.max_tokens
        return r.prompt_tokens + (q if cap is None or q <= cap else cap)

    def held_tokens(self, reqs: Iterable[Request]) -> float:
        """``projected_tokens`` summed over ``reqs`` (a pull sums it over a whole batch)."""
        return sum(map(self.projected_tokens, reqs))

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

    @staticmethod
    def can_serve(inst: InstanceView, r: Request) -> bool:
        """Whether ``inst``'s engine can run ``r`` at all: its prompt (and the tokens it
        generated before an eviction) is shorter than the model's context and fits the KV
        cache with one token to spare (an engine refuses it otherwise)."""
        prof = inst.profiles.get(r.model)
        if prof is None:
            return False
        context = r.prompt_tokens + r.generated_tokens
        return context < prof.model.max_model_len and context + 1 <= prof.kv_capacity_tokens

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

    def mix_step_times(
        self, inst: InstanceView, model: str, reqs: Sequence[Request], *, corrected: bool = True
    ) -> StepTimes:
        """Step times of a running batch ``reqs``: its size, and its mix (the mean prompt of
        its requests, the mean expected output of their classes), so that a batch of long
        reports reads the KV context it really holds."""
        if reqs:
            prompt = sum(r.prompt_tokens + r.generated_tokens for r in reqs) / len(reqs)
            out = sum(self.lengths.mean_var(r.model, r.slo_class)[0] for r in reqs) / len(reqs)
        else:
            prompt, out = self.mean_prompt(model), self.lengths.mean_var(model, "")[0]
        return self.batch_service.step_times(inst.id, inst.profiles[model], max(1, len(reqs)), prompt, out,
                                             corrected=corrected)

    def _uniforms(self, n: int, offset: int = 0) -> np.ndarray:
        cols = (np.arange(n) + offset) % self._u.shape[1]
        return self._u[:, cols]

    def running_residuals(
        self,
        inst: InstanceView,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
        u: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(S, R)`` sampled seconds until each in-flight request of ``inst`` (by id) leaves
        (``exclude``: ids about to be evicted); ``u``: the ``(S', R)`` uniforms to draw with
        (default: the common random numbers, ``S`` rows)."""
        reqs = sorted(
            (r for r in inst.outstanding.values() if r.id not in exclude), key=lambda r: r.id
        )
        s = self.config.samples if u is None else u.shape[0]
        if not reqs or inst.active_model is None:
            return np.zeros((s, 0))
        model = inst.active_model
        st = self.mix_step_times(inst, model, reqs)
        now_st = st
        if u is None:
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
            out[:, idx] = lead[idx] + np.maximum(1.0, x - g) * st.tau_s
        return out

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

    # ---- engine first token and the dispatch replay (load balancing) ----------------------
    def mean_projected(self, model: str, slo_class: str) -> float:
        """Mean :meth:`projected_tokens` of a request of ``(model, slo_class)`` (mean prompt +
        the ``kv_quantile`` output length): the KV budget the pulling rule charges it."""
        return self.mean_prompt(model, slo_class) + self.lengths.tail(model, slo_class, self.config.kv_quantile)

    def arrival_rate(self, model: str, slo_class: str, now: float) -> float:
        """Arrivals per second of ``(model, slo_class)`` over the last ``rate_window_s`` (over
        the time since the first arrival of the key when that is shorter, at least 1 s);
        before the key's first arrival, its configured prior (:meth:`set_rate_prior`, else 0)."""
        q = self._arrivals.get((model, slo_class))
        if not q:
            if (model, slo_class) not in self._first_arrival:
                return self._rate_prior.get((model, slo_class), 0.0)
            return 0.0
        w = self.config.rate_window_s
        while q and q[0] < now - w:
            q.popleft()
        span = min(w, max(1.0, now - self._first_arrival.get((model, slo_class), now - w)))
        return len(q) / span

    def engine_first_token(
        self, inst: InstanceView, model: str, prompt: float, now: float, *, fresh: bool = False,
        join_rate: float | None = None,
    ) -> float:
        """Seconds from a dispatch to ``inst`` now to the first token of a ``prompt``-token
        request, under chunked prefill (:func:`~qlm.estimator.prefill.prefill_done`).

        The engine prefills FCFS the prompts dispatched there without a first token yet, then
        this one (:meth:`_engine_jobs`). Prompts dispatched there after it, before its step
        starts, join that step (FCFS behind it, but the step ends when all its chunks are
        done): their expected tokens at ``join_rate`` (default: the engine's recent dispatch
        rate) are added.
        ``fresh``: the engine starts empty (just woken with ``model``) now."""
        prof = inst.profiles[model]
        f = self.batch_service.factor(inst.id, model)
        jobs: list[tuple[float, float]] = []
        start, n_dec, ctx = now, 0, 0.0
        if not fresh:
            jobs, start, n_dec, ctx = self._engine_jobs(inst, model, now)
        mine = len(jobs)
        if not jobs:
            start = now
            if n_dec:  # decoding: the prompt waits for the next step boundary
                start += 0.5 * prof.step_time(0, n_dec, int(ctx)) * f
        jobs.append((now, max(1.0, prompt)))
        starts: list[float] = []
        done = prefill_done(prof, jobs, start, n_dec, ctx, factor=f, starts=starts)
        rate = join_rate if join_rate is not None else (
            0.0 if fresh else self._dispatch_rate(list(inst.outstanding.values()), now))
        if rate > 0:
            first = starts[mine]  # prompts dispatched before its first step starts share it
            extra = rate * max(0.0, first - now) * self.mean_prompt(model)
            if extra >= 1.0:
                jobs.append((first, extra))
                done = prefill_done(prof, jobs, start, n_dec, ctx, factor=f)
        return max(0.0, done[mine] - now)

    def prefill_free_at(self, inst: InstanceView, model: str, now: float) -> float:
        """When ``inst``'s engine will have prefilled every prompt dispatched to it (``now``
        when there is none), on the clock of ``now``; cached until its in-flight set or its
        last step boundary changes."""
        pend = sum(1 for r in inst.outstanding.values() if r.first_token_s is None or r.evictions)
        if not pend:
            return now
        key = (len(inst.outstanding), pend, self._boundary.get(inst.id))
        hit = self._free_at.get(inst.id)
        if hit is not None and hit[0] == key:
            return hit[1]
        jobs, start, n_dec, ctx = self._engine_jobs(inst, model, now)
        t = prefill_done(inst.profiles[model], jobs, start, n_dec, ctx,
                         factor=self.batch_service.factor(inst.id, model))[-1]
        self._free_at[inst.id] = (key, t)
        return t

    def prefill_speed(self, inst: InstanceView, model: str) -> float:
        """Prompt tokens per second of ``inst``'s engine prefilling full chunks."""
        prof = inst.profiles[model]
        speed = self._speed.get(prof.key)
        if speed is None:
            speed = self._speed[prof.key] = prof.prefill_throughput()
        return speed / self.batch_service.factor(inst.id, model)

    def _engine_jobs(
        self, inst: InstanceView, model: str, now: float
    ) -> tuple[list[tuple[float, float]], float, int, float]:
        """What ``inst``'s engine still has to prefill, as :func:`prefill_done` jobs
        (``(dispatched_s, prompt tokens)``, FCFS), the step boundary to replay from, the
        decoding sequences and their KV context. The boundary is the latest first token or
        completion the engine reported (steps run back to back while it has prompts), or,
        when the oldest waiting prompt came later, its dispatch plus half a decode step (the
        next boundary of a decoding engine)."""
        prof = inst.profiles[model]
        f = self.batch_service.factor(inst.id, model)
        outstanding = list(inst.outstanding.values())
        pend = sorted((r for r in outstanding if r.first_token_s is None or r.evictions),
                      key=lambda r: (r.dispatched_s if r.dispatched_s is not None else now, r.id))
        n_dec = len(outstanding) - len(pend)
        ctx = self._decode_context(inst, outstanding, model, now)
        jobs = [(r.dispatched_s if r.dispatched_s is not None else now,
                 float(r.prompt_tokens + r.generated_tokens)) for r in pend]
        if not jobs:
            return jobs, now, n_dec, ctx
        boundary = self._boundary.get(inst.id)
        if boundary is not None and boundary >= jobs[0][0]:
            return jobs, boundary, n_dec, ctx  # a step started here with every prompt before it
        start = jobs[0][0]
        if n_dec:
            start += 0.5 * prof.step_time(0, n_dec, int(ctx)) * f
        return jobs, start, n_dec, ctx

    def _dispatch_rate(self, outstanding: Sequence[Request], now: float) -> float:
        """Requests per second dispatched to an engine over the last ``join_window_s``."""
        w = self.config.join_window_s
        n = sum(1 for r in outstanding if r.dispatched_s is not None and r.dispatched_s > now - w)
        return n / w

    def _decode_context(self, inst: InstanceView, outstanding: Sequence[Request], model: str, now: float) -> float:
        """KV tokens the decoding sequences among ``outstanding`` hold now: prompt plus the
        tokens generated since their first token (at the batch's step time), at most their
        class's mean output."""
        dec = [r for r in outstanding if r.first_token_s is not None and not r.evictions]
        if not dec:
            return 0.0
        tau = self.mix_step_times(inst, model, outstanding).tau_s
        ctx = 0.0
        for r in dec:
            start = r.first_token_s if r.first_token_s is not None else now
            mean_out = self.lengths.mean_var(r.model, r.slo_class)[0]
            ctx += r.prompt_tokens + r.generated_tokens + min(mean_out, (now - start) / tau)
        return ctx

    def resume_wait(self, r: Request, group_id: str, now: float, key: object) -> WaitSamples | None:
        """The :meth:`replay_wait` answer for ``r``, newly at the tail of ``group_id``, from
        the replays made for the previous request of that group under the same ``key``
        within ``replay_cache_s``; None when there is none to resume."""
        hit = self._replay.get(r.model)
        if (hit is None or hit.key != key or hit.group != group_id or r.id in hit.ids
                or now - hit.t0 > self.config.replay_cache_s):
            return None
        n = len(hit.replays[0].jobs)
        jobs = self._jobs([r], n, len(hit.replays))
        target = 0
        for rep, job in zip(hit.replays, jobs, strict=True):
            target = rep.append(hit.index[group_id], job[0])
        hit.ids.add(r.id)
        return self._replay_answer(hit, target, r, now)

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
        """Waiting time of the queued request ``r`` when the instances of its model pull by
        the policy's rule (:class:`~qlm.estimator.dispatch.DispatchReplay`): each at its own
        completions (KV frees) or wake, its own virtual queue first, then other queues in
        deadline order, each until the first request that does not fit (:meth:`admits`).

        ``members``: the instances that serve or will serve ``r.model``; ``groups``: the
        queued requests of that model per group (``(group id, requests)``, FIFO; ``r`` is the
        last of its group); ``order``: group indices in deadline order; ``urgent``: ``(class,
        seconds)``: arrivals of that class within the seconds from now are due before ``r``
        (taken before it, at the class's arrival rate over ``rate_window_s``); ``replan_s``:
        seconds until the policy replans (members then keep only their ``pinned`` groups and
        all pull); ``exclude``: in-flight requests evicted now (their KV frees at once).

        ``replays`` scenarios: in each, in-flight requests leave at drawn times and dispatched
        ones hold their instance for a drawn service time (draws stratified per class over
        the pool, shifted between scenarios). In each, ``r``'s wait is its dispatch time plus
        its engine's chunked prefill behind what the same pull dispatched there
        (:func:`~qlm.estimator.prefill.prefill_done`); the answer pools the scenarios, each
        with the model-error spread (its mean: their mean).

        Resumed rather than rebuilt when ``r`` joins the tail of the group of the request
        asked about last, with the same ``key`` (the policy's plan and pool), within
        ``replay_cache_s``: ``r`` comes after everything the replays decided.
        """
        model = r.model
        k_rep = max(1, self.config.replays)
        gid = next((g for g, reqs in groups if reqs and reqs[-1] is r), None)
        index = {g: k for k, (g, _) in enumerate(groups)}
        flat = [q for _, reqs in groups for q in reqs]
        grp: list[list[int]] = []
        k = 0
        for _, reqs in groups:
            grp.append(list(range(k, k + len(reqs))))
            k += len(reqs)
        target = next((j for j, q in enumerate(flat) if q is r), None)
        if target is None:
            raise ValueError(f"{r.id} is not among the queued requests given")
        templates = []
        for cls, horizon in urgent:
            rate = self.arrival_rate(model, cls, now)
            if rate > 0 and horizon > 0:
                job = Job(f"~{cls}", self.mean_projected(model, cls), self.mean_prompt(model, cls),
                          self.lengths.mean_var(model, cls)[0])
                templates.append((rate, horizon, job))
        jobs = self._jobs(flat, 0, k_rep)
        replays = [
            DispatchReplay(mem, jobs[s], [list(g) for g in grp], list(order),
                           [Stream(rate, h, job, 1.0 / rate) for rate, h, job in templates], replan_s)
            for s, mem in enumerate(self._members(members, model, now, exclude, k_rep))
        ]
        hit = _ReplayCache(key, now, replays, gid, index, {q.id for q in flat}, members)
        self._replay[model] = hit
        return self._replay_answer(hit, target, r, now)

    def _replay_answer(self, hit: _ReplayCache, target: int, r: Request, now: float) -> WaitSamples:
        """Run the replays until ``target`` is dispatched; its wait (dispatch plus prefill)
        in each, pooled with the model-error spread."""
        s = self.config.samples
        waits = []
        ahead = 0
        for rep in hit.replays:
            taken = rep.until(target)
            ahead = sum(len(m.inst.outstanding) for m in hit.members) + len(rep.taken)
            if taken is None:
                waits.append(np.inf)
                continue
            t_abs = max(hit.t0 + taken.t, now)
            inst = hit.members[taken.member].inst
            prompt = float(r.prompt_tokens + r.generated_tokens)
            waits.append(max(0.0, self._first_token_at(inst, r.model, t_abs, taken, prompt, now) - now))
        w = np.repeat(np.array(waits), -(-s // len(waits)))[:s]  # scenario j fills samples j*s/K..
        return self._spread(w, ahead)

    def _first_token_at(
        self, inst: InstanceView, model: str, t: float, taken: Taken, prompt: float, now: float
    ) -> float:
        """Absolute first-token time of a request dispatched to ``inst`` at ``t`` (a pull
        at a completion or a wake) behind ``taken.before`` prompt tokens of the same pull."""
        prof = inst.profiles[model]
        f = self.batch_service.factor(inst.id, model)
        batch = [(t, taken.before), (t, prompt)] if taken.n_before else [(t, prompt)]
        if taken.woke:  # the engine wakes empty and starts at once
            return prefill_done(prof, batch, t, 0, 0.0, factor=f)[-1]
        jobs, start, n_dec, ctx = self._engine_jobs(inst, model, now)
        if jobs:
            done = prefill_done(prof, jobs, start, n_dec, ctx, factor=f)
            if done[-1] > t:  # still prefilling what it holds now: the pull queues behind it
                return prefill_done(prof, jobs + batch, start, n_dec, ctx, factor=f, phase=1.0)[-1]
        n_dec = max(0, taken.held - taken.n_before - 1)
        mean_out, _ = self.lengths.mean_var(model, "")
        ctx = n_dec * (self.mean_prompt(model) + mean_out / 2)
        # a completion ends a step and the engine has already planned the next one: the
        # pull joins the step after it
        start = t + prof.step_time(0, n_dec, int(ctx)) * f if n_dec else t
        return prefill_done(prof, batch, start, n_dec, ctx, factor=f)[-1]

    def _jobs(self, reqs: Sequence[Request], offset: int, scenarios: int = 1) -> list[list[Job]]:
        """Replay jobs of queued requests, per scenario: projected KV, prompt, drawn output
        (uniforms from a golden-ratio sequence starting at ``offset``, shifted by ``1/K``
        between the ``K`` scenarios)."""
        n = len(reqs)
        u = (0.25 + (np.arange(n) + offset)[None, :] * _GOLDEN
             + np.arange(scenarios)[:, None] / scenarios) % 1.0
        out = np.empty((scenarios, n))
        by_key: dict[tuple[str, str], list[int]] = {}
        for j, q in enumerate(reqs):
            by_key.setdefault((q.model, q.slo_class), []).append(j)
        for (m, c), cols in by_key.items():
            idx = np.array(cols)
            out[:, idx] = self.lengths.quantile(m, c, u[:, idx])
        cap = np.array([np.inf if q.max_tokens is None else q.max_tokens for q in reqs])
        gen = np.array([float(q.generated_tokens) for q in reqs])
        out = np.maximum(1.0, np.minimum(out, cap) - gen)
        static = [(q.id, self.projected_tokens(q), float(q.prompt_tokens + q.generated_tokens)) for q in reqs]
        return [[Job(i, tok, p, float(x)) for (i, tok, p), x in zip(static, row, strict=True)] for row in out]

    def _members(
        self,
        members: Sequence[PoolMember],
        model: str,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
        scenarios: int = 1,
    ) -> list[list[Member]]:
        """Replay members, per scenario: KV budget, what they hold (projected), in-flight
        releases drawn with uniforms stratified per class across the pool and shifted by
        ``1/K`` between the ``K`` scenarios (``exclude``: evicted now, released at once),
        and the step times of the work they take."""
        out: list[list[Member]] = [[] for _ in range(scenarios)]
        shift = np.arange(scenarios)[:, None] / scenarios
        rank: dict[str, int] = {}  # stratified per class: each class's draws spread evenly
        for pm in members:
            inst = pm.inst
            prof = inst.profiles[model]
            reqs = sorted(inst.outstanding.values(), key=lambda q: q.id)
            st = self.mix_step_times(inst, model, reqs)
            first = st.first_token_s(self.mean_prompt(model))
            pinned = None if pm.pinned is None else list(pm.pinned)
            if pm.ready_s > 0 or inst.active_model != model:  # wakes empty
                for row in out:
                    row.append(Member(inst.id, prof.kv_capacity_tokens, prof.max_num_seqs, 0, 0.0, list(pm.own),
                                      st.tau_s, first, leaves=pm.leaves, ready_s=max(pm.ready_s, 1e-9)))
                continue
            ks = []
            for q in reqs:
                ks.append(rank.get(q.slo_class, 0))
                rank[q.slo_class] = ks[-1] + 1
            u = (0.5 + np.array(ks, dtype=float)[None, :] * _GOLDEN + shift) % 1.0
            res = self.running_residuals(inst, now, u=u) if reqs else np.zeros((scenarios, 0))
            if exclude:
                res = np.where(np.array([q.id in exclude for q in reqs])[None, :], 0.0, res)
            toks = [self.projected_tokens(q) for q in reqs]
            held = float(sum(toks))
            for row, times in zip(out, res.tolist(), strict=True):
                row.append(Member(inst.id, prof.kv_capacity_tokens, prof.max_num_seqs, len(reqs), held,
                                  list(pm.own), st.tau_s, first, leaves=pm.leaves, pinned=pinned,
                                  releases=list(zip(times, toks, strict=True))))
        return out

    def dispatch_wait(
        self, inst: InstanceView, r: Request, now: float, before: float = 0.0, join_rate: float | None = None
    ) -> WaitSamples:
        """Waiting time of ``r`` dispatched to ``inst`` now, behind ``before`` prompt tokens
        dispatched there in the same instant: the engine's chunked prefill
        (:meth:`engine_first_token`, ``join_rate``: requests per second dispatched there
        next) with the model-error spread."""
        prompt = float(r.prompt_tokens + r.generated_tokens)
        w = self.engine_first_token(inst, r.model, prompt + before, now, join_rate=join_rate)
        return self._spread(w, len(inst.outstanding))

    def join_in_s(self, inst: InstanceView, model: str, now: float) -> float:
        """Seconds until ``inst``, swapping (or draining to swap) to ``model``, serves it."""
        cost = inst.activate_cost_s(model)
        if inst.state is InstanceState.SWAPPING:
            started = inst.swap_started_s if inst.swap_started_s is not None else now
            return max(0.0, started + cost - now)
        drain = float(self.running_residuals(inst, now).max(axis=1).mean()) if inst.outstanding else 0.0
        return drain + cost

    def _spread(self, w: float | np.ndarray, ahead: int) -> WaitSamples:
        """Samples of a prediction: ``w`` (one value, or one per sample) with a log-normal
        model-error spread (``model_sd``)."""
        x = np.asarray(w, dtype=float) * np.exp(self.config.model_sd * self._z)
        return WaitSamples(x, ahead, self.config.n_clt)

    def baseline_wait(
        self, inst: InstanceView, queue: Sequence[Request], index: int,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> float:
        """QLM paper's mean-only estimate: ``n * mean_tokens / token_throughput`` over the
        ``n`` requests ahead (running, less ``exclude``, and queued), plus swap time where
        the model changes (:meth:`token_throughput`, the model-level mean output)."""
        running = len(inst.outstanding) - sum(1 for q in inst.outstanding.values() if q.id in exclude)
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
            if m not in inst.profiles or n == 0:
                continue
            mean_out, _ = self.lengths.mean_var(m, "")
            t += n * mean_out / self.token_throughput(inst, m)
        return t

    def token_throughput(self, inst: InstanceView, model: str) -> float:
        """Output tokens per second of ``model`` on ``inst`` decoding a full batch (its
        capacity at the model-level mean lengths), from the profile alone: the paper's
        ``token_throughput[model]`` per (model, GPU)."""
        prof = inst.profiles[model]
        return prof.decode_throughput(self.capacity(inst, model), self.mean_prompt(model))

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
