"""``fcfs``: vLLM as deployed today."""

from __future__ import annotations

from collections.abc import Sequence

from qlm.domain.request import Request
from qlm.policies.base import Policy
from qlm.policies.common import least_loaded
from qlm.runtime.actions import Action, Dispatch, Reject
from qlm.runtime.events import EngineEvent
from qlm.runtime.view import ClusterView


class FCFSPolicy(Policy):
    """Static model placement (the scenario's initial placement, proportional to expected
    load), every request routed on arrival to the least-loaded instance serving its model;
    the engines' own FCFS queues hold the backlog. No swapping, no eviction.

    A request whose model no instance serves is rejected at once, as a router would.
    Requests evicted by an engine failure are routed again the same way.
    """

    name = "fcfs"

    def on_arrival(self, request: Request, view: ClusterView) -> Sequence[Action]:
        cands = [i for i in view.instances.values() if i.accepts(request.model)]
        inst = least_loaded(cands)
        if inst is None:
            return [Reject(request.id, reason=f"no instance serves {request.model}")]
        return [Dispatch(request.id, inst.id, reason="least-loaded")]

    def on_event(self, event: EngineEvent, view: ClusterView) -> Sequence[Action]:
        return ()
