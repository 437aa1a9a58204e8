"""A simulated vLLM engine: continuous batching with chunked prefill, recompute preemption,
FCFS or priority queues, and sleep/wake model swaps, in virtual time.

Iterations follow vLLM V1's scheduler: running requests first (one token per decoding
sequence, chunks for unfinished prefills), preempting the last-admitted (FCFS) or the
lowest-priority (priority) running request when the KV cache cannot hold one more token
per sequence; then waiting requests are admitted while the token budget, ``max_num_seqs``
and free KV allow, unless a preemption happened in that iteration.

Decode-only stretches with an unchanging batch are run as one macro-step whose duration is
the closed-form sum of the per-step times (context grows by the batch size each step); an
arrival or abort cuts the macro-step at the next iteration boundary, exactly as a real
engine would pick the new work up at its next step.

KV accounting, in tokens: a prefill chunk stores its tokens; each decode step stores one;
the token sampled at the end of a prefill is stored by the next decode step.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from qlm.domain.cluster import InstanceSpec, NodeSpec
from qlm.domain.request import Request
from qlm.perf.engine_model import EngineProfile
from qlm.perf.swap_model import Residency, SwapCosts
from qlm.runtime.backend import EventSink, InstanceBackend, InstanceStats
from qlm.runtime.events import Aborted, Finished, FirstToken, SwapDone


class Scheduler(Protocol):
    """The simulator's event heap, as seen by an engine."""

    def now(self) -> float: ...

    def at(self, t: float, fn: Callable[[], None]) -> None: ...


