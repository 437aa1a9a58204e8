"""The real-time driver around :class:`~qlm.runtime.control.ControlPlane` on asyncio.

The control plane never sleeps or blocks; this loop feeds it:

- ``submit``/``cancel`` from any coroutine on the loop's thread;
- backend events, processed promptly (each ``post`` schedules one ``process_pending`` with
  ``call_soon``; bursts coalesce);
- policy ticks every ``policy.tick_s`` virtual seconds, on the loop;
- planner solves off the loop: the policy's :class:`~qlm.policies.base.PlanRunner` is this
  loop's, which runs ``solve`` (a pure function of a snapshot taken on the loop) in one
  worker thread, then applies the plan on the loop and carries out the policy's
  ``on_plan`` actions (pulls) like a tick's. Nothing waits for a solve meanwhile: events,
  submissions and token streams go on (the policy places new groups provisionally). A
  failed solve is logged and the provisional placements stay; :meth:`RuntimeLoop.stop`
  cancels a solve in flight (its plan is never applied). Token streaming never waits on the
  control plane in any case: drivers push tokens to :class:`RequestStream`s directly;
- health polling and metrics scraping (``check_health()``/``refresh()`` of backends that
  have them) every ``health_interval_s`` wall seconds. A dead engine's requests come back
  as ``Aborted`` events: replayable ones are requeued by the control plane, streams that
  already sent tokens fail with a clean end.

Usage::

    rt = RuntimeLoop(ControlPlane(policy, views, slo, RealClock(speed), strict=False))
    await rt.start()
    stream = rt.submit(Request(id, model, slo_class, rt.now(), prompt_tokens, max_tokens))
    async for chunk in stream: ...      # StreamChunk(text, tokens) as tokens arrive
    stream.end                         # StreamEnd(state, reason, prompt/completion tokens)
    await rt.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from qlm.domain.request import Request
from qlm.policies.base import PlanRunner
from qlm.runtime.control import ControlListener, ControlPlane
from qlm.runtime.events import EngineEvent
from qlm.runtime.vllm.stream import RequestStream, StreamChunk, StreamEnd

log = logging.getLogger("qlm.runtime.loop")

__all__ = ["RequestStream", "RuntimeLoop", "StreamChunk", "StreamEnd"]

T = TypeVar("T")


class _LoopSink:
    """Backends post here: the event goes to the control plane and processing is scheduled."""

    def __init__(self, control: ControlPlane, kick: Callable[[], None]) -> None:
        self.control = control
        self.kick = kick

    def post(self, event: EngineEvent) -> None:
        self.control.post(event)
        self.kick()


class _ThreadPlanRunner(PlanRunner):
    """The runtime's plan runner: ``solve`` in the loop's planner thread, ``done`` and the
    policy's ``on_plan`` actions back on the loop (:meth:`RuntimeLoop._solve`)."""

    def __init__(self, rt: RuntimeLoop) -> None:
        self.rt = rt
        # the event loop (and, on a small controller, the engines' emulators) need a core:
        # a solver with as many threads as cores starves them (measured on 2 cores: the peer
        # comparison's interactive SLO attainment fell from ~70% to ~43%)
        self.cores = max(1, (os.cpu_count() or 1) - 1)

    def run(self, solve: Callable[[], T], done: Callable[[T | None], None]) -> None:
        self.rt._start_solve(solve, done)


class _Ends(ControlListener):
    def __init__(self, rt: RuntimeLoop) -> None:
        self.rt = rt

    def on_request_end(self, request: Request) -> None:
        self.rt._on_end(request)


