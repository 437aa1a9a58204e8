"""``qlm``: request groups, virtual queues, a pluggable planner and the RWT estimator.

Structure (QLM, SoCC'24):

- **Request groups.** Arrivals join a group of their ``(model, SLO class)``
  (:class:`~qlm.domain.groups.GroupTable`, ``group_cap`` requests at most), FCFS inside.
- **Virtual queues.** One per instance: the ordered group ids it serves next.
- **Planner** (pluggable, :class:`Planner`). Assigns and orders groups into virtual queues.
  Runs every ``tick_s`` while a virtual queue holds work, when a new group appears (unless
  ``spread`` placed its first request at once), and when an instance runs dry while other
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
- **Solves** go through the driver's :class:`~qlm.policies.base.PlanRunner`: the input is
  snapshotted on the control plane's thread, ``plan`` (a pure function of it) runs at once
  (simulator) or in a worker thread (runtime), and the plan is applied on the control plane's
  thread, reconciled with what changed meanwhile (:meth:`QLMPolicy._apply_plan`). One solve
  at a time, so a planner's own state (``MILPPlanner``'s warm-start hint, counters) is only
  touched by one thread; requests meanwhile coalesce into one more solve. While a solve is in
  flight a new group gets a provisional place at once (:meth:`QLMPolicy._place`).
- **Pulling.** An instance takes requests from the head of its virtual queue while it holds
  fewer than the batch capacity the estimator computes (``max_num_seqs`` or what its KV cache
  holds at the typical request size). With load balancing, an instance with spare room then
  takes other queues' requests in deadline order; it pulls at its own engine events, and an
  arrival its own instance does not take makes the instances with nothing queued of their
  own and room for it pull at once (work-conserving; the one that starts its prefill first
  pulls first). An arrival of the most urgent class that its own instance *would* take at once
  goes to the least loaded such instance instead (``spread``: fewest requests held; ties: its
  own instance): otherwise one instance fills to its admission limit before the next takes
  work, and its prefill queue, batch and time per token grow. The first request of a new such
  group goes the same way when some instance takes it at once: the group needs no place and
  nothing is solved. Other classes pack, keeping whole instances free for swaps.
- **Model swapping.** When the head group's model is not active: ``Swap(mode="wait")``.
- **Eviction.** When the estimator gives an arriving request of a more urgent class a
  P(meet) below ``evict_below`` and its instance runs lower-priority work, that work is
  aborted and requeued (as many as the request's position needs, at most ``max_evict``).
- **Predictions.** At admission each request gets ``meta["pred_wait_s"]`` (mean),
  ``meta["pred_wait_p50_s"]``, ``meta["pred_wait_p90_s"]``, ``meta["p_meet"]``,
  ``meta["pred_path"]`` and ``meta["pred_wait_base_s"]`` (the paper's mean-only estimator):
  dispatched at once, its engine's chunked prefill (:meth:`RWTEstimator.dispatch_wait`);
  left queued, a replay of the pulling rule over the pool
  (:meth:`RWTEstimator.replay_wait`), or its own virtual queue without load balancing.
  :meth:`QLMPolicy.report` turns them into the ``estimator`` result block.

Deterministic: groups are ordered by (deadline, id), instances by id; the estimator draws
common random numbers from a fixed seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np

from qlm.domain.groups import GroupTable, RequestGroup
from qlm.domain.request import Request, RequestState
from qlm.domain.slo import SLOClass
from qlm.estimator import EstimatorConfig, GroupLoad, PoolMember, RWTEstimator, WaitSamples, accuracy_block
from qlm.policies.base import PlanRunner, Policy
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


_PROVISIONAL = GreedyEDFPlanner()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One replan's solver input, with the groups it saw and those already pinned."""

    inp: PlannerInput
    groups: frozenset[str]
    pinned: frozenset[str]


