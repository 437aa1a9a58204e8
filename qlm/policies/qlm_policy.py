"""``qlm``: request groups, virtual queues, a pluggable planner and the RWT estimator.

Structure (QLM, SoCC'24):

- **Request groups.** Arrivals join a group of their ``(model, SLO class)``
  (:class:`~qlm.domain.groups.GroupTable`, ``group_cap`` requests at most), FCFS inside.
- **Virtual queues.** One per instance: the ordered group ids it serves next.
- **Planner** (pluggable, :class:`Planner`). Assigns and orders groups into virtual queues.
  Runs every ``tick_s``, when a new group appears, and when an instance runs dry while other
  queues hold work. Interface::

      plan(PlannerInput) -> PlannerOutput

  ``PlannerInput``: ``groups`` (:class:`PlannerGroup`: id, model, class, size, deadline in
  seconds from now, priority, weight, pinned instance for a group already started; sorted by
  deadline, then id), ``instances`` (:class:`PlannerInstance`: id, hostable models, the model
  active after committed work, seconds until a slot frees for new work, seconds to make each
  model active) and the estimator's ``service_mean_s``/``service_std_s`` ``(G, I)`` arrays
  (seconds a group occupies an instance; ``inf`` = not hostable). ``PlannerOutput``:
  ``queues`` (instance id -> ordered group ids; every group at most once, pinned groups on
  their instance) and ``decisions`` (group id -> :class:`GroupPlan`). The default,
  :class:`GreedyEDFPlanner`, takes groups in deadline order and puts each on the instance
  giving the earliest predicted start including swap cost. A MILP planner (``qlm.solver``)
  can implement the same interface.
- **Pulling.** An instance takes requests from the head of its virtual queue while it holds
  fewer than the batch capacity the estimator computes (``max_num_seqs`` or what its KV cache
  holds at the typical request size).
- **Model swapping.** When the head group's model is not active: ``Swap(mode="wait")``.
- **Eviction.** When the estimator gives an arriving request of a more urgent class a
  P(meet) below ``evict_below`` and its instance runs lower-priority work, that work is
  aborted and requeued (as many as the request's position needs, at most ``max_evict``).
- **Predictions.** At admission each request gets ``meta["pred_wait_s"]`` (mean),
  ``meta["pred_wait_p90_s"]``, ``meta["p_meet"]`` and ``meta["pred_wait_base_s"]`` (the
  paper's mean-only estimator) from its position in its virtual queue;
  :meth:`QLMPolicy.report` turns them into the ``estimator`` result block.

Deterministic: groups are ordered by (deadline, id), instances by id; the estimator draws
common random numbers from a fixed seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from qlm.domain.groups import GroupTable, RequestGroup
from qlm.domain.request import Request, RequestState
from qlm.domain.slo import SLOClass
from qlm.estimator import EstimatorConfig, GroupLoad, RWTEstimator, accuracy_block
from qlm.policies.base import Policy
from qlm.runtime.actions import Abort, Action, Dispatch, Reject, Swap
from qlm.runtime.events import EngineEvent, Finished, InstanceDown, SwapDone
from qlm.runtime.view import ClusterView, InstanceState, InstanceView

__all__ = [
    "GreedyEDFPlanner",
    "GroupPlan",
    "Planner",
    "PlannerGroup",
    "PlannerInput",
    "PlannerInstance",
    "PlannerOutput",
    "QLMPolicy",
]


# ---- planner interface ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlannerGroup:
    """One request group to place. ``deadline_s`` is seconds from now (negative: late)."""

    id: str
    model: str
    slo_class: str
    size: int
    deadline_s: float
    priority: int = 0
    weight: float = 1.0
    pinned_instance: str | None = None


@dataclass(frozen=True, slots=True)
class PlannerInstance:
    """One instance. ``model`` is active once committed work is done (a pending swap's
    target); ``ready_in_s`` is when a slot frees for new work; ``swap_in_s[m]`` the seconds
    to make ``m`` active after that (0 for ``model``)."""

    id: str
    models: tuple[str, ...]
    model: str | None
    ready_in_s: float
    swap_in_s: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class PlannerInput:
    groups: tuple[PlannerGroup, ...]
    instances: tuple[PlannerInstance, ...]
    service_mean_s: np.ndarray  # (G, I)
    service_std_s: np.ndarray  # (G, I)


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """Where a group goes, and the planner's own estimate of its start (seconds from now)."""

    instance_id: str | None
    position: int | None
    est_start_s: float | None
    decision: str  # "scheduled" | "deferred"


