"""Prometheus metrics of the gateway (one ``CollectorRegistry`` per gateway).

Event-driven (a :class:`~qlm.runtime.control.ControlListener` on the control plane):

- ``qlm_requests_total{model,slo_class,outcome}``: gateway outcomes (``finished``,
  ``rejected``, ``downgraded``, ``failed``, ``cancelled``, ``unavailable``);
- ``qlm_ttft_seconds{slo_class}``, ``qlm_queue_time_seconds{slo_class}`` histograms
  (control-plane seconds: wall seconds for real engines, compressed by the emulators' speed);
- ``qlm_slo_met_total`` / ``qlm_slo_missed_total{slo_class}`` and the gauge
  ``qlm_slo_attainment_ratio{slo_class}`` (finished requests whose TTFT met the class target);
- ``qlm_lso_actions_total{kind}``: ``pull``, ``balance``, ``evict``, ``swap``, ``reject``.

Read at scrape time: ``qlm_queue_depth{slo_class}``, ``qlm_engine_state{engine,state}``
(1 for the current state), ``qlm_engine_outstanding{engine}``, ``qlm_solver_seconds_total``,
``qlm_solver_solves_total``.

The gateway process (:class:`LoopMonitor`, while the gateway runs): ``qlm_event_loop_lag_seconds``
(how late a timer of the event loop fires: the wait every request and token relayed at that
moment had on top of its own work) and ``qlm_gc_pause_seconds{generation}`` (Python's
garbage-collector pauses, which stop the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qlm.domain.request import Request, RequestState
from qlm.runtime.actions import Abort, Action, Dispatch, Reject, Swap
from qlm.runtime.control import ControlListener
from qlm.runtime.view import InstanceState

if TYPE_CHECKING:
    from qlm.runtime.control import ControlPlane

__all__ = ["GatewayMetrics", "LoopMonitor", "action_kind"]

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
_PAUSE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf"))


def action_kind(a: Action) -> str:
    """The LSO action an action stands for."""
    if isinstance(a, Dispatch):
        return "balance" if a.reason.startswith("balance") else "pull"
    if isinstance(a, Abort):
        return "evict"
    if isinstance(a, Swap):
        return "swap"
    if isinstance(a, Reject):
        return "reject"
    return type(a).__name__.lower()


class _Scraped(Collector):
    """Values read from the control plane when ``/metrics`` is scraped."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        control = self.metrics.control
        if control is None:
            return
        depth = GaugeMetricFamily("qlm_queue_depth", "Queued requests by SLO class", labels=["slo_class"])
        counts = dict.fromkeys(control.slo_classes, 0)
        for r in control.queue.values():
            counts[r.slo_class] = counts.get(r.slo_class, 0) + 1
        for cls, n in sorted(counts.items()):
            depth.add_metric([cls], n)
        yield depth
        state = GaugeMetricFamily("qlm_engine_state", "1 for the engine's current state",
                                  labels=["engine", "state"])
        held = GaugeMetricFamily("qlm_engine_outstanding", "Requests in flight on the engine",
                                 labels=["engine"])
        for eid, inst in sorted(control.instances.items()):
            for s in InstanceState:
                state.add_metric([eid, s.name.lower()], 1.0 if inst.state is s else 0.0)
            held.add_metric([eid], len(inst.outstanding))
        yield state
        yield held
        planner = getattr(control.policy, "planner", None)
        solve_s = CounterMetricFamily("qlm_solver_seconds", "Wall time spent in the planner's solver")
        solve_s.add_metric([], float(getattr(planner, "solve_s", 0.0)))
        yield solve_s
        solves = CounterMetricFamily("qlm_solver_solves", "Solver calls")
        solves.add_metric([], float(getattr(planner, "solves", 0)))
        yield solves


class GatewayMetrics(ControlListener):
    """The gateway's metrics; attach with :meth:`attach` once the control plane exists."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.control: ControlPlane | None = None
        self.requests = Counter("qlm_requests", "Requests by model, SLO class and gateway outcome",
                                ["model", "slo_class", "outcome"], registry=r)
        self.ttft = Histogram("qlm_ttft_seconds", "Time to first token", ["slo_class"], buckets=_BUCKETS,
                              registry=r)
        self.queue_time = Histogram("qlm_queue_time_seconds", "Arrival to dispatch", ["slo_class"],
                                    buckets=_BUCKETS, registry=r)
        self.slo_met = Counter("qlm_slo_met", "Finished requests that met their TTFT target", ["slo_class"],
                               registry=r)
        self.slo_missed = Counter("qlm_slo_missed", "Finished requests that missed their TTFT target",
                                  ["slo_class"], registry=r)
        self.attainment = Gauge("qlm_slo_attainment_ratio", "Share of finished requests meeting the TTFT SLO",
                                ["slo_class"], registry=r)
        self.actions = Counter("qlm_lso_actions", "Control-plane actions by LSO kind", ["kind"], registry=r)
        self._met: dict[str, list[int]] = {}
        r.register(_Scraped(self))

    def attach(self, control: ControlPlane) -> None:
        self.control = control
        control.listeners.append(self)

    # ---- ControlListener ----------------------------------------------------------------
    def on_first_token(self, request: Request) -> None:
        if request.ttft_s is not None:
            self.ttft.labels(request.slo_class).observe(max(0.0, request.ttft_s))

    def on_action(self, action: Action, t: float) -> None:
        self.actions.labels(action_kind(action)).inc()
        if isinstance(action, Dispatch) and self.control is not None:
            r = self.control.requests.get(action.request_id)
            if r is not None and r.evictions == 0:
                self.queue_time.labels(r.slo_class).observe(max(0.0, t - r.arrival_s))

    def on_request_end(self, request: Request) -> None:
        if request.state is not RequestState.FINISHED or request.ttft_s is None:
            return
        cls = request.slo_class
        met = request.first_token_s is not None and request.first_token_s <= request.ttft_deadline_s
        (self.slo_met if met else self.slo_missed).labels(cls).inc()
        tally = self._met.setdefault(cls, [0, 0])
        tally[0] += int(met)
        tally[1] += 1
        self.attainment.labels(cls).set(tally[0] / tally[1])


class LoopMonitor:
    """Event-loop lag and garbage-collector pauses of this process, as histograms on
    ``registry``: a timer every ``interval_s`` observes how late it fired, and ``gc.callbacks``
    time each collection. :meth:`start` on the loop to watch, :meth:`stop` to end both."""

    def __init__(self, registry: CollectorRegistry, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.lag = Histogram("qlm_event_loop_lag_seconds", "How late the event loop ran a timer",
                             buckets=_PAUSE_BUCKETS, registry=registry)
        self.gc_pause = Histogram("qlm_gc_pause_seconds", "Garbage-collector pauses", ["generation"],
                                  buckets=_PAUSE_BUCKETS, registry=registry)
        self._task: asyncio.Task[None] | None = None
        self._gc_started = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="qlm-loop-monitor")
            gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.lag.observe(max(0.0, time.perf_counter() - t0 - self.interval_s))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pause.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - self._gc_started)
