"""The runtime loop: streaming to a caller, cancellation, and slow policy ticks off-loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from qlm.domain.request import Request, RequestState
from qlm.domain.slo import DEFAULT_SLO_CLASSES
from qlm.policies.edf import EDFPolicy
from qlm.runtime.actions import Action
from qlm.runtime.launcher import EmulatedEngineSpec, EmulatedLauncher, start_runtime
from qlm.runtime.view import ClusterView
from qlm.runtime.vllm.driver import OUTPUT_TOKENS

SLO = {c.name: c for c in DEFAULT_SLO_CLASSES}


class SlowTickEDF(EDFPolicy):
    """EDF whose tick blocks for 0.3 s (a solver); records stream progress meanwhile."""

    tick_s = 2.0
    offload_ticks = True

    def __init__(self) -> None:
        super().__init__()
        self.watch: list[object] = []
        self.progress: list[tuple[int, int]] = []
        self.threads: set[str] = set()

    def on_tick(self, view: ClusterView) -> Sequence[Action]:
        self.threads.add(threading.current_thread().name)
        before = sum(getattr(s, "delivered_tokens", 0) for s in self.watch)
        time.sleep(0.3)
        after = sum(getattr(s, "delivered_tokens", 0) for s in self.watch)
        self.progress.append((before, after))
        return super().on_tick(view)


async def test_stream_cancel_and_offloaded_tick() -> None:
    engines = [EmulatedEngineSpec("e0", "A100-80G", ("m",), profiles={"m": "mistral-7b"})]
    async with EmulatedLauncher(engines, speed=20) as launcher:
        policy = SlowTickEDF()
        rt = await start_runtime(launcher.config(), policy, SLO)
        try:
            long = Request("long", "m", "batch-2", rt.now(), 100, meta={OUTPUT_TOKENS: 3000})
            stream = rt.submit(long)
            policy.watch.append(stream)
            chunks = [c async for c in stream]  # tokens arrive while ticks block their thread
            assert stream.end is not None and stream.end.ok and stream.end.completion_tokens == 3000
            assert sum(c.tokens for c in chunks) == 3000 and len(chunks) > 3
            assert any(after > before for before, after in policy.progress)
            assert policy.threads and all(t.startswith("qlm-policy") for t in policy.threads)
            # cancel in flight: the engine frees the slot, the request fails once
            r = Request("gone", "m", "interactive", rt.now(), 100, meta={OUTPUT_TOKENS: 5000})
            s2 = rt.submit(r)
            async for _ in s2:
                rt.cancel("gone")
                break
            done = await asyncio.wait_for(rt.wait("gone"), 10)
            assert done.state is RequestState.FAILED
            assert rt.ended["gone"] == 1
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