@dataclass(slots=True)
class PlannerOutput:
    queues: dict[str, list[str]] = field(default_factory=dict)
    decisions: dict[str, GroupPlan] = field(default_factory=dict)


class Planner(Protocol):
    """Assigns and orders groups into virtual queues (one call per scheduling epoch)."""

    name: str

    def plan(self, problem: PlannerInput) -> PlannerOutput: ...


class GreedyEDFPlanner:
    """Swap-aware greedy EDF: groups in (deadline, id) order; each goes to the instance with
    the earliest predicted mean first-token time of its requests (``ready + swap`` plus half
    the group's service there), ties to no swap, then instance order.
    A pinned group stays on its instance. Starts advance by the estimator's mean service."""

    name = "greedy-edf"

    def plan(self, problem: PlannerInput) -> PlannerOutput:
        insts = problem.instances
        n = len(insts)
        ready = np.array([i.ready_in_s for i in insts], dtype=float)
        current: list[str | None] = [i.model for i in insts]
        index = {inst.id: k for k, inst in enumerate(insts)}
        out = PlannerOutput(queues={i.id: [] for i in insts})
        for g_idx, g in enumerate(problem.groups):
            service = problem.service_mean_s[g_idx]
            swap = np.array(
                [
                    0.0 if current[k] == g.model else insts[k].swap_in_s.get(g.model, np.inf)
                    for k in range(n)
                ]
            )
            start = ready + swap
            start[~np.isfinite(service)] = np.inf
            if g.pinned_instance is not None and g.pinned_instance in index:
                k = index[g.pinned_instance]
            else:
                # earliest mean first token over the group's requests (start + half its
                # service); ties: no swap first, then instance order
                score = start + 0.5 * np.where(np.isfinite(service), service, 0.0)
                k = int(np.lexsort((np.arange(n), swap > 0, score))[0])
            if not np.isfinite(start[k]):
                out.decisions[g.id] = GroupPlan(None, None, None, "deferred")
                continue
            out.decisions[g.id] = GroupPlan(insts[k].id, len(out.queues[insts[k].id]),
                                            float(start[k]), "scheduled")
            out.queues[insts[k].id].append(g.id)
            ready[k] = start[k] + service[k]
            current[k] = g.model
        return out


