"""The runtime loop: streaming to a caller, cancellation, and planner solves off the loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict

import pytest

from qlm.domain.request import Request, RequestState
from qlm.domain.slo import DEFAULT_SLO_CLASSES
from qlm.perf import default_catalog
from qlm.policies.qlm_policy import GreedyEDFPlanner, PlannerInput, PlannerOutput, QLMPolicy
from qlm.runtime.clock import RealClock, VirtualClock
from qlm.runtime.control import ControlPlane
from qlm.runtime.launcher import EmulatedEngineSpec, EmulatedLauncher, start_runtime
from qlm.runtime.loop import RuntimeLoop
from qlm.runtime.vllm.driver import OUTPUT_TOKENS
from qlm.sim.simulator import EventHeap, build_engines
from qlm.workload.cluster import build_cluster
from tests.factories import req, scenario
from tests.runtime.conftest import count_ends, until

SLO = {c.name: c for c in DEFAULT_SLO_CLASSES}


class SlowPlanner(GreedyEDFPlanner):
    """The greedy planner behind a solve that takes ``delay_s`` (a MILP's time limit);
    records its threads and the progress of watched streams while it runs."""

    def __init__(self, delay_s: float, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.watch: list[object] = []
        self.progress: list[tuple[int, int]] = []
        self.threads: set[str] = set()
        self.calls = 0

    def plan(self, problem: PlannerInput) -> PlannerOutput:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        before = sum(getattr(s, "delivered_tokens", 0) for s in self.watch)
        time.sleep(self.delay_s)
        after = sum(getattr(s, "delivered_tokens", 0) for s in self.watch)
        self.progress.append((before, after))
        if self.fail:
            raise RuntimeError("solver crashed")
        return super().plan(problem)


def idle_runtime(planner: SlowPlanner) -> tuple[RuntimeLoop, QLMPolicy]:
    """A runtime over two simulated engines that never advance (no virtual time passes):
    dispatches land in ``outstanding`` and stay there."""
    sc = scenario()
    cluster = build_cluster(sc, default_catalog())
    _, views = build_engines(cluster, EventHeap(VirtualClock()), defaultdict(lambda: 100), "fcfs")
    policy = QLMPolicy(planner=planner, tick_s=1000.0, spread=False)  # every new group is solved for
    control = ControlPlane(policy, views, sc.slo, RealClock(), strict=False)
    return RuntimeLoop(control, health_interval_s=0), policy


def dispatched(rt: RuntimeLoop) -> set[str]:
    return {rid for inst in rt.control.instances.values() for rid in inst.outstanding}


async def test_solve_does_not_block_the_loop() -> None:
    planner = SlowPlanner(0.5)
    rt, policy = idle_runtime(planner)
    await rt.start()
    try:
        t0 = time.perf_counter()
        rt.submit(req("r0", t=rt.now()))  # a new group: a solve starts in the planner thread
        assert dispatched(rt) == {"r0"}  # placed provisionally and dispatched, not waiting
        assert policy._solving is not None and policy.replans == 0
        # the loop stays responsive while the solve runs: timers fire on time...
        lags = []
        for _ in range(10):
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)
        assert max(lags) < 0.05, lags  # a few ms; 0.5 s if the solve held the loop
        # ...and a request is dispatched at once
        rt.submit(req("r1", t=rt.now()))
        assert dispatched(rt) == {"r0", "r1"}
        assert time.perf_counter() - t0 < 0.4 and policy.replans == 0
        await until(lambda: policy.replans == 1, 5.0)  # then the plan is applied on the loop
        assert time.perf_counter() - t0 >= 0.5
        assert rt.plans == 1 and planner.calls == 1 and policy._solving is None
        assert planner.threads == {"qlm-planner_0"}
    finally:
        await rt.stop()


async def test_failed_solve_is_logged_and_placements_stay(caplog: pytest.LogCaptureFixture) -> None:
    planner = SlowPlanner(0.05, fail=True)
    rt, policy = idle_runtime(planner)
    await rt.start()
    try:
        with caplog.at_level(logging.ERROR, logger="qlm.runtime.loop"):
            rt.submit(req("r0", t=rt.now()))
            placed = dict(policy.assigned)
            await until(lambda: rt.failed_solves == 1, 5.0)
        assert "planner solve failed" in caplog.text
        assert policy.assigned == placed and policy.replans == 0 and policy._solving is None
        rt.submit(req("r1", t=rt.now(), cls="batch-2"))  # the loop goes on; a new group, a new solve
        await until(lambda: rt.failed_solves == 2, 5.0)
        assert dispatched(rt) == {"r0", "r1"}
    finally:
        await rt.stop()


async def test_stop_abandons_a_solve_in_flight() -> None:
    planner = SlowPlanner(0.3)
    rt, policy = idle_runtime(planner)
    await rt.start()
    rt.submit(req("r0", t=rt.now()))
    await until(lambda: planner.calls == 1)  # solving in its thread
    t0 = time.perf_counter()
    await rt.stop()
    assert time.perf_counter() - t0 < 0.2  # stop does not wait for the solver thread
    assert not rt._solves
    await asyncio.sleep(0.4)  # the thread ends on its own; its plan is never applied
    assert policy.replans == 0 and rt.plans == 0


async def test_stream_cancel_and_solves_off_the_loop() -> None:
    engines = [EmulatedEngineSpec("e0", "A100-80G", ("m",), profiles={"m": "mistral-7b"})]
    async with EmulatedLauncher(engines, speed=20) as launcher:
        planner = SlowPlanner(0.3)
        policy = QLMPolicy(planner=planner, tick_s=2.0, spread=False)  # 0.1 s wall at speed 20; solves
        rt = await start_runtime(launcher.config(), policy, SLO)
        ends = count_ends(rt)
        try:
            long = Request("long", "m", "batch-2", rt.now(), 100, meta={OUTPUT_TOKENS: 3000})
            stream = rt.submit(long)
            planner.watch.append(stream)
            chunks = [c async for c in stream]  # tokens arrive while solves block their thread
            assert stream.end is not None and stream.end.ok and stream.end.completion_tokens == 3000
            assert sum(c.tokens for c in chunks) == 3000 and len(chunks) > 3
            assert any(after > before for before, after in planner.progress)
            assert planner.threads and all(t.startswith("qlm-planner") for t in planner.threads)
            # cancel in flight: the engine frees the slot, the request fails once
            r = Request("gone", "m", "interactive", rt.now(), 100, meta={OUTPUT_TOKENS: 5000})
            s2 = rt.submit(r)
            async for _ in s2:
                rt.cancel("gone")
                break
            done = await asyncio.wait_for(rt.wait("gone"), 10)
            assert done.state is RequestState.FAILED
            assert ends["gone"] == 1
            # duplicate ids and unknown classes are refused at once
            for bad in (Request("long", "m", "interactive", 0, 1), Request("x", "m", "nope", 0, 1)):
                try:
                    rt.submit(bad)
                except ValueError as exc:
                    assert "\n" not in str(exc)
                else:
                    raise AssertionError("accepted")
        finally:
            await rt.stop()
