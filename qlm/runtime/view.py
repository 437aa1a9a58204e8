"""What a policy may look at: the control plane's own bookkeeping plus engine metrics."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from qlm.domain.cluster import InstanceSpec, NodeSpec
from qlm.domain.request import Request
from qlm.domain.slo import SLOClass
from qlm.perf.engine_model import EngineProfile
from qlm.perf.swap_model import Residency, SwapCosts
from qlm.runtime.backend import InstanceBackend, InstanceStats


class InstanceState(enum.IntEnum):
    READY = 0
    SWAPPING = 1  # sleeping one model, waking another; accepts nothing
    DRAINING = 2  # a swap with mode="wait" is waiting for in-flight requests
    DOWN = 3


@dataclass
class InstanceView:
    """One instance as the control plane tracks it.

    ``profiles``/``swap_costs`` cover every model the instance may serve (configuration data);
    ``outstanding`` holds ids of requests dispatched here and not yet ended.
    """

    spec: InstanceSpec
    node: NodeSpec
    profiles: dict[str, EngineProfile]
    swap_costs: dict[str, SwapCosts]
    backend: InstanceBackend
    residency: dict[str, Residency]
    active_model: str | None
    state: InstanceState = InstanceState.READY
    pending_model: str | None = None  # target of a swap in progress
    outstanding: dict[str, Request] = field(default_factory=dict)
    swap_started_s: float | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def ready(self) -> bool:
        return self.state is InstanceState.READY

    def accepts(self, model: str) -> bool:
        """True when a request for ``model`` may be dispatched here now."""
        return self.state is InstanceState.READY and self.active_model == model

    @property
    def profile(self) -> EngineProfile | None:
        """Profile of the active model."""
        return self.profiles.get(self.active_model) if self.active_model else None

    def stats(self) -> InstanceStats:
        """The engine's own metrics (scraped at run time: may be a moment old)."""
        return self.backend.stats()

    def waiting(self, now: float, grace_s: float = 0.0) -> int:
        """Requests dispatched here more than ``grace_s`` before ``now`` that have no first
        token yet (queued in the engine), from the control plane's own events: the same in
        the simulator and at run time, unlike the engine's scraped ``num_waiting``."""
        cut = now - grace_s
        return sum(1 for r in self.outstanding.values()
                   if r.first_token_s is None and r.dispatched_s is not None and r.dispatched_s < cut)

    def activate_cost_s(self, model: str) -> float:
        """Seconds until ``model`` could serve here: 0 if active; else sleep + wake/cold."""
        if self.active_model == model:
            return 0.0
        cost = self.swap_costs[model].activate_s(self.residency.get(model, Residency.COLD))
        if self.active_model is not None:
            cost += self.swap_costs[self.active_model].sleep_s
        return cost


class ClusterView:
    """Read-only window on the control plane handed to policies.

    ``queue`` is the global queue: requests not dispatched, in arrival order (requeued requests
    go to the end of this mapping but keep their arrival time).
    """

    def __init__(
        self,
        clock_now: Callable[[], float],
        instances: Mapping[str, InstanceView],
        queue: Mapping[str, Request],
        requests: Mapping[str, Request],
        slo_classes: Mapping[str, SLOClass],
    ) -> None:
        self._now = clock_now
        self.instances = instances
        self.queue = queue
        self.requests = requests
        self.slo_classes = slo_classes

    @property
    def now(self) -> float:
        return self._now()

    def instances_for(self, model: str) -> list[InstanceView]:
        """Instances that could ever serve ``model``, ordered by id."""
        return [i for i in self.instances.values() if model in i.profiles]

