"""The discrete-event simulator: an event heap around the shared control plane."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

from qlm.domain.request import Request
from qlm.perf.catalog import Catalog
from qlm.perf.engine_model import build_profile
from qlm.perf.swap_model import Residency, swap_costs
from qlm.policies.base import PlanRunner, Policy
from qlm.runtime.clock import VirtualClock
from qlm.runtime.control import ControlListener, ControlPlane
from qlm.runtime.view import InstanceView
from qlm.sim.engine import NodeMemory, SimEngine
from qlm.workload.cluster import BuiltCluster
from qlm.workload.generator import TimedRequest


class EventHeap:
    """Min-heap of callbacks ordered by ``(time, insertion order)``: a total order."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.clock.now()

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(t, self.clock.now()), next(self._seq), fn))

    def pop(self) -> tuple[float, Callable[[], None]] | None:
        if not self._heap:
            return None
        t, _, fn = heapq.heappop(self._heap)
        return t, fn

    def __len__(self) -> int:
        return len(self._heap)


class _Progress(ControlListener):
    def __init__(self) -> None:
        self.ended = 0

    def on_request_end(self, request: Request) -> None:
        self.ended += 1


@dataclass
class SimRun:
    """Everything a finished simulation leaves behind, for metrics."""

    control: ControlPlane
    engines: dict[str, SimEngine]
    cluster: BuiltCluster
    requests: list[Request]
    end_s: float
    wall_s: float
    truth: dict[str, int] = field(default_factory=dict)


def build_engines(
    cluster: BuiltCluster, heap: EventHeap, truth: dict[str, int], engine_policy: str
) -> tuple[dict[str, SimEngine], dict[str, InstanceView]]:
    """Simulated engines and their control-plane views, all models preloaded asleep where
    the node's CPU RAM allows (level 1), else level 2; without sleep mode, cold."""
    cat: Catalog = cluster.catalog
    memories = {n: NodeMemory(spec) for n, spec in cluster.nodes.items()}
    engines: dict[str, SimEngine] = {}
    views: dict[str, InstanceView] = {}
    for inst in cluster.instances:
        node = cluster.nodes[inst.node]
        profiles = {m: build_profile(m, inst.gpu, inst.tp, cat) for m in inst.models}
        costs = {m: swap_costs(cat.model(m), cat.gpu(inst.gpu), inst.tp, node, cat) for m in inst.models}
        residency: dict[str, Residency] = {}
        for m in inst.models:
            if m == inst.initial_model:
                residency[m] = Residency.ACTIVE
            elif not inst.sleep_mode:
                residency[m] = Residency.COLD
            elif memories[inst.node].try_take(cat.model(m).weights_gb):
                residency[m] = Residency.SLEEP_L1
            else:
                residency[m] = Residency.SLEEP_L2
        eng = SimEngine(
            inst, memories[inst.node], profiles, costs, dict(residency), heap,
            lambda r: truth[r.id], engine_policy,  # type: ignore[arg-type]
        )
        engines[inst.id] = eng
        views[inst.id] = InstanceView(
            spec=inst, node=node, profiles=profiles, swap_costs=costs, backend=eng,
            residency=dict(residency), active_model=inst.initial_model,
        )
    return engines, views


def simulate(
    cluster: BuiltCluster,
    slo_classes: dict,
    workload: Sequence[TimedRequest],
    policy: Policy,
    *,
    engine_policy: str = "fcfs",
    horizon_s: float | None = None,
    listeners: Iterable[ControlListener] = (),
    on_progress: Callable[[int, int], None] | None = None,
) -> SimRun:
    """Run ``policy`` over ``workload`` on ``cluster`` in virtual time.

    Stops when every request has ended, or at ``horizon_s`` (default: last arrival plus twice
    the largest TTFT target); requests still in flight then count as unfinished.
    """
    wall0 = time.perf_counter()
    clock = VirtualClock()
    heap = EventHeap(clock)
    truth = {tr.request.id: tr.output_tokens for tr in workload}
    engines, views = build_engines(cluster, heap, truth, engine_policy)
    progress = _Progress()
    policy.use_plan_runner(PlanRunner())  # solves run at once, inside the hook that asks
    control = ControlPlane(
        policy, views, slo_classes, clock, strict=True, listeners=[progress, *listeners]
    )
    requests = [tr.request for tr in workload]
    last_arrival = max((r.arrival_s for r in requests), default=0.0)
    if horizon_s is None:
        horizon_s = last_arrival + 2 * max(c.ttft_s for c in slo_classes.values())
    total = len(requests)

    arrivals = iter(requests)

    def chain(r: Request) -> None:
        control.submit(r)
        nxt = next(arrivals, None)
        if nxt is not None:
            heap.at(nxt.arrival_s, partial(chain, nxt))

    if requests:
        first = next(arrivals)
        heap.at(first.arrival_s, lambda: chain(first))

    tick = policy.tick_s

    def on_tick() -> None:
        control.tick()
        if progress.ended < total and tick is not None:
            heap.at(clock.now() + tick, on_tick)

    control.start()
    control.process_pending()
    if tick is not None:
        heap.at(tick, on_tick)
    reported = 0
    while progress.ended < total:
        item = heap.pop()
        if item is None:
            break
        t, fn = item
        if t > horizon_s:
            clock.advance_to(horizon_s)
            break
        clock.advance_to(t)
        fn()
        control.process_pending()
        if on_progress is not None and progress.ended - reported >= 200:
            reported = progress.ended
            on_progress(progress.ended, total)
    if on_progress is not None:
        on_progress(progress.ended, total)
    return SimRun(
        control=control, engines=engines, cluster=cluster, requests=requests,
        end_s=clock.now(), wall_s=time.perf_counter() - wall0, truth=truth,
    )
