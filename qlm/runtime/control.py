"""The control plane: one loop body for the simulator (virtual time) and real engines.

It owns the global queue and the request table, turns backend events into request state,
asks the policy for actions and carries them out on backends. It never sleeps and never
blocks: the driver around it (the simulator's event heap, or the asyncio runtime) calls
:meth:`submit`, :meth:`process_pending` and :meth:`tick`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from qlm.domain.request import Request, RequestState
from qlm.domain.slo import SLOClass
from qlm.errors import PolicyError
from qlm.perf.swap_model import Residency
from qlm.policies.base import Policy
from qlm.runtime.actions import Abort, Action, Dispatch, Reject, Swap
from qlm.runtime.clock import Clock
from qlm.runtime.events import (
    Aborted,
    EngineEvent,
    Finished,
    FirstToken,
    InstanceDown,
    InstanceUp,
    SwapDone,
)
from qlm.runtime.view import ClusterView, InstanceState, InstanceView

log = logging.getLogger("qlm.control")


class ControlListener:
    """Observer of the control plane (metrics, logs). Every hook is optional."""

    def on_request_end(self, request: Request) -> None:
        """The request reached a terminal state."""

    def on_first_token(self, request: Request) -> None:
        """The request's first token was reported."""

    def on_action(self, action: Action, t: float) -> None:
        """An action was carried out."""

    def on_event(self, event: EngineEvent) -> None:
        """A backend event was handled."""