class NodeMemory:
    """CPU RAM of one node, shared by the sleeping (level-1) models of its instances."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.used_gb = 0.0

    def try_take(self, gb: float) -> bool:
        if self.used_gb + gb <= self.spec.cpu_ram_gb + 1e-9:
            self.used_gb += gb
            return True
        return False

    def give_back(self, gb: float) -> None:
        self.used_gb = max(0.0, self.used_gb - gb)


@dataclass(slots=True)
class _Seq:
    req: Request
    priority: int
    order: int
    prefill_total: int  # prompt plus tokens already generated (recomputed on resume)
    target: int  # tokens to generate in this run
    computed: int = 0
    generated: int = 0
    kv: int = 0
    prefill_done: bool = False
    first_token_pending: bool = True

    def key(self) -> tuple[int, float, int]:
        return (self.priority, self.req.arrival_s, self.order)


@dataclass(slots=True)
class _Plan:
    start: float
    end: float
    steps: int
    decode: list[_Seq]
    prefill: list[tuple[_Seq, int]]
    context0: int
    macro: bool  # decode-only run of `steps` iterations
    version: int
    swap: bool = False
    swap_cost: float = 0.0


@dataclass
class _Counters:
    preemptions: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    busy_s: float = 0.0


class SimEngine(InstanceBackend):
    """One instance in virtual time. ``true_output`` gives a request's real output length,
    which only the simulated engine knows."""

    def __init__(
        self,
        spec: InstanceSpec,
        node: NodeMemory,
        profiles: dict[str, EngineProfile],
        swap_costs: dict[str, SwapCosts],
        residency: dict[str, Residency],
        scheduler: Scheduler,
        true_output: Callable[[Request], int],
        engine_policy: Literal["fcfs", "priority"] = "fcfs",
    ) -> None:
        self.instance_id = spec.id
        self.spec = spec
        self.node = node
        self.profiles = profiles
        self.swap_costs = swap_costs
        self.residency = residency
        self.sched = scheduler
        self.true_output = true_output
        self.engine_policy = engine_policy
        self.active_model = spec.initial_model
        self.sink: EventSink | None = None
        self.running: list[_Seq] = []
        self._fifo: deque[_Seq] = deque()
        self._heap: list[tuple[tuple[int, float, int], _Seq]] = []
        self.kv_used = 0
        self.plan: _Plan | None = None
        self.version = 0
        self.swap_target: str | None = None
        self._abort_ids: set[str] = set()
        self._order = itertools.count()
        self._wake_pending = False
        self.c = _Counters()

    # ---- InstanceBackend --------------------------------------------------------------
    def bind(self, sink: EventSink) -> None:
        self.sink = sink

    def residency_of(self, model: str) -> Residency:
        return self.residency.get(model, Residency.COLD)

    @property
    def profile(self) -> EngineProfile:
        assert self.active_model is not None
        return self.profiles[self.active_model]

    def dispatch(self, request: Request, priority: int) -> None:
        prof = self.profile
        prior = request.generated_tokens
        limit = prof.model.max_model_len - request.prompt_tokens
        total = self.true_output(request)
        if request.max_tokens is not None:
            total = min(total, request.max_tokens)
        total = max(1, min(total, limit))
        seq = _Seq(
            req=request,
            priority=priority,
            order=next(self._order),
            prefill_total=request.prompt_tokens + prior,
            target=max(1, total - prior),
        )
        if seq.prefill_total + seq.target > prof.kv_capacity_tokens or limit < 1:
            self._post(
                Aborted(request.id, self.instance_id, self.sched.now(), 0,
                        reason="request exceeds engine capacity", retryable=False)
            )
            return
        self._enqueue(seq, front=False)
        self._kick()

    def abort(self, request_id: str) -> None:
        now = self.sched.now()
        for seq in self._waiting_list():
            if seq.req.id == request_id:
                self._remove_waiting(seq)
                self._post(Aborted(request_id, self.instance_id, now, seq.generated))
                return
        if any(s.req.id == request_id for s in self.running):
            if self.plan is None:
                self._drop_running({request_id})
            else:
                self._abort_ids.add(request_id)
                self._cut_macro(now)

    def swap(self, model: str, mode: Literal["abort", "wait"]) -> None:
        now = self.sched.now()
        self.swap_target = model
        if mode == "abort":
            for seq in list(self._waiting_list()):
                self._remove_waiting(seq)
                self._post(Aborted(seq.req.id, self.instance_id, now, seq.generated, reason="swap"))
            ids = {s.req.id for s in self.running}
            if self.plan is None:
                self._drop_running(ids, reason="swap")
            else:
                self._abort_ids |= ids
                self._cut_macro(now)
        if self.plan is None:
            self._next(now)

    def stats(self) -> InstanceStats:
        cap = self.profile.kv_capacity_tokens if self.active_model else 1
        return InstanceStats(
            num_running=len(self.running),
            num_waiting=len(self._fifo) + len(self._heap),
            kv_usage=self.kv_used / cap if cap else 0.0,
            preemptions_total=self.c.preemptions,
            prompt_tokens_total=self.c.prompt_tokens,
            generation_tokens_total=self.c.generation_tokens,
            busy_s=self.c.busy_s,
        )

    # ---- queues -------------------------------------------------------------------------
    def _enqueue(self, seq: _Seq, front: bool) -> None:
        if self.engine_policy == "priority":
            heapq.heappush(self._heap, (seq.key(), seq))
        elif front:
            self._fifo.appendleft(seq)
        else:
            self._fifo.append(seq)

    def _waiting_list(self) -> list[_Seq]:
        if self.engine_policy == "priority":
            return [s for _, s in self._heap]
        return list(self._fifo)

    def _remove_waiting(self, seq: _Seq) -> None:
        if self.engine_policy == "priority":
            self._heap = [(k, s) for k, s in self._heap if s is not seq]
            heapq.heapify(self._heap)
        else:
            self._fifo.remove(seq)

    def _peek_waiting(self) -> _Seq | None:
        if self.engine_policy == "priority":
            return self._heap[0][1] if self._heap else None
        return self._fifo[0] if self._fifo else None

    def _pop_waiting(self) -> _Seq:
        if self.engine_policy == "priority":
            return heapq.heappop(self._heap)[1]
        return self._fifo.popleft()

    # ---- stepping -----------------------------------------------------------------------
    def _post(self, ev: object) -> None:
        assert self.sink is not None, "engine not bound to a control plane"
        self.sink.post(ev)  # type: ignore[arg-type]

    def _kick(self) -> None:
        """New work: an idle engine starts its next iteration once every dispatch of this
        instant is in (so simultaneous arrivals share a step); a busy one is cut short."""
        now = self.sched.now()
        if self.plan is None:
            if not self._wake_pending:
                self._wake_pending = True
                self.sched.at(now, self._wake)
        else:
            self._cut_macro(now)

    def _wake(self) -> None:
        self._wake_pending = False
        if self.plan is None:
            self._next(self.sched.now())

    def _cut_macro(self, now: float) -> None:
        """End a decode macro-step at the iteration boundary after ``now``."""
        p = self.plan
        if p is None or not p.macro or p.steps <= 1:
            return
        prof = self.profile
        done = prof.decode_steps_within(len(p.decode), p.context0, now - p.start)
        steps = min(p.steps, done + 1)
        if steps < p.steps:
            p.steps = steps
            p.end = p.start + prof.decode_run_time(len(p.decode), p.context0, steps)
            self.version += 1
            p.version = self.version
            self._schedule_end(p)

    def _schedule_end(self, p: _Plan) -> None:
        version = p.version
        self.sched.at(p.end, lambda: self._on_end(version))

    def _victim(self) -> _Seq:
        if self.engine_policy == "priority":
            return max(self.running, key=_Seq.key)
        return self.running[-1]

    def _preempt(self, seq: _Seq) -> None:
        self.running.remove(seq)
        self.kv_used -= seq.kv
        self.c.preemptions += 1
        # recompute: prompt and generated tokens are prefilled again
        seq.prefill_total = seq.req.prompt_tokens + seq.req.generated_tokens + seq.generated
        seq.computed = 0
        seq.kv = 0
        seq.prefill_done = False
        self._enqueue(seq, front=True)

    def _next(self, now: float) -> None:
        """Plan and schedule the next iteration (or swap), or go idle."""
        self.plan = None
        if self.swap_target is not None and not self.running:
            self._start_swap(now)
            return
        if self.active_model is None or self.swap_target is not None and not self.running:
            return
        prof = self.profile
        cap = prof.kv_capacity_tokens
        preempted = False
        n_dec = sum(1 for s in self.running if s.prefill_done)
        while n_dec and self.kv_used + n_dec > cap:
            victim = self._victim()
            if victim.prefill_done:
                n_dec -= 1
            self._preempt(victim)
            preempted = True
        budget = prof.max_num_batched_tokens - n_dec
        free = cap - self.kv_used - n_dec
        decode = [s for s in self.running if s.prefill_done]
        prefill: list[tuple[_Seq, int]] = []
        for s in self.running:
            if not s.prefill_done and budget > 0 and free > 0:
                chunk = min(s.prefill_total - s.computed, budget, free)
                prefill.append((s, chunk))
                budget -= chunk
                free -= chunk
        if not preempted and self.swap_target is None:
            while budget > 0 and len(self.running) < prof.max_num_seqs:
                head = self._peek_waiting()
                if head is None:
                    break
                chunk = min(head.prefill_total, budget)
                if chunk > free:
                    break
                self._pop_waiting()
                self.running.append(head)
                prefill.append((head, chunk))
                budget -= chunk
                free -= chunk
        if not decode and not prefill:
            return
        context = sum(s.kv for s in decode) + sum(s.computed + c for s, c in prefill)
        p_tokens = sum(c for _, c in prefill)
        self.version += 1
        if prefill:
            dur = prof.step_time(p_tokens, len(decode), context)
            plan = _Plan(now, now + dur, 1, decode, prefill, context, False, self.version)
        else:
            k_fin = min(s.target - s.generated for s in decode)
            k_kv = (cap - self.kv_used) // len(decode)
            steps = max(1, min(k_fin, k_kv))
            dur = prof.decode_run_time(len(decode), context, steps)
            plan = _Plan(now, now + dur, steps, decode, [], context, True, self.version)
        self.plan = plan
        self._schedule_end(plan)

    def _on_end(self, version: int) -> None:
        p = self.plan
        if p is None or version != p.version:
            return
        now = p.end
        if p.swap:
            self._finish_swap(p, now)
            return
        self.c.busy_s += p.end - p.start
        k = p.steps
        for s in p.decode:
            s.generated += k
            s.kv += k
        self.kv_used += k * len(p.decode)
        self.c.generation_tokens += k * len(p.decode)
        for s, chunk in p.prefill:
            s.computed += chunk
            s.kv += chunk
            self.kv_used += chunk
            self.c.prompt_tokens += chunk
            if s.computed >= s.prefill_total:
                s.prefill_done = True
                s.generated += 1
                self.c.generation_tokens += 1
                if s.first_token_pending:
                    s.first_token_pending = False
                    if s.req.generated_tokens == 0:
                        self._post(FirstToken(s.req.id, self.instance_id, now))
        done = {s.req.id for s in self.running if s.prefill_done and s.generated >= s.target}
        if done:
            keep = []
            for s in self.running:
                if s.req.id in done:
                    self.kv_used -= s.kv
                    self._post(Finished(s.req.id, self.instance_id, now, s.generated))
                else:
                    keep.append(s)
            self.running = keep
        if self._abort_ids:
            ids, self._abort_ids = self._abort_ids - done, set()
            self._drop_running(ids, reason="swap" if self.swap_target else "abort", now=now)
        self._next(now)

    def _drop_running(self, ids: set[str], reason: str = "abort", now: float | None = None) -> None:
        t = self.sched.now() if now is None else now
        keep = []
        for s in self.running:
            if s.req.id in ids:
                self.kv_used -= s.kv
                self._post(Aborted(s.req.id, self.instance_id, t, s.generated, reason=reason))
            else:
                keep.append(s)
        self.running = keep

    # ---- swaps --------------------------------------------------------------------------
    def _start_swap(self, now: float) -> None:
        target = self.swap_target
        assert target is not None
        cost = 0.0
        if self.active_model is not None:
            cost += self.swap_costs[self.active_model].sleep_s
        cost += self.swap_costs[target].activate_s(self.residency_of(target))
        self.version += 1
        self.plan = _Plan(now, now + cost, 0, [], [], 0, False, self.version, True, cost)
        self._schedule_end(self.plan)

    def _finish_swap(self, p: _Plan, now: float) -> None:
        target = self.swap_target
        assert target is not None
        old = self.active_model
        cold = self.residency_of(target) is Residency.COLD
        if self.residency_of(target) is Residency.SLEEP_L1:
            self.node.give_back(self.profiles[target].model.weights_gb)
        if old is not None:
            if not self.spec.sleep_mode:
                self.residency[old] = Residency.COLD
            elif self.node.try_take(self.profiles[old].model.weights_gb):
                self.residency[old] = Residency.SLEEP_L1
            else:
                self.residency[old] = Residency.SLEEP_L2
        self.residency[target] = Residency.ACTIVE
        self.active_model = target
        self.swap_target = None
        self.plan = None
        self._post(SwapDone(self.instance_id, target, now, p.swap_cost, cold=cold))
        self._next(now)

