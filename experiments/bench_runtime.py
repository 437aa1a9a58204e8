"""Control-plane overhead of the real-time runtime: requests pushed through ``RuntimeLoop``
with the ``edf`` policy over instant in-memory backends (no HTTP), so the numbers are the
control plane's own cost per request and its sustained dispatch rate.

    python experiments/bench_runtime.py [--requests 20000] [--instances 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Literal

from qlm.domain.cluster import InstanceSpec, NodeSpec
from qlm.domain.request import Request
from qlm.domain.slo import DEFAULT_SLO_CLASSES
from qlm.perf.engine_model import default_profile
from qlm.perf.swap_model import Residency, SwapCosts
from qlm.policies import registry
from qlm.runtime.backend import EventSink, InstanceBackend, InstanceStats
from qlm.runtime.clock import RealClock
from qlm.runtime.control import ControlPlane
from qlm.runtime.events import Finished, FirstToken
from qlm.runtime.loop import RuntimeLoop
from qlm.runtime.view import InstanceView


class InstantBackend(InstanceBackend):
    """Finishes every request on the next loop iteration (one token)."""

    def __init__(self, instance_id: str, clock: RealClock) -> None:
        self.instance_id = instance_id
        self.clock = clock
        self.sink: EventSink | None = None

    def bind(self, sink: EventSink) -> None:
        self.sink = sink

    def dispatch(self, request: Request, priority: int) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(self._done, request.id)

    def _done(self, rid: str) -> None:
        assert self.sink is not None
        t = self.clock.now()
        self.sink.post(FirstToken(rid, self.instance_id, t))
        self.sink.post(Finished(rid, self.instance_id, t, 1))

    def abort(self, request_id: str) -> None:
        pass

    def swap(self, model: str, mode: Literal["abort", "wait"]) -> None:
        pass

    def stats(self) -> InstanceStats:
        return InstanceStats()


async def bench(n: int, instances: int) -> dict[str, float]:
    clock = RealClock()
    prof = default_profile("mistral-7b", "A100-80G")
    views = {}
    for k in range(instances):
        spec = InstanceSpec(id=f"i{k}", node="n", gpu="A100-80G", models=("mistral-7b",),
                            initial_model="mistral-7b")
        views[spec.id] = InstanceView(
            spec=spec, node=NodeSpec(name="n", gpu="A100-80G", num_gpus=instances, cpu_ram_gb=256),
            profiles={"mistral-7b": prof}, swap_costs={"mistral-7b": SwapCosts(1, 1, 1, 1)},
            backend=InstantBackend(spec.id, clock), residency={"mistral-7b": Residency.ACTIVE},
            active_model="mistral-7b")
    control = ControlPlane(registry.create("edf"), views, {c.name: c for c in DEFAULT_SLO_CLASSES},
                           clock, strict=False)
    rt = RuntimeLoop(control, health_interval_s=0)
    await rt.start()
    t0 = time.perf_counter()
    for i in range(n):
        rt.submit(Request(f"r{i}", "mistral-7b", "interactive", rt.now(), 100), streaming=False)
        if i % 256 == 255:
            await asyncio.sleep(0)
    await rt.drain()
    wall = time.perf_counter() - t0
    await rt.stop()
    return {"requests": n, "instances": instances, "wall_s": wall,
            "overhead_us_per_request": 1e6 * wall / n, "dispatch_rate_rps": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--instances", type=int, default=4)
    a = ap.parse_args()
    print(json.dumps(asyncio.run(bench(a.requests, a.instances)), indent=2))


if __name__ == "__main__":
    main()