class ControlPlane:
    """Global queue + request table + policy + backends.

    With ``strict`` (the simulator), an invalid action raises ``PolicyError``; without it
    (real engines, where state can change between decision and action) it is logged and
    skipped, and the request stays queued.

    ``keep_ended``: how many ended requests stay in :attr:`requests` (the most recent; an
    older one is dropped when a new one ends). ``None`` keeps all, as the simulator's results
    read them; a long-running gateway bounds it, or its memory and its garbage collector's
    pauses grow with every request served. Events about a request no longer in the table
    are logged and ignored (raised with ``strict``).
    """

    def __init__(
        self,
        policy: Policy,
        instances: Mapping[str, InstanceView],
        slo_classes: Mapping[str, SLOClass],
        clock: Clock,
        *,
        strict: bool = True,
        listeners: Iterable[ControlListener] = (),
        keep_ended: int | None = None,
    ) -> None:
        if keep_ended is not None and keep_ended < 1:  # the policy reads an ending request's entry
            raise ValueError(f"keep_ended must be >= 1 or None, got {keep_ended}")
        self.policy = policy
        self.instances = dict(instances)
        self.slo_classes = dict(slo_classes)
        self.clock = clock
        self.strict = strict
        self.listeners = list(listeners)
        self.queue: dict[str, Request] = {}
        self.requests: dict[str, Request] = {}
        self.view = ClusterView(clock.now, self.instances, self.queue, self.requests, self.slo_classes)
        self._pending: deque[EngineEvent] = deque()
        self._no_requeue: set[str] = set()
        self.keep_ended = keep_ended
        self._ended: deque[str] = deque()  # ids of ended requests still in the table, oldest first
        self.swaps = 0
        self.cold_starts = 0
        self.evictions = 0
        self.rejections = 0
        for inst in self.instances.values():
            inst.backend.bind(self)

    # ---- inputs -------------------------------------------------------------------------
    def start(self) -> None:
        self._apply(self.policy.start(self.view))

    def submit(self, request: Request) -> None:
        """A new request enters the global queue."""
        if request.id in self.requests:
            raise ValueError(f"duplicate request id {request.id!r}")
        cls = self.slo_classes.get(request.slo_class)
        if cls is None:
            raise ValueError(
                f"request {request.id}: unknown SLO class {request.slo_class!r}; "
                f"known: {sorted(self.slo_classes)}"
            )
        request.ttft_deadline_s = request.arrival_s + cls.ttft_s
        request.state = RequestState.QUEUED
        self.requests[request.id] = request
        self.queue[request.id] = request
        self._apply(self.policy.on_arrival(request, self.view))

    def post(self, event: EngineEvent) -> None:
        """Backends report here; events are handled by :meth:`process_pending`."""
        self._pending.append(event)

    def process_pending(self) -> None:
        while self._pending:
            self._handle(self._pending.popleft())

    def tick(self) -> None:
        self._apply(self.policy.on_tick(self.view))

    def apply(self, actions: Sequence[Action]) -> None:
        """Carry out actions a policy decided outside a hook (the real-time runtime applies
        a plan solved off its event loop, then the policy's ``on_plan`` actions, here)."""
        self._apply(actions)

    def cancel(self, request_id: str, reason: str = "cancelled") -> bool:
        """The client went away: a queued request ends ``FAILED`` at once; an in-flight one
        is aborted without requeue (it ends when its backend reports ``Aborted``). Returns
        False when the request is unknown or already ended."""
        r = self.requests.get(request_id)
        if r is None or r.state.terminal:
            return False
        if self.queue.pop(request_id, None) is not None:
            self._end(r, RequestState.FAILED, self.clock.now(), reason)
            return True
        if r.instance is not None:
            self._no_requeue.add(r.id)
            self.instances[r.instance].backend.abort(r.id)
        return True

    # ---- events -------------------------------------------------------------------------
    def _handle(self, ev: EngineEvent) -> None:
        inst = self.instances[ev.instance_id]
        requeued: Request | None = None
        if isinstance(ev, FirstToken | Finished | Aborted) and ev.request_id not in self.requests:
            msg = f"{type(ev).__name__} for request {ev.request_id!r}, which is not in the request table"
            if self.strict:
                raise KeyError(msg)
            log.warning("ignoring %s (ended and dropped, or never submitted)", msg)
            return
        if isinstance(ev, FirstToken):
            r = self.requests[ev.request_id]
            if r.first_token_s is None:
                r.first_token_s = ev.t
                for lst in self.listeners:
                    lst.on_first_token(r)
            if r.state is RequestState.DISPATCHED:
                r.state = RequestState.RUNNING
        elif isinstance(ev, Finished):
            r = self.requests[ev.request_id]
            inst.outstanding.pop(r.id, None)
            r.generated_tokens += ev.output_tokens
            if r.first_token_s is None:  # a backend that reports no separate first token
                r.first_token_s = ev.t
            self._end(r, RequestState.FINISHED, ev.t, ev.reason)
        elif isinstance(ev, Aborted):
            r = self.requests[ev.request_id]
            inst.outstanding.pop(r.id, None)
            r.generated_tokens += ev.generated_tokens
            if r.id in self._no_requeue or not ev.retryable:
                self._no_requeue.discard(r.id)
                self._end(r, RequestState.FAILED, ev.t, ev.reason)
            else:
                r.state = RequestState.QUEUED
                r.instance = None
                r.evictions += 1
                self.evictions += 1
                self.queue[r.id] = r
                requeued = r
        elif isinstance(ev, SwapDone):
            if inst.active_model is not None and inst.active_model != ev.model:
                inst.residency[inst.active_model] = self._residency_after_sleep(inst)
            inst.residency[ev.model] = Residency.ACTIVE
            inst.active_model = ev.model
            inst.pending_model = None
            inst.swap_started_s = None
            if inst.state is not InstanceState.DOWN:
                inst.state = InstanceState.READY
        elif isinstance(ev, InstanceDown):
            inst.state = InstanceState.DOWN
        elif isinstance(ev, InstanceUp):
            inst.state = InstanceState.READY
            if ev.model is not None:
                inst.active_model = ev.model
                inst.residency[ev.model] = Residency.ACTIVE
        for lst in self.listeners:
            lst.on_event(ev)
        self._maybe_start_drained_swap(inst)
        self._apply(self.policy.on_event(ev, self.view))
        if requeued is not None and requeued.state is RequestState.QUEUED:
            self._apply(self.policy.on_requeue(requeued, self.view))

    def _residency_after_sleep(self, inst: InstanceView) -> Residency:
        if not inst.spec.sleep_mode:
            return Residency.COLD
        backend_res = getattr(inst.backend, "residency_of", None)
        if callable(backend_res) and inst.active_model is not None:
            res = backend_res(inst.active_model)
            if isinstance(res, Residency):
                return res
        return Residency.SLEEP_L1

    def _end(self, r: Request, state: RequestState, t: float, reason: str | None) -> None:
        r.state = state
        r.finish_s = t
        r.finish_reason = reason
        for lst in self.listeners:
            lst.on_request_end(r)
        if self.keep_ended is not None:
            self._ended.append(r.id)
            while len(self._ended) > self.keep_ended:
                self.requests.pop(self._ended.popleft(), None)

    def _maybe_start_drained_swap(self, inst: InstanceView) -> None:
        if inst.state is InstanceState.DRAINING and not inst.outstanding:
            assert inst.pending_model is not None
            inst.state = InstanceState.SWAPPING
            inst.swap_started_s = self.clock.now()
            inst.backend.swap(inst.pending_model, "wait")

    # ---- actions ------------------------------------------------------------------------
    def _invalid(self, msg: str) -> None:
        if self.strict:
            raise PolicyError(f"{type(self.policy).__name__}: {msg}")
        log.warning("skipping invalid action: %s", msg)

    def _apply(self, actions: Sequence[Action]) -> None:
        now = self.clock.now()
        for a in actions:
            if isinstance(a, Dispatch):
                if not self._dispatch(a, now):
                    continue
            elif isinstance(a, Abort):
                r = self.requests.get(a.request_id)
                if r is None or r.instance is None or r.state.terminal or r.id in self.queue:
                    self._invalid(f"abort of {a.request_id!r}, which is not in flight")
                    continue
                if not a.requeue:
                    self._no_requeue.add(r.id)
                self.instances[r.instance].backend.abort(r.id)
            elif isinstance(a, Swap):
                if not self._swap(a, now):
                    continue
            elif isinstance(a, Reject):
                r = self.queue.pop(a.request_id, None)
                if r is None:
                    self._invalid(f"reject of {a.request_id!r}, which is not queued")
                    continue
                self.rejections += 1
                self._end(r, RequestState.REJECTED, now, a.reason or "rejected")
            for lst in self.listeners:
                lst.on_action(a, now)

    def _dispatch(self, a: Dispatch, now: float) -> bool:
        r = self.queue.get(a.request_id)
        inst = self.instances.get(a.instance_id)
        if r is None:
            self._invalid(f"dispatch of {a.request_id!r}, which is not queued")
            return False
        if inst is None or not inst.accepts(r.model):
            state = "unknown" if inst is None else f"{inst.state.name}/{inst.active_model}"
            self._invalid(f"dispatch of {r.id} ({r.model}) to {a.instance_id} ({state})")
            return False
        del self.queue[r.id]
        r.state = RequestState.DISPATCHED
        r.instance = inst.id
        r.dispatched_s = now
        inst.outstanding[r.id] = r
        inst.backend.dispatch(r, a.priority)
        return True

    def _swap(self, a: Swap, now: float) -> bool:
        inst = self.instances.get(a.instance_id)
        if inst is None or a.model not in inst.profiles:
            self._invalid(f"swap of {a.instance_id} to {a.model!r}, which it cannot serve")
            return False
        if inst.state is not InstanceState.READY:
            self._invalid(f"swap of {inst.id} while {inst.state.name}")
            return False
        if inst.active_model == a.model:
            return False
        self.swaps += 1
        if inst.residency.get(a.model, Residency.COLD) is Residency.COLD:
            self.cold_starts += 1
        inst.pending_model = a.model
        if a.mode == "wait" and inst.outstanding:
            inst.state = InstanceState.DRAINING
        else:
            inst.state = InstanceState.SWAPPING
            inst.swap_started_s = now
            inst.backend.swap(a.model, a.mode)
        return True
