"""``edf``: global earliest-deadline-first with greedy placement and on-demand swapping."""

from __future__ import annotations

from collections.abc import Sequence

from qlm.domain.request import Request
from qlm.policies.base import Policy
from qlm.policies.common import BatchCapacity, DeadlineQueues
from qlm.runtime.actions import Action, Dispatch, Reject, Swap
from qlm.runtime.events import EngineEvent
from qlm.runtime.view import ClusterView, InstanceState, InstanceView


class EDFPolicy(Policy):
    """One global queue ordered by TTFT deadline (per model heaps, earliest first).

    - Pulling: a ready instance takes the earliest-deadline requests of its active model
      while it holds fewer than its batch capacity (``BatchCapacity``), so the backlog
      stays in the global queue, not in engine queues.
    - Swapping on demand: a model with queued requests and no instance serving it gets
      one, chosen greedily: an instance whose current model has nothing queued, idle ones
      first, then the cheapest to switch (wake beats cold start), then by id. An idle
      instance whose model has nothing queued also moves to the model whose queue head
      has the earliest deadline. Swaps wait for in-flight requests (``mode="wait"``).
    - A request whose model no instance can ever host is rejected.
    """

    name = "edf"

    def __init__(self, swapping: bool = True) -> None:
        self.swapping = swapping
        self.queues = DeadlineQueues()
        self.capacity = BatchCapacity()

    def on_arrival(self, request: Request, view: ClusterView) -> Sequence[Action]:
        if not view.instances_for(request.model):
            return [Reject(request.id, reason=f"no instance can host {request.model}")]
        self.queues.push(request)
        return self.fill(view)

    def on_event(self, event: EngineEvent, view: ClusterView) -> Sequence[Action]:
        self.capacity.observe(event, view)
        return self.fill(view)

    def on_tick(self, view: ClusterView) -> Sequence[Action]:
        return self.fill(view)

    # ---- pulling ------------------------------------------------------------------------
    def fill(self, view: ClusterView) -> list[Action]:
        actions: list[Action] = []
        for inst in view.instances.values():
            if inst.state is not InstanceState.READY or inst.active_model is None:
                continue
            free = self.capacity.free_slots(inst, view.now)
            while free > 0:
                r = self.queues.pop(inst.active_model, view)
                if r is None:
                    break
                actions.append(Dispatch(r.id, inst.id, priority=self.priority(r, view), reason="pull"))
                free -= 1
        if self.swapping:
            actions.extend(self.swaps(view))
        return actions

    def priority(self, r: Request, view: ClusterView) -> int:
        return view.slo_classes[r.slo_class].priority

    # ---- swapping -----------------------------------------------------------------------
    def _serving(self, view: ClusterView) -> dict[str, int]:
        serving: dict[str, int] = {}
        for inst in view.instances.values():
            if inst.state is InstanceState.DOWN:
                continue
            m = inst.pending_model if inst.pending_model is not None else inst.active_model
            if m is not None:
                serving[m] = serving.get(m, 0) + 1
        return serving

    def swaps(self, view: ClusterView) -> list[Action]:
        heads = sorted(self.queues.heads(view), key=lambda mr: (mr[1].ttft_deadline_s, mr[0]))
        if not heads:
            return []
        demand = {m for m, _ in heads}
        serving = self._serving(view)
        actions: list[Action] = []
        taken: set[str] = set()
        for model, _ in heads:
            if serving.get(model, 0) > 0:
                continue
            inst = self._pick(view, model, demand, taken, idle_only=False)
            if inst is not None:
                taken.add(inst.id)
                serving[model] = 1
                actions.append(Swap(inst.id, model, mode="wait", reason="no instance serves a queued model"))
        # idle instances with nothing to do move to the most urgent queued model
        for model, _ in heads:
            inst = self._pick(view, model, demand, taken, idle_only=True)
            if inst is not None:
                taken.add(inst.id)
                actions.append(Swap(inst.id, model, mode="wait", reason="idle instance to queued model"))
        return actions

    def _pick(
        self, view: ClusterView, model: str, demand: set[str], taken: set[str], idle_only: bool
    ) -> InstanceView | None:
        best: InstanceView | None = None
        best_key: tuple[int, float, str] | None = None
        for inst in view.instances.values():
            if (
                inst.id in taken
                or inst.state is not InstanceState.READY
                or model not in inst.profiles
                or inst.active_model == model
                or inst.active_model in demand
            ):
                continue
            idle = not inst.outstanding
            if idle_only and not idle:
                continue
            key = (0 if idle else 1, inst.activate_cost_s(model), inst.id)
            if best_key is None or key < best_key:
                best, best_key = inst, key
        return best