class RuntimeLoop:
    """Runs ``control`` in real time on the current asyncio loop (see the module docstring).

    ``control`` should be built with ``strict=False`` and a ``RealClock`` whose ``speed``
    matches the engines' (1.0 for real vLLM; the emulators' ``--speed`` otherwise). Its
    backends are re-bound to this loop's sink, and its policy's solves to this loop's
    planner thread.
    """

    def __init__(
        self,
        control: ControlPlane,
        *,
        health_interval_s: float = 1.0,
    ) -> None:
        if control.strict:
            log.warning("a real-time control plane should run with strict=False")
        self.control = control
        self.policy = control.policy
        self.health_interval_s = health_interval_s
        self.speed = float(getattr(control.clock, "speed", 1.0))
        self.streams: dict[str, RequestStream] = {}
        self._open: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._waiters: dict[str, list[asyncio.Future[Request]]] = {}
        self._scheduled = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._solves: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.plans = 0  # solves whose plan was applied
        self.failed_solves = 0
        self.policy.use_plan_runner(_ThreadPlanRunner(self))
        sink = _LoopSink(control, self._kick)
        for inst in control.instances.values():
            b = inst.backend
            b.bind(sink)
            if hasattr(b, "stream_lookup"):
                b.stream_lookup = self.streams.get
        control.listeners.append(_Ends(self))

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the policy, the tick task and health polling."""
        self._loop = asyncio.get_running_loop()
        self.control.start()
        self._process()
        if self.policy.tick_s is not None:
            self._tasks.append(asyncio.create_task(self._tick_loop(self.policy.tick_s)))
        if self.health_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._health_loop()))

    async def stop(self) -> None:
        """Stop background tasks (a solve in flight is abandoned: its thread finishes on its
        own, its plan is never applied) and close backends that have ``close()``."""
        tasks = [*self._tasks, *self._solves]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._solves.clear()
        for inst in self.control.instances.values():
            close = getattr(inst.backend, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> RuntimeLoop:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- inputs -------------------------------------------------------------------------
    def now(self) -> float:
        """Control-plane time (virtual seconds), for ``Request.arrival_s``."""
        return self.control.clock.now()

    def submit(self, request: Request, *, streaming: bool = True,
               stream: RequestStream | None = None) -> RequestStream:
        """Enter ``request`` into the global queue; returns its token stream.

        Raises ``ValueError`` (one line) for a duplicate id or an unknown SLO class.
        ``streaming=False`` marks a client that gets one buffered response: its request is
        replayed if its engine dies mid-generation.
        """
        if request.id in self.control.requests or request.id in self.streams:
            raise ValueError(f"duplicate request id {request.id!r}")
        if request.slo_class not in self.control.slo_classes:
            raise ValueError(
                f"request {request.id}: unknown SLO class {request.slo_class!r}; "
                f"known: {sorted(self.control.slo_classes)}"
            )
        s = stream or RequestStream(request.id, streaming)
        self.streams[request.id] = s
        self._open.add(request.id)
        self._idle.clear()
        self._run(lambda: self.control.submit(request))
        return s

    def cancel(self, request_id: str, reason: str = "cancelled") -> None:
        """The client went away: drop the request (queued) or abort it (in flight)."""
        self._run(lambda: self.control.cancel(request_id, reason))

    async def wait(self, request_id: str) -> Request:
        """The request once it reached a terminal state."""
        r = self.control.requests.get(request_id)
        if r is not None and r.state.terminal:
            return r
        fut: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(request_id, []).append(fut)
        return await fut

    async def drain(self) -> None:
        """Wait until every submitted request has ended."""
        await self._idle.wait()

    # ---- processing ---------------------------------------------------------------------
    def _run(self, fn: Callable[[], object]) -> None:
        self._guard(fn)
        self._process()

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # never let one bad action stop the runtime
            log.exception("control plane error")

    def _kick(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._process)

    def _process(self) -> None:
        self._scheduled = False
        self._guard(self.control.process_pending)

    def _on_end(self, r: Request) -> None:
        s = self.streams.pop(r.id, None)
        if s is not None:
            s.close(StreamEnd(r.state.name.lower(), r.finish_reason, r.prompt_tokens,
                              r.generated_tokens))
        for fut in self._waiters.pop(r.id, []):
            if not fut.done():
                fut.set_result(r)
        self._open.discard(r.id)
        if not self._open:
            self._idle.set()

    async def _tick_loop(self, tick_s: float) -> None:
        period = tick_s / self.speed
        while True:
            await asyncio.sleep(period)
            self._run(self.control.tick)

    # ---- planner solves (the policy's PlanRunner) ---------------------------------------
    def _start_solve(self, solve: Callable[[], T], done: Callable[[T | None], None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(self._solve(solve, done))
        self._solves.add(task)
        task.add_done_callback(self._solves.discard)

    async def _solve(self, solve: Callable[[], T], done: Callable[[T | None], None]) -> None:
        """``solve`` in the planner thread; then, on the loop, ``done`` (the policy applies
        the plan) and the policy's ``on_plan`` actions, as a tick's. A failed solve is
        logged and reported as ``None``; a cancelled one (``stop``) reports nothing."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qlm-planner")
        result: T | None = None
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, solve)
        except Exception:
            self.failed_solves += 1
            log.exception("planner solve failed; provisional placements kept")
        self._run(lambda: self._planned(done, result))

    def _planned(self, done: Callable[[T | None], None], result: T | None) -> None:
        done(result)
        if result is not None:
            self.plans += 1
        self.control.apply(self.policy.on_plan(self.control.view))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            coros = []
            for inst in self.control.instances.values():
                for name in ("check_health", "refresh"):
                    fn = getattr(inst.backend, name, None)
                    if fn is not None:
                        coros.append(fn())
            if coros:
                await asyncio.gather(*coros, return_exceptions=True)
