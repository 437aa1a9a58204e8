"""Small factories shared by the tests: hand-built profiles, engines, scenarios, requests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qlm.domain.cluster import GPUType, InstanceSpec, ModelSpec, NodeSpec
from qlm.domain.request import Request
from qlm.perf.engine_model import EngineProfile
from qlm.perf.swap_model import Residency, SwapCosts
from qlm.runtime.clock import VirtualClock
from qlm.runtime.events import EngineEvent
from qlm.sim.engine import NodeMemory, SimEngine
from qlm.sim.simulator import EventHeap
from qlm.workload.generator import TimedRequest
from qlm.workload.scenario import Scenario, parse_scenario

GPU = GPUType(name="G", memory_gb=80, mem_bandwidth_gbps=1000, bf16_tflops=100)


def flat_profile(
    step_ms: float = 10.0,
    kv_tokens: int = 100_000,
    max_seqs: int = 256,
    budget: int = 2048,
    model: str = "m",
    max_model_len: int = 100_000,
    kv_ms_per_token: float = 0.0,
) -> EngineProfile:
    """A profile whose step takes ``step_ms`` whatever its size (plus an optional KV term)."""
    spec = ModelSpec(
        name=model, params_b=1, weights_gb=2, kv_bytes_per_token=1000, num_layers=1,
        max_model_len=max_model_len,
    )
    return EngineProfile(
        model=spec, gpu=GPU, tp=1, lin_n=(1.0, 2.0), lin_t=(step_ms / 1000, step_ms / 1000),
        kv_s_per_token=kv_ms_per_token / 1000, fixed_s=0.0, kv_capacity_tokens=kv_tokens,
        max_num_seqs=max_seqs, max_num_batched_tokens=budget, source="test",
    )


SWAP = SwapCosts(sleep_s=0.5, wake_l1_s=1.0, wake_l2_s=3.0, cold_s=20.0)


class ListSink:
    """Collects events a backend posts."""

    def __init__(self) -> None:
        self.events: list[EngineEvent] = []

    def post(self, event: EngineEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def make_engine(
    profiles: dict[str, EngineProfile] | None = None,
    truth: dict[str, int] | None = None,
    engine_policy: str = "fcfs",
    active: str = "m",
    residency: dict[str, Residency] | None = None,
) -> tuple[SimEngine, EventHeap, ListSink]:
    """One simulated engine on a fresh virtual clock, bound to a list sink."""
    profiles = profiles or {"m": flat_profile()}
    clock = VirtualClock()
    heap = EventHeap(clock)
    spec = InstanceSpec(id="i0", node="n0", gpu="G", models=tuple(profiles), initial_model=active)
    node = NodeMemory(NodeSpec(name="n0", gpu="G", num_gpus=1, cpu_ram_gb=64))
    res = residency or {m: (Residency.ACTIVE if m == active else Residency.SLEEP_L1) for m in profiles}
    truth = truth if truth is not None else {}
    eng = SimEngine(
        spec, node, profiles, {m: SWAP for m in profiles}, res, heap,
        lambda r: truth[r.id], engine_policy,  # type: ignore[arg-type]
    )
    sink = ListSink()
    eng.bind(sink)
    return eng, heap, sink


def run_heap(heap: EventHeap, until: float = 1e9) -> None:
    """Advance the heap until empty (or ``until``)."""
    while heap._heap and heap._heap[0][0] <= until:
        t, fn = heap.pop()  # type: ignore[misc]
        heap.clock.advance_to(t)
        fn()


def req(rid: str, prompt: int = 100, model: str = "mistral-7b", cls: str = "interactive", t: float = 0.0,
        **kw: Any) -> Request:
    return Request(id=rid, model=model, slo_class=cls, arrival_s=t, prompt_tokens=prompt, **kw)


def timed(r: Request, out: int) -> TimedRequest:
    return TimedRequest(replace(r), out)


def scenario(**overrides: Any) -> Scenario:
    """A two-instance, one-model scenario (A100-80G, mistral-7b) to customise."""
    raw: dict[str, Any] = {
        "name": "test",
        "cluster": {"pools": [{"name": "p", "gpu": "A100-80G", "nodes": 1, "gpus_per_node": 2,
                               "models": ["mistral-7b"]}]},
        "workload": {"streams": [{"model": "mistral-7b", "slo_class": "interactive", "count": 20,
                                  "arrival": {"kind": "poisson", "rate": 5.0}}]},
    }
    raw.update(overrides)
    return parse_scenario(raw, "test.yaml")