def _dispatch_of(r: Request, actions: Sequence[Action]) -> Dispatch | None:
    """The action among ``actions`` that dispatches ``r``, or None."""
    for a in actions:
        if isinstance(a, Dispatch) and a.request_id == r.id:
            return a
    return None


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
        swapping: bool = True,
        pull_limit: bool = True,
        rate_priors: bool = True,
        spread: bool = True,
    ) -> None:
        self.tick_s = tick_s
        self.groups = GroupTable(group_cap)
        self.planner: Planner = planner or GreedyEDFPlanner()
        self.estimator = estimator or RWTEstimator(estimator_config)
        self.evict_below = evict_below
        self.max_evict = max_evict
        self.min_replan_s = min_replan_s
        self.balance = balance
        self.swapping = swapping  # ablation: False = never swap; groups only go where their model runs
        self.pull_limit = pull_limit  # ablation: False = dispatch without the batch-capacity limit
        self.rate_priors = rate_priors  # False: configure() gives the estimator no arrival-rate priors
        self.spread = spread  # arrivals of the most urgent class go to the least-loaded instance
        self.vqueues: dict[str, list[str]] = {}
        self.assigned: dict[str, str] = {}  # group id -> instance id
        self.started: set[str] = set()  # groups with a dispatched request (pinned)
        self._slo: dict[str, SLOClass] = {}
        self._urgent = 0
        self._last_plan = -np.inf
        self._next_tick = tick_s  # ticks come every tick_s from tick_s on
        self.replans = 0  # plans applied
        self.evictions = 0
        self._layout = 0  # bumped whenever virtual queues are rebuilt or a group is placed
        self._solving: _Snapshot | None = None  # the solve in flight
        self._again = False  # a replan was asked for while a solve was in flight

    # ---- hooks --------------------------------------------------------------------------
    def use_plan_runner(self, runner: PlanRunner) -> None:
        """As :meth:`Policy.use_plan_runner`; a planner that can limit its threads
        (``limit_cores``) is told the runner's ``cores``."""
        super().use_plan_runner(runner)
        limit = getattr(self.planner, "limit_cores", None)
        if runner.cores is not None and callable(limit):
            limit(runner.cores)

    def configure(self, scenario: Any) -> None:
        """Priors from configuration: each workload stream's declared mean/std output length
        and mean prompt length for its (model, SLO class), and (``rate_priors``) the summed
        declared rate of its steady streams (Poisson, gamma; not bursts) as the class's
        arrival rate until its first arrival. Learning online replaces them."""
        from qlm.estimator import LengthPrior

        for (model, cls), t in scenario.workload.declared_traffic().items():
            self.estimator.set_traffic_prior(
                model, cls, output=LengthPrior(t.output_mean, t.output_std), prompt_mean=t.prompt_mean,
                rate=t.rate if self.rate_priors else None)

    def start(self, view: ClusterView) -> Sequence[Action]:
        self._slo = dict(view.slo_classes)
        self._urgent = min(c.priority for c in self._slo.values())  # the class spread serves
        if hasattr(self.planner, "slo_classes"):  # planners that price classes (MILP)
            self.planner.slo_classes = dict(view.slo_classes)
        self.vqueues = {i: [] for i in sorted(view.instances)}
        return ()

    def on_arrival(self, request: Request, view: ClusterView) -> Sequence[Action]:
        if not view.instances_for(request.model):
            return [Reject(request.id, reason=f"no instance can host {request.model}")]
        self.estimator.observe_arrival(request)
        group = self.groups.add(request)
        spread = self.spread and self.balance
        actions: list[Action] = []
        if group.id not in self.assigned:
            # a group whose first request some instance takes at once needs no place (no solve)
            actions = self._spread(request, group, None, view) if spread else []
            if not actions:
                self._replan_for([group], view)
        inst_id = self.assigned.get(group.id)
        if not actions:
            actions = self._spread(request, group, inst_id, view) if spread and inst_id is not None else []
            actions.extend(self.pull(view, [inst_id] if inst_id else None))
        if self.balance and _dispatch_of(request, actions) is None:
            actions.extend(self._offer(request, view))
        d = _dispatch_of(request, actions)
        anchor = inst_id if inst_id is not None else d.instance_id if d is not None else None
        if anchor is not None:
            actions.extend(self._admit(request, view.instances[anchor], view, actions, group))
        return actions

    def on_requeue(self, request: Request, view: ClusterView) -> Sequence[Action]:
        group = self.groups.requeue(request)
        if group.id not in self.assigned:
            self._replan_for([group], view)
        return self.pull(view)

    def on_event(self, event: EngineEvent, view: ClusterView) -> Sequence[Action]:
        self.estimator.observe(event, view)
        if isinstance(event, InstanceDown):
            orphans = self.vqueues.get(event.instance_id, [])
            for gid in orphans:
                self.assigned.pop(gid, None)
                self.started.discard(gid)
            self.vqueues[event.instance_id] = []
            self._layout += 1
            self._replan_for([g for gid in orphans if (g := self.groups.groups.get(gid)) is not None], view)
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
        self._next_tick = view.now + (self.tick_s or 0.0)
        if any(self.vqueues.values()):
            self.replan(view)
        return self.pull(view)

    def on_plan(self, view: ClusterView) -> Sequence[Action]:
        return self.pull(view)

    # ---- planning -----------------------------------------------------------------------
    def _live_groups(self) -> list[RequestGroup]:
        self.groups.discard_empty()
        return list(self.groups)

    def replan(self, view: ClusterView) -> None:
        """Rebuild every virtual queue with the planner: the input is snapshotted here, the
        solve goes through ``plan_runner``, and the plan is applied by :meth:`_planned`
        (at once in the simulator; later, on the control plane's thread, at run time). At
        most one solve is in flight: a request meanwhile makes one more solve after it."""
        if self._solving is not None:
            self._again = True
            return
        snap = self._snapshot(view)
        if snap is None:
            return
        self._solving = snap
        self._last_plan = view.now
        try:
            self.plan_runner.run(partial(self.planner.plan, snap.inp), partial(self._planned, snap, view))
        except BaseException:
            if self._solving is snap:
                self._solving = None
            raise

    def _replan_for(self, groups: Sequence[RequestGroup], view: ClusterView) -> None:
        """Replan because ``groups`` have no place; while the solve runs, each gets a
        provisional one (:meth:`_place`), so no arrival waits for a solve."""
        self.replan(view)
        if self._solving is None:
            return
        for g in sorted(groups, key=lambda g: (g.earliest_deadline_s, g.id)):
            if g.id not in self.assigned:
                self._place(g, view)

    def _snapshot(self, view: ClusterView) -> _Snapshot | None:
        """The planner input for the live groups and the instances that are up (None: all
        down); pure data, so the solve may run on another thread."""
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
            return None
        pgroups = tuple(
            self._planner_group(g, now, self.assigned.get(g.id) if g.id in self.started else None) for g in live
        )
        mean, std = self.estimator.group_service([self._load(g) for g in live], insts)
        pinsts = tuple(self._planner_instance(i, now) for i in insts)
        pinned = frozenset(g.id for g in pgroups if g.pinned_instance is not None)
        return _Snapshot(PlannerInput(pgroups, pinsts, mean, std), frozenset(g.id for g in live), pinned)

    def _planner_group(self, g: RequestGroup, now: float, pinned: str | None) -> PlannerGroup:
        cls = self._slo[g.slo_class]
        return PlannerGroup(id=g.id, model=g.model, slo_class=g.slo_class, size=len(g),
                            deadline_s=g.earliest_deadline_s - now, priority=cls.priority, weight=cls.weight,
                            pinned_instance=pinned)

    @staticmethod
    def _load(g: RequestGroup) -> GroupLoad:
        # an open group will keep growing until sealed: plan for its cap
        return GroupLoad(g.model, g.slo_class, len(g) if g.full else g.cap)

    def _planned(self, snap: _Snapshot, view: ClusterView, out: PlannerOutput | None) -> None:
        """The solve of ``snap`` ended (``out`` None: it failed, provisional placements stay):
        apply it, then start the solve that was asked for meanwhile, if any."""
        if self._solving is snap:
            self._solving = None
        if out is not None:
            self._apply_plan(snap, out, view)
        if self._again:
            self._again = False
            self.replan(view)

    def _apply_plan(self, snap: _Snapshot, out: PlannerOutput, view: ClusterView) -> None:
        """Rebuild the virtual queues from ``out``, reconciled with what changed since
        ``snap`` was taken (nothing in the simulator): a group that ended is dropped; one
        that started since stays on its instance, one created since keeps its provisional
        instance, each at its EDF place among the plan's groups there (:meth:`_insert`); one
        whose instance went down (or that has no place) gets a provisional one."""
        self._live_groups()  # groups that ended since the snapshot are gone
        live = self.groups.groups
        self.started &= live.keys()
        up = {i for i, v in view.instances.items() if v.state is not InstanceState.DOWN}
        old_queues, old_assigned = self.vqueues, self.assigned
        # started since the snapshot, on an instance that is still up: stays there
        stay = {gid: inst for gid, inst in old_assigned.items()
                if gid in self.started and gid not in snap.pinned and gid in live and inst in up}
        self.vqueues = {i: [] for i in sorted(view.instances)}
        self.assigned = {}
        for inst_id, gids in out.queues.items():
            for gid in gids:
                if gid in live and gid not in stay and inst_id in up:
                    self.vqueues[inst_id].append(gid)
                    self.assigned[gid] = inst_id
        for inst_id, gids in old_queues.items():  # started since; created since (provisional)
            for gid in gids:
                if stay.get(gid) == inst_id or (
                        gid not in snap.groups and gid in live and gid not in self.assigned and inst_id in up):
                    self._insert(inst_id, live[gid])
                    self.assigned[gid] = inst_id
        self.replans += 1
        self._layout += 1
        planned_down = {gid for i, q in out.queues.items() if i not in up for gid in q}
        lost = [g for g in live.values()
                if g.id not in self.assigned and (g.id not in snap.groups or g.id in planned_down)]
        for g in sorted(lost, key=lambda g: (g.earliest_deadline_s, g.id)):
            self._place(g, view)

    def _ahead_of(self, g: RequestGroup, group: RequestGroup) -> bool:
        """Whether ``g`` comes before ``group`` in a queue: started groups first, then EDF
        (the planner's order), ties by id."""
        return g.id in self.started or (g.earliest_deadline_s, g.id) <= (group.earliest_deadline_s, group.id)

    def _insert(self, inst_id: str, group: RequestGroup) -> None:
        """Put ``group`` in ``inst_id``'s virtual queue ahead of the first group it comes
        before (:meth:`_ahead_of`), or at the end."""
        queue = self.vqueues.setdefault(inst_id, [])
        later = [k for k, gid in enumerate(queue)
                 if (g := self.groups.groups.get(gid)) is not None and g.requests and not self._ahead_of(g, group)]
        queue.insert(later[0] if later else len(queue), group.id)

    def _place(self, group: RequestGroup, view: ClusterView) -> None:
        """Provisional placement: the greedy planner (:class:`GreedyEDFPlanner`) on this
        group alone, each instance ready once the groups of its virtual queue that come
        before it are served (started groups, and groups with an earlier deadline: EDF, the
        planner's own order); the group takes that place in the queue, ahead of the groups
        with later deadlines. Cheap, deterministic (ties: no swap, then instance order); the
        next plan replaces it."""
        now = view.now
        insts = [view.instances[i] for i in sorted(view.instances)]
        insts = [i for i in insts if i.state is not InstanceState.DOWN]
        if not insts or group.id not in self.groups.groups:
            return
        ahead = [[g for gid in self.vqueues.get(i.id, [])
                  if (g := self.groups.groups.get(gid)) is not None and g is not group and g.requests
                  and self._ahead_of(g, group)]
                 for i in insts]
        # the groups ahead, pinned where they are, then this one: the greedy planner advances
        # each instance through its queue (service, swaps) and places the group after them
        pinned = [(g, inst.id) for inst, q in zip(insts, ahead, strict=True) for g in q]
        rows = [g for g, _ in pinned] + [group]
        mean, std = self.estimator.group_service([self._load(g) for g in rows], insts)
        pgroups = tuple(self._planner_group(g, now, pin) for g, pin in [*pinned, (group, None)])
        pinsts = tuple(self._planner_instance(i, now) for i in insts)
        out = _PROVISIONAL.plan(PlannerInput(pgroups, pinsts, mean, std))
        d = out.decisions.get(group.id)
        if d is None or d.instance_id is None:
            return
        self._insert(d.instance_id, group)
        self.assigned[group.id] = d.instance_id
        self._layout += 1

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
        if not self.swapping and model is not None:  # ablation: only the model it runs
            return PlannerInstance(inst.id, (model,), model, ready, {model: 0.0})
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
            held_tokens = self.estimator.held_tokens(inst.outstanding.values())
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
                    if not self.swapping:  # ablation: a group of another model waits elsewhere
                        pos += 1
                        continue
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
            if self.pull_limit and not self.estimator.admits(inst, r, held_tokens, held):
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

    def _spread(self, r: Request, group: RequestGroup, inst_id: str | None, view: ClusterView) -> list[Action]:
        """Least-loaded placement of an arrival of the most urgent SLO class (the lowest
        priority number) that heads its group; other classes pack (an instance takes them up
        to its admission limit first), which keeps whole instances free to swap to another
        model or take urgent work.

        With ``inst_id`` (its group's instance), when that instance would take it at once (it
        heads that virtual queue and :meth:`_admits` it): another ready instance of its model
        with nothing queued of its own that admits it and holds fewer requests takes it
        instead (ties: its own instance, then by id). Without (a group with no place yet): the
        ready instance of its model with nothing queued of its own that admits it and holds
        the fewest requests (ties by id), if any; the group then needs no place. Without
        spreading, one instance fills to its admission limit before the next takes work: first
        tokens still come in time, but its prefill queue, batch and time per token grow."""
        if (self._slo[r.slo_class].priority > self._urgent
                or not self._drop_dispatched(group) or group.requests[0] is not r):
            return []
        best: str | None = None
        best_held = 1 << 30
        if inst_id is not None:
            own = view.instances.get(inst_id)
            if own is None or own.state is not InstanceState.READY or own.active_model != r.model:
                return []
            held = len(own.outstanding)
            if self._first_queued(own.id) is not r or not self._admits(own, r, held):
                return []
            best, best_held = own.id, held
        for other_id in sorted(view.instances):
            other = view.instances[other_id]
            held = len(other.outstanding)
            if (other_id == inst_id or held >= best_held or other.state is not InstanceState.READY
                    or other.active_model != r.model or self._has_queued(other_id)):
                continue
            if self._admits(other, r, held):
                best, best_held = other_id, held
        if best is None or best == inst_id:
            return []
        group.requests.popleft()
        return [Dispatch(r.id, best, priority=self._slo[r.slo_class].priority, reason=f"spread {group.id}")]

    def _admits(self, inst: InstanceView, r: Request, held: int) -> bool:
        """The pulling rule for ``r`` on ``inst`` (always True with ``pull_limit`` off)."""
        return not self.pull_limit or self.estimator.admits(
            inst, r, self.estimator.held_tokens(inst.outstanding.values()), held)

    def _offer(self, r: Request, view: ClusterView) -> list[Action]:
        """Work-conserving arrival: when ``r``'s own instance does not take it, the ready
        instances of its model with nothing queued of their own and room for it (the pulling
        rule, :meth:`RWTEstimator.admits`) pull now instead of at their next engine event.
        Order: by when ``r``'s prefill would end there (when the engine is done with the
        prompts it holds, :meth:`RWTEstimator.prefill_free_at`, plus ``r``'s prompt at its
        prefill rate), the first three of those re-ordered by the step-by-step prefill replay
        (:meth:`RWTEstimator.engine_first_token`). An idle instance has no engine events and
        would otherwise wait for the next tick."""
        est = self.estimator
        now = view.now
        prompt = float(r.prompt_tokens + r.generated_tokens)
        cands: list[tuple[float, str]] = []
        for inst_id in sorted(view.instances):
            inst = view.instances[inst_id]
            if not inst.accepts(r.model) or self._has_queued(inst_id):
                continue
            held = len(inst.outstanding)
            if held >= inst.profiles[r.model].max_num_seqs:
                continue
            held_tokens = est.held_tokens(inst.outstanding.values())
            if est.admits(inst, r, held_tokens, held):
                start = max(now, est.prefill_free_at(inst, r.model, now))
                cands.append((start + prompt / est.prefill_speed(inst, r.model), inst_id))
        cands.sort()
        # the few that start it first by that measure, ordered by the full prefill replay
        top = sorted((est.engine_first_token(view.instances[i], r.model, prompt, now), i) for _, i in cands[:3])
        actions: list[Action] = []
        for _, inst_id in top + cands[3:]:
            actions.extend(self.pull(view, [inst_id]))
            if _dispatch_of(r, actions) is not None:
                break
        return actions

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

    def _first_queued(self, inst_id: str) -> Request | None:
        """The first queued request of an instance's virtual queue (``flat_queue``'s head)."""
        for gid in self.vqueues.get(inst_id, []):
            group = self.groups.groups.get(gid)
            if group is not None:
                for r in group.requests:
                    if r.state is RequestState.QUEUED:
                        return r
        return None

    def _admit(
        self, r: Request, inst: InstanceView, view: ClusterView, taken: Sequence[Action] = (),
        group: RequestGroup | None = None,
    ) -> list[Action]:
        """Predict ``r``'s wait: its engine's prefill when ``taken`` dispatches it now,
        else from its queue position; evict lower-priority work if the prediction says it
        will miss its SLO."""
        now = view.now
        d = _dispatch_of(r, taken)
        if d is not None:
            target = view.instances[d.instance_id]
            before = 0.0  # prompts dispatched to the same engine ahead of r, prefilled first
            for a in taken:
                if a is d:
                    break
                if isinstance(a, Dispatch) and a.instance_id == target.id and a.request_id in view.requests:
                    q = view.requests[a.request_id]
                    before += q.prompt_tokens + q.generated_tokens
            join = None
            if d.reason.startswith("pull"):
                # its own virtual queue took it: later arrivals of the model are placed the
                # same way while it has room, and join its next prefill step
                join = sum(self.estimator.arrival_rate(r.model, c, now) for c in self._slo)
            ws = self.estimator.dispatch_wait(target, r, now, before, join)
            r.meta["pred_path"] = "dispatched"
            self._record(r, ws, ws.p_within(r.ttft_deadline_s - now), target, [r], 0, view)
            return []
        queue = self.flat_queue(inst.id, upto=r)
        if not queue or queue[-1] is not r:
            return []
        k = len(queue) - 1
        ws = self._queued_wait(r, inst, queue, view, group)
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
                ws = self._queued_wait(r, inst, queue, view, group, exclude=gone)
                p = ws.p_within(deadline)
        self._record(r, ws, p, inst, queue, k, view)
        return actions

    def _record(self, r: Request, ws: WaitSamples, p: float, inst: InstanceView, queue: list[Request],
                k: int, view: ClusterView) -> None:
        """Store the prediction on the request (``meta``), with the mean-only baseline. A
        request no instance can run (its prompt reaches the model's context length) will
        be refused by the engine: P(meet) 0."""
        if not any(self.estimator.can_serve(i, r) for i in view.instances_for(r.model)):
            p = 0.0
        r.meta["pred_wait_s"] = ws.mean
        p50, p90 = ws.quantiles([0.5, 0.9])
        r.meta["pred_wait_p50_s"] = p50
        r.meta["pred_wait_p90_s"] = p90
        r.meta["p_meet"] = p
        r.meta["pred_ahead"] = ws.ahead
        r.meta["pred_instance"] = inst.id
        r.meta["pred_wait_base_s"] = self.estimator.baseline_wait(inst, queue, k)

    def _queued_wait(
        self, r: Request, inst: InstanceView, queue: list[Request], view: ClusterView,
        group: RequestGroup | None = None, exclude: set[str] | frozenset[str] = frozenset(),
    ) -> WaitSamples:
        """Prediction for ``r`` left queued at admission. Without load balancing: its own
        virtual queue (:meth:`RWTEstimator.wait_at`). With it: a replay of the pulling rule
        over the instances of its model (:meth:`RWTEstimator.replay_wait`), resumed while
        the plan and the pool are unchanged."""
        est = self.estimator
        now = view.now
        if not self.balance:
            return est.wait_at(inst, queue, len(queue) - 1, now, exclude)
        key = (self._layout, frozenset(exclude), self._pool_signature(r.model, view))
        if group is not None and not exclude:
            ws = est.resume_wait(r, group.id, now, key)
            if ws is not None:
                r.meta["pred_path"] = "replay"
                return ws
        members, groups, order = self._replay_inputs(r.model, view, exclude)
        r.meta["pred_path"] = "replay"
        d = r.ttft_deadline_s - now
        urgent = [(name, d - cls.ttft_s) for name, cls in sorted(self._slo.items())
                  if name != r.slo_class and d - cls.ttft_s > 0]
        replan = self._next_tick - now if self.tick_s else None
        return est.replay_wait(members, groups, order, r, now, key, exclude, urgent, replan)

    def _pool_signature(self, model: str, view: ClusterView) -> tuple[tuple[str, int, str | None], ...]:
        """The instances that serve or are about to serve ``model``, with their state: a
        replay made under another signature is stale."""
        return tuple((i.id, int(i.state), i.active_model) for _, i in sorted(view.instances.items())
                     if i.active_model == model or i.pending_model == model)

    def _replay_inputs(
        self, model: str, view: ClusterView, exclude: set[str] | frozenset[str] = frozenset()
    ) -> tuple[list[PoolMember], list[tuple[str, list[Request]]], list[int]]:
        """What the dispatch replay needs: the instances that will pull ``model``'s queued
        requests (ready with it; swapping or draining to it; ready with another model whose
        virtual queue starts with a group of it), each with its own groups of the model in
        queue order; the queued requests per group; the groups in deadline order."""
        est = self.estimator
        now = view.now
        live = [(g.id, g, [q for q in g.requests if q.state is RequestState.QUEUED])
                for g in self.groups.groups.values() if g.model == model]
        live = [x for x in live if x[2]]
        index = {gid: k for k, (gid, _, _) in enumerate(live)}
        order = sorted(range(len(live)), key=lambda k: (live[k][1].earliest_deadline_s, live[k][0]))
        members: list[PoolMember] = []
        for inst_id in sorted(view.instances):
            inst = view.instances[inst_id]
            own: list[int] = []
            leaves = False
            first: str | None = None  # model of the first group with queued requests
            for gid in self.vqueues.get(inst_id, []):
                g = self.groups.groups.get(gid)
                if g is None or not any(q.state is RequestState.QUEUED for q in g.requests):
                    continue
                first = first or g.model
                if g.model != model:
                    leaves = True
                    break
                if gid in index:
                    own.append(index[gid])
            pinned = tuple(k for k in own if live[k][0] in self.started)
            if inst.accepts(model):
                members.append(PoolMember(inst, tuple(own), leaves, pinned=pinned))
            elif inst.pending_model == model and inst.state in (InstanceState.SWAPPING, InstanceState.DRAINING):
                members.append(PoolMember(inst, tuple(own), leaves, max(1e-9, est.join_in_s(inst, model, now))))
            elif inst.ready and first == model and model in inst.profiles:
                # its next pull swaps to the model: drain, then sleep + wake
                drain = float(est.running_residuals(inst, now).max(axis=1).mean()) if inst.outstanding else 0.0
                members.append(PoolMember(inst, tuple(own), leaves, max(1e-9, drain + inst.activate_cost_s(model))))
        return members, [(gid, reqs) for gid, _, reqs in live], order

    def _has_queued(self, inst_id: str) -> bool:
        """Whether the virtual queue of ``inst_id`` holds a queued request."""
        return self._first_queued(inst_id) is not None

    def report(self, run: Any) -> dict[str, Any]:
        """The ``estimator`` block (prediction accuracy) plus planner counters."""
        block = accuracy_block(run.requests, self._slo or run.control.slo_classes)
        block["estimator"]["planner"] = self.planner.name
        block["estimator"]["replans"] = self.replans
        block["estimator"]["evictions"] = self.evictions
        return block
