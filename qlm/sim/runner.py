"""One what-if run: scenario + policy + seed + load -> result row."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qlm.perf.catalog import default_catalog
from qlm.policies import registry
from qlm.runtime.control import ControlListener
from qlm.sim.metrics import summarize
from qlm.sim.simulator import SimRun, simulate
from qlm.workload.cluster import BuiltCluster, build_cluster
from qlm.workload.generator import TimedRequest, generate
from qlm.workload.scenario import Scenario
from qlm.workload.traces import trace_requests


@dataclass(frozen=True)
class RunSpec:
    """What to simulate. ``load`` and ``volume`` scale a generated workload
    (:mod:`qlm.workload.generator`); with a trace, ``load`` compresses its time axis and
    ``volume`` must stay 1."""

    scenario: Scenario
    seed: int = 0
    load: float = 1.0
    trace: Path | None = None
    trace_limit: int | None = None
    volume: float = 1.0

    def __post_init__(self) -> None:
        if self.volume != 1.0 and self.trace is not None:
            raise ValueError(f"volume {self.volume:g} applies to generated workloads, not to a trace")


def prepare(spec: RunSpec) -> tuple[BuiltCluster, list[TimedRequest]]:
    """The cluster and the workload of a run (identical for every policy of that run)."""
    catalog = default_catalog()
    sc = spec.scenario
    if sc.gpus or sc.models:
        catalog = catalog.extended(sc.gpus, sc.models)
    cluster = build_cluster(sc, catalog)
    if spec.trace is not None:
        workload = trace_requests(spec.trace, sc, seed=spec.seed, load=spec.load, limit=spec.trace_limit)
    else:
        workload = generate(sc, seed=spec.seed, load=spec.load, volume=spec.volume)
    return cluster, workload


def run_policy(
    spec: RunSpec,
    policy_name: str,
    *,
    prepared: tuple[BuiltCluster, list[TimedRequest]] | None = None,
    policy_params: dict[str, Any] | None = None,
    listeners: Iterable[ControlListener] = (),
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], SimRun]:
    """Simulate one policy; returns its result row and the run."""
    cluster, workload = prepared or prepare(spec)
    policy = registry.create(policy_name, **(policy_params or {}))
    configure = getattr(policy, "configure", None)
    if callable(configure):  # priors from configuration (e.g. the qlm policy's estimator)
        configure(spec.scenario)
    # requests are mutable records: every policy gets fresh copies
    fresh = [TimedRequest(_copy(tr.request), tr.output_tokens) for tr in workload]
    run = simulate(
        cluster, spec.scenario.slo, fresh, policy,
        engine_policy=spec.scenario.engine_scheduling, horizon_s=spec.scenario.horizon_s,
        listeners=listeners, on_progress=on_progress,
    )
    row = summarize(run, policy_name, spec.scenario.slo)
    extra = getattr(policy, "report", None)
    if callable(extra):
        row.update(extra(run))
    return row, run


def _copy(r: Any) -> Any:
    from dataclasses import replace

    return replace(r, meta={})
