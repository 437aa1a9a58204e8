"""End to end: emulator processes (three GPU types; two models sharing one instance through
sleep mode) driven by the runtime loop with the ``edf`` policy, in compressed time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from qlm.domain.request import Request, RequestState
from qlm.domain.slo import DEFAULT_SLO_CLASSES
from qlm.policies.common import BatchCapacity
from qlm.policies.edf import EDFPolicy
from qlm.runtime.launcher import EmulatedEngineSpec, EmulatedLauncher, start_runtime
from qlm.runtime.loop import RuntimeLoop
from qlm.runtime.view import InstanceState
from qlm.runtime.vllm.driver import OUTPUT_TOKENS, VLLMInstance
from qlm.runtime.vllm.stream import RequestStream
from tests.runtime.conftest import count_ends

SLO = {c.name: c for c in DEFAULT_SLO_CLASSES}
SPEED = 10.0
pytestmark = pytest.mark.slow


def edf_policy() -> EDFPolicy:
    # a fixed per-engine batch limit (KV capacity / 40k tokens: 10 on A100/H100, 1 on L4) so
    # the backlog stays in the global queue, where EDF orders it
    p = EDFPolicy()
    p.capacity = BatchCapacity(prior_tokens=40_000, alpha=0.0)
    return p


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[EmulatedLauncher, RuntimeLoop]]:
    engines = [
        EmulatedEngineSpec("h100", "H100", ("chat",), profiles={"chat": "mistral-7b"}),
        EmulatedEngineSpec("a100", "A100-80G", ("chat", "code"),
                           profiles={"chat": "mistral-7b", "code": "llama-3-8b"}),
        EmulatedEngineSpec("l4", "L4", ("chat",), profiles={"chat": "mistral-7b"}),
    ]
    launcher = EmulatedLauncher(engines, speed=SPEED, subprocess=True, health_interval_s=0.2)
    cfg = await launcher.start()
    rt = await start_runtime(cfg, edf_policy(), SLO)
    try:
        yield launcher, rt
    finally:
        await rt.stop()
        await launcher.stop()


def workload(seed: int = 0) -> list[tuple[float, Request]]:
    """100 chat batch-2 and 20 code batch-2 at t=0, 80 interactive chat over 1..15 s."""
    rng = np.random.default_rng(seed)
    out: list[tuple[float, Request]] = []
    for i in range(100):
        out.append((0.0, Request(f"b{i}", "chat", "batch-2", 0.0, int(rng.integers(50, 400)),
                                 meta={OUTPUT_TOKENS: int(rng.integers(50, 250))})))
    for i in range(20):
        out.append((0.0, Request(f"c{i}", "code", "batch-2", 0.0, int(rng.integers(50, 400)),
                                 meta={OUTPUT_TOKENS: int(rng.integers(20, 100))})))
    for i, t in enumerate(np.sort(rng.uniform(1.0, 15.0, 80))):
        out.append((float(t), Request(f"i{i}", "chat", "interactive", 0.0,
                                      int(rng.integers(50, 400)),
                                      meta={OUTPUT_TOKENS: int(rng.integers(20, 150))})))
    return sorted(out, key=lambda x: x[0])


async def replay(rt: RuntimeLoop, items: list[tuple[float, Request]], streaming: bool = False
                 ) -> dict[str, RequestStream]:
    t0 = rt.now()
    streams = {}
    for t, r in items:
        delay = (t0 + t - rt.now()) / SPEED
        if delay > 0:
            await asyncio.sleep(delay)
        r.arrival_s = rt.now()
        streams[r.id] = rt.submit(r, streaming=streaming)
    return streams


async def test_replay_edf_priorities_swap_exactly_once(
        cluster: tuple[EmulatedLauncher, RuntimeLoop]) -> None:
    launcher, rt = cluster
    items = workload()
    ends = count_ends(rt)
    streams = await replay(rt, items)
    await asyncio.wait_for(rt.drain(), timeout=60)
    reqs = {r.id: r for _, r in items}
    # every request finished exactly once, with its full output, delivered to its stream
    assert len(ends) == len(items) and set(ends.values()) == {1}
    for r in reqs.values():
        assert r.state is RequestState.FINISHED, (r.id, r.state, r.finish_reason)
        assert r.generated_tokens == r.meta[OUTPUT_TOKENS]
        s = streams[r.id]
        assert s.end is not None and s.end.ok and s.delivered_tokens == r.generated_tokens
    # interactive requests overtake queued batch work: an interactive request is dispatched
    # no later than any batch request that arrived before it and was still queued
    inter = [r for r in reqs.values() if r.slo_class == "interactive"]
    batch = [r for r in reqs.values() if r.slo_class == "batch-2" and r.model == "chat"]
    pairs = 0
    for i in inter:
        for b in batch:
            assert b.dispatched_s is not None and i.dispatched_s is not None
            if b.arrival_s <= i.arrival_s < b.dispatched_s:
                pairs += 1
                assert i.dispatched_s <= b.dispatched_s, (i.id, b.id)
    assert pairs > 100
    ttft_i = np.mean([r.ttft_s for r in inter])
    ttft_b = np.mean([r.ttft_s for r in batch])
    assert ttft_i < ttft_b
    # the code model was served after a sleep/wake swap on the shared A100, not a restart
    a100 = rt.control.instances["a100"].backend
    assert isinstance(a100, VLLMInstance)
    assert ("chat", "code") in [(a, b) for a, b, _ in a100.swap_log]
    assert all(reqs[f"c{i}"].instance == "a100" for i in range(20))
    assert rt.control.cold_starts == 0
    assert all(p.returncode is None for p in launcher.procs.values())


async def test_engine_death_loses_no_buffered_request(
        cluster: tuple[EmulatedLauncher, RuntimeLoop]) -> None:
    launcher, rt = cluster
    items = [(t, r) for t, r in workload(seed=1) if r.model == "chat"][:120]
    ends = count_ends(rt)
    buffered = {r.id for k, (_, r) in enumerate(items) if k % 4}
    streamed = {r.id for _, r in items} - buffered
    submitted: dict[str, RequestStream] = {}

    async def feed() -> None:
        t0 = rt.now()
        for t, r in items:
            delay = (t0 + t - rt.now()) / SPEED
            if delay > 0:
                await asyncio.sleep(delay)
            r.arrival_s = rt.now()
            submitted[r.id] = rt.submit(r, streaming=r.id in streamed)

    async def consume(s: RequestStream) -> None:
        async for _ in s:
            pass

    feeder = asyncio.create_task(feed())
    h100 = rt.control.instances["h100"]
    for _ in range(2000):  # kill the H100 engine while it serves requests
        if len(h100.outstanding) >= 5 and any(r.generated_tokens or r.first_token_s
                                              for r in h100.outstanding.values()):
            break
        await asyncio.sleep(0.005)
    await launcher.kill("h100")
    await feeder
    try:
        await asyncio.wait_for(asyncio.gather(*(consume(s) for s in submitted.values())), 30)
    except TimeoutError:
        open_ = [r for r in rt.control.requests.values() if not r.state.terminal]
        insts = [(i.id, i.state.name, len(i.outstanding)) for i in rt.control.instances.values()]
        raise AssertionError(
            f"hung: {[(r.id, r.state.name, r.instance) for r in open_][:10]} {insts}") from None
    await asyncio.wait_for(rt.drain(), timeout=60)
    assert set(ends.values()) == {1} and len(ends) == len(items)
    reqs = {r.id: r for _, r in items}
    for rid in buffered:  # replayed elsewhere: nothing lost
        assert reqs[rid].state is RequestState.FINISHED, (rid, reqs[rid].finish_reason)
        assert reqs[rid].generated_tokens == reqs[rid].meta[OUTPUT_TOKENS]
        end = submitted[rid].end
        assert end is not None and end.ok
    for rid in streamed:  # finished, or failed cleanly after tokens reached the client
        end = submitted[rid].end
        assert end is not None
        assert end.ok or (reqs[rid].state is RequestState.FAILED and submitted[rid].sent)
    assert rt.control.instances["h100"].state is InstanceState.DOWN
    assert rt.control.evictions > 0
