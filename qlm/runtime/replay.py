"""Replay a scenario against emulated engines in compressed real time, next to the simulator.

The same scenario builds the same cluster twice: as :class:`SimEngine` s in virtual time
(:func:`qlm.sim.runner.run_policy`) and as emulator servers driven over HTTP by the runtime
loop (:func:`replay_on_emulators`). Both get the same generated workload (true output lengths
sent as ``max_tokens`` with ``ignore_eos``), the same policy and the same SLO accounting
(:func:`qlm.sim.metrics.meets_slo`), so the gap between the two attainments measures what the
real-time runtime (HTTP, asyncio, time compression) adds to the simulated system.

Time: arrival times and SLO targets are virtual seconds. The emulators and the control
plane's ``RealClock`` run ``speed`` virtual seconds per wall second; a request scheduled at
``a`` is submitted at wall time ``a / speed`` after the start and keeps ``arrival_s`` =
start + ``a`` on the control-plane clock, so submission lag counts against the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from qlm.domain.request import Request, RequestState
from qlm.domain.slo import SLOClass
from qlm.perf.catalog import default_catalog
from qlm.policies import registry
from qlm.policies.base import Policy
from qlm.runtime.config import NodeConfig
from qlm.runtime.launcher import EmulatedEngineSpec, EmulatedLauncher, start_runtime
from qlm.runtime.vllm.driver import OUTPUT_TOKENS
from qlm.sim.engine import NodeMemory
from qlm.sim.metrics import meets_slo
from qlm.sim.runner import RunSpec, prepare, run_policy
from qlm.workload.cluster import BuiltCluster
from qlm.workload.generator import TimedRequest
from qlm.workload.scenario import Scenario

__all__ = ["ReplayResult", "attainment", "compare", "emulated_engines", "replay_on_emulators"]


@dataclass(frozen=True)
class ReplayResult:
    """SLO attainment of one run (``slo_attainment`` in 0..1, ``by_class`` likewise)."""

    policy: str
    where: str  # "sim" | "runtime"
    slo_attainment: float
    by_class: dict[str, float]
    completed: int
    submitted: int
    swaps: int
    cold_starts: int
    evictions: int
    wall_s: float


def attainment(requests: list[Request], slo: Mapping[str, SLOClass]) -> tuple[float, dict[str, float]]:
    """Overall and per-class SLO attainment with the simulator's :func:`meets_slo`."""
    by: dict[str, list[bool]] = {}
    for r in requests:
        by.setdefault(r.slo_class, []).append(meets_slo(r, slo[r.slo_class]))
    total = sum(sum(v) for v in by.values())
    overall = total / len(requests) if requests else math.nan
    return overall, {c: sum(v) / len(v) for c, v in sorted(by.items())}


def emulated_engines(cluster: BuiltCluster, engine_policy: str
                     ) -> tuple[list[EmulatedEngineSpec], dict[str, NodeConfig]]:
    """Emulated engines and nodes matching ``cluster`` as :func:`qlm.sim.simulator.build_engines`
    sets it up: same GPU types, TP, models, initial model and sleep mode; an engine sleeps its
    idle models at level 1 when the node's CPU RAM holds them (in instance order), else 2."""
    memories = {n: NodeMemory(spec) for n, spec in cluster.nodes.items()}
    engines = []
    for inst in cluster.instances:
        level: Literal[1, 2] = 1
        for m in inst.models:
            if m != inst.initial_model and inst.sleep_mode and \
                    not memories[inst.node].try_take(cluster.catalog.model(m).weights_gb):
                level = 2
        engines.append(EmulatedEngineSpec(
            id=inst.id, gpu=inst.gpu, models=inst.models, tp=inst.tp, node=inst.node,
            initial_model=inst.initial_model, sleep_mode=inst.sleep_mode, sleep_level=level,
            scheduling_policy=engine_policy,  # type: ignore[arg-type]
            profiles={m: m for m in inst.models},
        ))
    nodes = {n: NodeConfig(cpu_ram_gb=s.cpu_ram_gb, disk_gbps=s.disk_gbps) for n, s in cluster.nodes.items()}
    return engines, nodes


def _policy(name: str, scenario: Scenario, params: Mapping[str, Any] | None) -> Policy:
    policy = registry.create(name, **dict(params or {}))
    configure = getattr(policy, "configure", None)
    if callable(configure):
        configure(scenario)
    return policy


