"""``shepherd``: SHEPHERD (Zhang et al., NSDI'23) as its paper describes it, adapted to LLMs.

- Herd (periodic, every ``period_s``): partitions instances among models in proportion to
  each model's demand (queued requests plus the arrivals of the last period), keeping an
  instance's current model where it can, swapping the rest.
- Flex (online, per instance): batch-aware pulling in deadline order up to the engine's
  batch capacity; when a request of a more urgent class finds every instance of its model
  full, lower-priority running work is preempted (evicted and requeued) to make room,
  one victim per arrival, taken from the instance holding the most lower-priority work.
"""

from __future__ import annotations

from collections.abc import Sequence

from qlm.domain.request import Request
from qlm.policies.common import BatchCapacity, DeadlineQueues
from qlm.policies.edf import EDFPolicy
from qlm.runtime.actions import Abort, Action, Swap
from qlm.runtime.events import EngineEvent
from qlm.runtime.view import ClusterView, InstanceState


class ShepherdPolicy(EDFPolicy):
    name = "shepherd"

    def __init__(self, period_s: float = 10.0) -> None:
        super().__init__(swapping=False)
        self.tick_s = period_s
        self.queues = DeadlineQueues()
        self.capacity = BatchCapacity()
        self._arrivals: dict[str, int] = {}

    def on_arrival(self, request: Request, view: ClusterView) -> Sequence[Action]:
        self._arrivals[request.model] = self._arrivals.get(request.model, 0) + 1
        actions = list(super().on_arrival(request, view))
        if request.id in view.queue and not any(getattr(a, "request_id", None) == request.id for a in actions):
            actions.extend(self._preempt_for(request, view))
        return actions

    def on_event(self, event: EngineEvent, view: ClusterView) -> Sequence[Action]:
        return super().on_event(event, view)

    def _preempt_for(self, r: Request, view: ClusterView) -> list[Action]:
        prio = view.slo_classes[r.slo_class].priority
        best = None
        best_key: tuple[int, str] | None = None
        for inst in view.instances.values():
            if not inst.accepts(r.model):
                continue
            lower = [q for q in inst.outstanding.values() if view.slo_classes[q.slo_class].priority > prio]
            if lower and (best_key is None or (-len(lower), inst.id) < best_key):
                best, best_key = lower, (-len(lower), inst.id)
        if not best:
            return []
        victim = max(best, key=lambda q: (view.slo_classes[q.slo_class].priority, q.ttft_deadline_s, q.id))
        return [Abort(victim.id, requeue=True, reason=f"preempted for {r.slo_class} request {r.id}")]

    def on_tick(self, view: ClusterView) -> Sequence[Action]:
        demand: dict[str, float] = {}
        for m in set(self._arrivals) | set(self.queues.models()):
            demand[m] = self._arrivals.get(m, 0) + self.queues.pending(m, view)
        self._arrivals = {}
        actions: list[Action] = []
        total = sum(demand.values())
        if total > 0:
            actions.extend(self._herd(view, demand, total))
        actions.extend(self.fill(view))
        return actions

    def _herd(self, view: ClusterView, demand: dict[str, float], total: float) -> list[Action]:
        live = [i for i in view.instances.values() if i.state is InstanceState.READY]
        n = len(live)
        want = {m: max(1, round(n * d / total)) for m, d in demand.items() if d > 0}
        have: dict[str, int] = {}
        for inst in view.instances.values():
            m = inst.pending_model or inst.active_model
            if m is not None and inst.state is not InstanceState.DOWN:
                have[m] = have.get(m, 0) + 1
        actions: list[Action] = []
        # instances of over-served models (or models nobody asked for) move to under-served ones
        for inst in sorted(live, key=lambda i: (len(i.outstanding), i.id)):
            cur = inst.active_model
            if cur is not None and have.get(cur, 0) <= want.get(cur, 0):
                continue
            short = sorted(
                (m for m in want if m in inst.profiles and have.get(m, 0) < want[m]),
                key=lambda m: (have.get(m, 0) - want[m], m),
            )
            if not short:
                continue
            target = short[0]
            if cur is not None:
                have[cur] -= 1
            have[target] = have.get(target, 0) + 1
            actions.append(Swap(inst.id, target, mode="wait", reason="herd repartition"))
        return actions