# ---- the policy -------------------------------------------------------------------------
class QLMPolicy(Policy):
    """QLM: request groups + virtual queues + planner + RWT estimator (see module doc)."""

    name = "qlm"

    def __init__(
        self,
        group_cap: int = 64,
        tick_s: float = 5.0,
        planner: Planner | None = None,
        estimator: RWTEstimator | None = None,
        estimator_config: EstimatorConfig | None = None,
        evict_below: float = 0.5,
        max_evict: int = 32,
        min_replan_s: float = 0.5,
        balance: bool = True,
    ) -> None:
        self.tick_s = tick_s
        self.groups = GroupTable(group_cap)
        self.planner: Planner = planner or GreedyEDFPlanner()
        self.estimator = estimator or RWTEstimator(estimator_config)
        self.evict_below = evict_below
        self.max_evict = max_evict
        self.min_replan_s = min_replan_s
        self.balance = balance
        self.vqueues: dict[str, list[str]] = {}
        self.assigned: dict[str, str] = {}  # group id -> instance id
        self.started: set[str] = set()  # groups with a dispatched request (pinned)
        self._slo: dict[str, SLOClass] = {}
        self._last_plan = -np.inf
        self.replans = 0
        self.evictions = 0

    # ---- hooks --------------------------------------------------------------------------
    def configure(self, scenario: Any) -> None:
        """Priors from configuration: each workload stream's declared mean/std output length
        and mean prompt length for its (model, SLO class). Learning online replaces them."""
        from qlm.estimator import LengthPrior

        for stream in scenario.workload.streams:
            ls = stream.length_spec
            key = (stream.model, stream.slo_class)
            self.estimator.lengths.set_prior(key, LengthPrior(ls.output_mean, ls.output_std))
            self.estimator.set_prompt_prior(stream.model, stream.slo_class, ls.input_mean)

    def start(self, view: ClusterView) -> Sequence[Action]:
        self._slo = dict(view.slo_classes)
        if hasattr(self.planner, "slo_classes"):  # planners that price classes (MILP)
            self.planner.slo_classes = dict(view.slo_classes)
        self.vqueues = {i: [] for i in sorted(view.instances)}
        return ()

    def on_arrival(self, request: Request, view: ClusterView) -> Sequence[Action]:
        if not view.instances_for(request.model):
            return [Reject(request.id, reason=f"no instance can host {request.model}")]
        self.estimator.observe_arrival(request)
        group = self.groups.add(request)
        if group.id not in self.assigned:
            self.replan(view)
        actions: list[Action] = []
        inst_id = self.assigned.get(group.id)
        if inst_id is not None:
            actions.extend(self._admit(request, view.instances[inst_id], view))
        actions.extend(self.pull(view, [inst_id] if inst_id else None))
        return actions

    def on_requeue(self, request: Request, view: ClusterView) -> Sequence[Action]:
        group = self.groups.requeue(request)
        if group.id not in self.assigned:
            self.replan(view)
        return self.pull(view)

    def on_event(self, event: EngineEvent, view: ClusterView) -> Sequence[Action]:
        self.estimator.observe(event, view)
        if isinstance(event, InstanceDown):
            for gid in self.vqueues.get(event.instance_id, []):
                self.assigned.pop(gid, None)
                self.started.discard(gid)
            self.vqueues[event.instance_id] = []
            self.replan(view)
            return self.pull(view)
        inst = view.instances[event.instance_id]
        actions = self.pull(view, [inst.id])
        if (
            isinstance(event, Finished | SwapDone)
            and inst.ready
            and not self.vqueues.get(inst.id)
            and any(self.vqueues.values())
            and view.now - self._last_plan >= self.min_replan_s
        ):
            self.replan(view)
            actions.extend(self.pull(view))
        return actions

    def on_tick(self, view: ClusterView) -> Sequence[Action]:
        if any(self.vqueues.values()):
            self.replan(view)
        return self.pull(view)

    # ---- planning -----------------------------------------------------------------------
    def _live_groups(self) -> list[RequestGroup]:
        self.groups.discard_empty()
        return list(self.groups)

    def replan(self, view: ClusterView) -> None:
        """Rebuild every virtual queue with the planner."""
        now = view.now
        live = self._live_groups()
        for gid in list(self.assigned):
            if gid not in self.groups.groups:
                del self.assigned[gid]
                self.started.discard(gid)
        live.sort(key=lambda g: (g.earliest_deadline_s, g.id))
        insts = [view.instances[i] for i in sorted(view.instances)]
        insts = [i for i in insts if i.state is not InstanceState.DOWN]
        if not insts:
            return
        pgroups = tuple(
            PlannerGroup(
                id=g.id, model=g.model, slo_class=g.slo_class, size=len(g),
                deadline_s=g.earliest_deadline_s - now,
                priority=self._slo[g.slo_class].priority, weight=self._slo[g.slo_class].weight,
                pinned_instance=self.assigned.get(g.id) if g.id in self.started else None,
            )
            for g in live
        )
        # an open group will keep growing until sealed: plan for its cap
        mean, std = self.estimator.group_service(
            [GroupLoad(g.model, g.slo_class, len(g) if g.full else g.cap) for g in live], insts
        )
        pinsts = tuple(self._planner_instance(i, now) for i in insts)
        out = self.planner.plan(PlannerInput(pgroups, pinsts, mean, std))
        self.vqueues = {i: [] for i in sorted(view.instances)}
        self.assigned = {}
        for inst_id, gids in out.queues.items():
            self.vqueues[inst_id] = list(gids)
            for gid in gids:
                self.assigned[gid] = inst_id
        self._last_plan = now
        self.replans += 1

    def _planner_instance(self, inst: InstanceView, now: float) -> PlannerInstance:
        model = inst.pending_model if inst.pending_model is not None else inst.active_model
        ready = 0.0
        if inst.state is InstanceState.SWAPPING and inst.pending_model is not None:
            started = inst.swap_started_s if inst.swap_started_s is not None else now
            ready = max(0.0, started + inst.activate_cost_s(inst.pending_model) - now)
        running = len(inst.outstanding)
        tail = 0.0
        if running and inst.active_model is not None:
            st = self.estimator.step_times(inst, inst.active_model, running)
            mean_out, _ = self.estimator.lengths.mean_var(inst.active_model, "")
            occ, slots = self.estimator.occupied_slots(inst, inst.active_model, None)
            if occ >= slots:  # full: new work waits for enough departures
                ready += (occ - slots + 1) / occ * mean_out * st.tau_s
            tail = mean_out / 2 * st.tau_s  # a swap waits for the batch to drain
            if inst.state is InstanceState.DRAINING and inst.pending_model is not None:
                ready += tail + inst.activate_cost_s(inst.pending_model)
        swap_in = {
            m: (0.0 if m == model else tail + self.estimator.swap_s(inst, model, m, set()))
            for m in inst.profiles
        }
        return PlannerInstance(inst.id, tuple(sorted(inst.profiles)), model, ready, swap_in)

    # ---- pulling and swapping -----------------------------------------------------------
    def pull(self, view: ClusterView, only: Sequence[str] | None = None) -> list[Action]:
        """Dispatch from virtual-queue heads up to batch capacity; swap for a new head model."""
        actions: list[Action] = []
        for inst_id in only if only is not None else sorted(self.vqueues):
            inst = view.instances.get(inst_id)
            if inst is None or inst.state is not InstanceState.READY:
                continue
            q = self.vqueues.get(inst_id, [])
            held = len(inst.outstanding)
            held_tokens = sum(self.estimator.projected_tokens(r) for r in inst.outstanding.values())
            pos = 0
            full = False
            while pos < len(q) and not full:
                group = self.groups.groups.get(q[pos])
                if group is None or not self._drop_dispatched(group):
                    if group is None or group.full:  # sealed and done: leaves the queue
                        q.pop(pos)
                    else:  # open and empty: keeps its place for later arrivals
                        pos += 1
                    continue
                if group.model != inst.active_model:
                    actions.append(Swap(inst.id, group.model, mode="wait", reason=f"head {group.id}"))
                    break
                before = len(actions)
                held, held_tokens, full = self._take(group, inst, view, held, held_tokens, actions, "pull")
                if len(actions) > before:  # a group with a dispatched request stays put
                    self.started.add(group.id)
            if not full and self.balance and not any(isinstance(a, Swap) and a.instance_id == inst.id
                                                     for a in actions):
                self._steal(inst, view, held, held_tokens, actions)
        return actions

    def _take(
        self, group: RequestGroup, inst: InstanceView, view: ClusterView, held: int, held_tokens: float,
        actions: list[Action], why: str,
    ) -> tuple[int, float, bool]:
        """Dispatch ``group``'s queued requests to ``inst`` from its head while the estimator
        admits them; returns the new (held, held_tokens) and whether the instance is full."""
        while group.requests:
            r = group.requests[0]
            if r.state is not RequestState.QUEUED or r.id not in view.queue:
                group.requests.popleft()
                continue
            if not self.estimator.admits(inst, r, held_tokens, held):
                return held, held_tokens, True
            group.requests.popleft()
            prio = self._slo[r.slo_class].priority
            actions.append(Dispatch(r.id, inst.id, priority=prio, reason=f"{why} {group.id}"))
            held += 1
            held_tokens += self.estimator.projected_tokens(r)
        return held, held_tokens, False

    def _steal(
        self, inst: InstanceView, view: ClusterView, held: int, held_tokens: float, actions: list[Action]
    ) -> None:
        """Load balancing: spare capacity takes the earliest-deadline queued requests of the
        active model from other virtual queues (queued requests hold nothing on an engine, so
        moving them costs nothing; requests already dispatched never move)."""
        model = inst.active_model
        if model is None:
            return
        cands = sorted(
            (g for g in self.groups.groups.values() if g.model == model and g.requests),
            key=lambda g: (g.earliest_deadline_s, g.id),
        )
        for group in cands:
            held, held_tokens, full = self._take(group, inst, view, held, held_tokens, actions, "balance")
            if full:
                return

    @staticmethod
    def _drop_dispatched(group: RequestGroup) -> bool:
        """Drop requests that left the queue from the group's head; True if any remain."""
        while group.requests and group.requests[0].state is not RequestState.QUEUED:
            group.requests.popleft()
        return bool(group.requests)

    # ---- estimates and eviction ---------------------------------------------------------
    def flat_queue(self, inst_id: str, upto: Request | None = None) -> list[Request]:
        """Queued requests of an instance's virtual queue in service order (up to ``upto``)."""
        out: list[Request] = []
        for gid in self.vqueues.get(inst_id, []):
            group = self.groups.groups.get(gid)
            if group is None:
                continue
            for r in group.requests:
                if r.state is RequestState.QUEUED:
                    out.append(r)
                if r is upto:
                    return out
        return out

    def _admit(self, r: Request, inst: InstanceView, view: ClusterView) -> list[Action]:
        """Predict ``r``'s wait at its queue position; evict lower-priority work if the
        prediction says it will miss its SLO."""
        now = view.now
        queue = self.flat_queue(inst.id, upto=r)
        if not queue or queue[-1] is not r:
            return []
        k = len(queue) - 1
        pool = self._pool(r.model, view) if self.balance else []
        pooled: dict[str, Any] = self._pooled_args(r, inst, queue, pool, view) if pool else {}
        ws = (self.estimator.pooled_wait(pool, r, now=now, **pooled) if pool
              else self.estimator.wait_at(inst, queue, k, now))
        deadline = r.ttft_deadline_s - now
        p = ws.p_within(deadline)
        actions: list[Action] = []
        prio = self._slo[r.slo_class].priority
        if p < self.evict_below and inst.active_model == r.model and inst.ready:
            victims = sorted(
                (q for q in inst.outstanding.values() if self._slo[q.slo_class].priority > prio),
                key=lambda q: (-self._slo[q.slo_class].priority, -(q.dispatched_s or 0.0), q.id),
            )
            occ, slots = self.estimator.occupied_slots(inst, r.model, r.slo_class)
            need_slots = k + 1 - (slots - occ)  # slots to free so that r starts now
            chosen: list[Request] = []
            if victims and need_slots > 0:
                weights = self.estimator.slot_weights(inst, r.model, slots)
                order = sorted(inst.outstanding.values(), key=lambda q: q.id)
                weight_of = {q.id: int(w) for q, w in zip(order, weights, strict=True)}
                freed = 0
                for q in victims[: self.max_evict]:
                    if freed >= need_slots:
                        break
                    chosen.append(q)
                    freed += weight_of[q.id]
            need = len(chosen)
            if need:
                for q in chosen:
                    actions.append(Abort(q.id, requeue=True, reason=f"SLO of {r.id}"))
                self.evictions += need
                gone = {q.id for q in chosen}
                if pool:
                    pooled = self._pooled_args(r, inst, queue, pool, view, exclude=gone)
                ws = (self.estimator.pooled_wait(pool, r, now=now, exclude=gone, **pooled) if pool
                      else self.estimator.wait_at(inst, queue, k, now, exclude=gone))
                p = ws.p_within(deadline)
        r.meta["pred_wait_s"] = ws.mean
        r.meta["pred_wait_p90_s"] = float(ws.quantile(0.9))
        r.meta["p_meet"] = p
        r.meta["pred_ahead"] = ws.ahead
        r.meta["pred_instance"] = inst.id
        r.meta["pred_wait_base_s"] = self.estimator.baseline_wait(inst, queue, k)
        return actions

    @staticmethod
    def _pool(model: str, view: ClusterView) -> list[InstanceView]:
        """Instances that will take queued requests of ``model`` (ready with it active)."""
        return [i for _, i in sorted(view.instances.items()) if i.accepts(model)]

    def _pooled_args(
        self, r: Request, inst: InstanceView, queue: list[Request], pool: list[InstanceView], view: ClusterView,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """What :meth:`RWTEstimator.pooled_wait` needs about ``r``'s place under balancing:
        the requests ahead of it in the pool (count and projected KV tokens), whether its own
        instance dispatches it right away (nothing ahead in its virtual queue and the pulling
        rule admits it), the more urgent classes that may still arrive ahead of it, the
        instances whose own virtual queue is empty (they take work from others: their free KV
        is usable now) and those swapping to ``r``'s model (they will take work when awake)."""
        est = self.estimator
        now = view.now
        ahead, tokens = self._ahead_in_pool(r)
        home = None
        if len(queue) == 1 and inst.accepts(r.model):
            held_reqs = [q for q in inst.outstanding.values() if q.id not in exclude]
            held_tokens = sum(est.projected_tokens(q) for q in held_reqs)
            if est.admits(inst, r, held_tokens, len(held_reqs)):
                home = inst
        d = r.ttft_deadline_s - now
        urgent = []
        for name, cls in self._slo.items():
            h = d - cls.ttft_s  # an arrival of this class within h seconds is due before r
            if name == r.slo_class or h <= 0:
                continue
            rate = est.arrival_rate(r.model, name, now)
            if rate > 0:
                urgent.append((rate * est.mean_projected(r.model, name), h))
        # an instance not serving r's model yet (swapping to it) may reach r before the pool
        queued = None if inst.accepts(r.model) else est.wait_at(inst, queue, len(queue) - 1, now, exclude)
        r.meta["pred_path"] = "home" if home is not None else ("queue" if queued is not None else "pool")
        open_ids = {i.id for i in pool if not self._has_queued(i.id)}
        joining = [i for _, i in sorted(view.instances.items())
                   if i.pending_model == r.model and i.state in (InstanceState.SWAPPING, InstanceState.DRAINING)]
        return {"ahead": ahead, "ahead_tokens": tokens, "home": home, "urgent": urgent, "queued": queued,
                "open_ids": open_ids, "joining": joining}

    def _has_queued(self, inst_id: str) -> bool:
        """Whether the virtual queue of ``inst_id`` holds a queued request."""
        for gid in self.vqueues.get(inst_id, []):
            g = self.groups.groups.get(gid)
            if g is not None and any(q.state is RequestState.QUEUED for q in g.requests):
                return True
        return False

    def _ahead_in_pool(self, r: Request) -> tuple[int, float]:
        """Queued requests of ``r``'s model served before it under load balancing: those of
        its model with an earlier TTFT deadline, and their projected KV tokens (the mean of
        their class). Inside a group deadlines rise with arrival, so only a group straddling
        ``r``'s deadline is scanned."""
        d = r.ttft_deadline_s
        n = 0
        tokens = 0.0
        for g in self.groups.groups.values():
            if g.model != r.model or not g.requests:
                continue
            if g.requests[-1].ttft_deadline_s < d:
                k = sum(1 for q in g.requests if q.state is RequestState.QUEUED)
            elif g.requests[0].ttft_deadline_s < d:
                k = sum(1 for q in g.requests
                        if q is not r and q.state is RequestState.QUEUED and q.ttft_deadline_s < d)
            else:
                continue
            n += k
            tokens += k * self.estimator.mean_projected(g.model, g.slo_class)
        return n, tokens

    def report(self, run: Any) -> dict[str, Any]:
        """The ``estimator`` block (prediction accuracy) plus planner counters."""
        block = accuracy_block(run.requests, self._slo or run.control.slo_classes)
        block["estimator"]["planner"] = self.planner.name
        block["estimator"]["replans"] = self.replans
        block["estimator"]["evictions"] = self.evictions
        return block