async def replay_on_emulators(
    scenario: Scenario,
    workload: list[TimedRequest],
    cluster: BuiltCluster,
    policy_name: str,
    *,
    speed: float = 10.0,
    subprocess: bool = False,
    stream_interval_s: float = 0.05,
    policy_params: Mapping[str, Any] | None = None,
    policy: Policy | None = None,
    scrape_interval_s: float = 0.05,
) -> tuple[ReplayResult, list[Request]]:
    """Run ``workload`` through the runtime loop over emulators of ``cluster`` at ``speed``.

    Stops when every request ended or at the simulator's horizon (``scenario.horizon_s``, else
    the last arrival plus twice the largest TTFT target); unfinished requests miss."""
    wall0 = time.perf_counter()
    engines, nodes = emulated_engines(cluster, scenario.engine_scheduling)
    if subprocess and cluster.catalog is not default_catalog() and (scenario.gpus or scenario.models):
        raise ValueError("subprocess emulators only know the default catalogue")
    launcher = EmulatedLauncher(engines, speed=speed, subprocess=subprocess, nodes=nodes,
                                catalog=cluster.catalog, stream_interval_s=stream_interval_s,
                                health_interval_s=scrape_interval_s)
    pol = policy or _policy(policy_name, scenario, policy_params)
    requests = [replace(tr.request, meta={OUTPUT_TOKENS: tr.output_tokens}) for tr in workload]
    last = max((r.arrival_s for r in requests), default=0.0)
    horizon = scenario.horizon_s or last + 2 * max(c.ttft_s for c in scenario.slo.values())
    cfg = await launcher.start()
    try:
        rt = await start_runtime(cfg, pol, scenario.slo, catalog=cluster.catalog, processes=launcher)
        try:
            t0 = rt.now()
            for r in requests:
                delay = (t0 + r.arrival_s - rt.now()) / speed
                if delay > 0:
                    await asyncio.sleep(delay)
                r.arrival_s = t0 + r.arrival_s
                rt.submit(r, streaming=False)
            remaining = (t0 + horizon - rt.now()) / speed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.drain(), timeout=max(0.0, remaining))
            ctl = rt.control
            swaps, cold, evictions = ctl.swaps, ctl.cold_starts, ctl.evictions
        finally:
            await rt.stop()
    finally:
        await launcher.stop()
    overall, by_class = attainment(requests, scenario.slo)
    done = sum(1 for r in requests if r.state is RequestState.FINISHED)
    res = ReplayResult(policy_name, "runtime", overall, by_class, done, len(requests), swaps, cold,
                       evictions, time.perf_counter() - wall0)
    return res, requests


def simulate_policy(spec: RunSpec, prepared: tuple[BuiltCluster, list[TimedRequest]], policy_name: str,
                    policy_params: Mapping[str, Any] | None = None) -> ReplayResult:
    """The simulator's result for the same run, in the same shape."""
    row, run = run_policy(spec, policy_name, prepared=prepared, policy_params=dict(policy_params or {}))
    overall, by_class = attainment(run.requests, spec.scenario.slo)
    assert abs(overall - row["slo_attainment"]) < 1e-12
    return ReplayResult(policy_name, "sim", overall, by_class, row["completed"], row["submitted"],
                        row["model_swaps"], row["cold_starts"], run.control.evictions, run.wall_s)


async def compare(scenario: Scenario, policies: list[str], *, seed: int = 0, load: float = 1.0,
                  speed: float = 10.0, subprocess: bool = False, stream_interval_s: float = 0.05,
                  policy_params: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> list[tuple[ReplayResult, ReplayResult]]:
    """(simulator, runtime) results per policy for one scenario, seed and load."""
    spec = RunSpec(scenario, seed, load)
    prepared = prepare(spec)
    cluster, workload = prepared
    out = []
    for name in policies:
        params = (policy_params or {}).get(name)
        sim = simulate_policy(spec, prepared, name, params)
        rt, _ = await replay_on_emulators(scenario, workload, cluster, name, speed=speed,
                                          subprocess=subprocess, stream_interval_s=stream_interval_s,
                                          policy_params=params)
        out.append((sim, rt))
    return out
