"""Build a scenario's cluster: nodes, instances, and the initial model placement."""

from __future__ import annotations

from dataclasses import dataclass

from qlm.domain.cluster import InstanceSpec, NodeSpec
from qlm.errors import ConfigError
from qlm.perf.catalog import Catalog
from qlm.perf.engine_model import EngineProfile, build_profile, fits
from qlm.workload.generator import stream_counts
from qlm.workload.scenario import PoolSpec, Scenario


@dataclass(frozen=True)
class BuiltCluster:
    """Instances (with their initial active model), nodes and the catalogue they refer to."""

    instances: tuple[InstanceSpec, ...]
    nodes: dict[str, NodeSpec]
    catalog: Catalog

    @property
    def total_gpus(self) -> int:
        return sum(i.tp for i in self.instances)

    def profile(self, inst: InstanceSpec, model: str) -> EngineProfile:
        return build_profile(model, inst.gpu, inst.tp, self.catalog)


def expected_demand(scenario: Scenario) -> dict[str, float]:
    """Expected work per model in output-token-equivalents (prompt tokens count 1/10)."""
    demand: dict[str, float] = {}
    for s, n in zip(scenario.workload.streams, stream_counts(scenario), strict=True):
        ls = s.length_spec
        demand[s.model] = demand.get(s.model, 0.0) + n * (ls.output_mean + ls.input_mean / 10)
    return demand


def build_cluster(scenario: Scenario, catalog: Catalog) -> BuiltCluster:
    """Instances of every pool; models that do not fit a pool's GPUs are dropped from it
    (an error if that leaves the pool with none)."""
    src = f"{scenario.name}.yaml"
    nodes: dict[str, NodeSpec] = {}
    raw: list[tuple[PoolSpec, str, list[str]]] = []
    for pi, pool in enumerate(scenario.cluster.pools):
        if pool.gpu not in catalog.gpus:
            raise ConfigError(
                src, f"cluster.pools.{pi}.gpu", f"unknown GPU type {pool.gpu!r}; known: {sorted(catalog.gpus)}"
            )
        for m in pool.models:
            if m not in catalog.models:
                raise ConfigError(
                    src, f"cluster.pools.{pi}.models", f"unknown model {m!r}; known: {sorted(catalog.models)}"
                )
        gpu = catalog.gpus[pool.gpu]
        hostable = [m for m in pool.models if fits(catalog.models[m], gpu, pool.tp, catalog)]
        if not hostable:
            raise ConfigError(src, f"cluster.pools.{pi}.models", f"none of {pool.models} fits {pool.tp} x {pool.gpu}")
        for n in range(pool.nodes):
            node = NodeSpec(
                name=f"{pool.name}-n{n}", gpu=pool.gpu, num_gpus=pool.gpus_per_node,
                cpu_ram_gb=pool.cpu_ram_gb, disk_gbps=pool.disk_gbps,
            )
            nodes[node.name] = node
            for _ in range(pool.gpus_per_node // pool.tp):
                raw.append((pool, node.name, hostable))
    placement = _placement(scenario, catalog, raw)
    instances = []
    counters: dict[str, int] = {}
    for (pool, node_name, hostable), initial in zip(raw, placement, strict=True):
        k = counters.get(pool.name, 0)
        counters[pool.name] = k + 1
        instances.append(
            InstanceSpec(
                id=f"{pool.name}-{k}", node=node_name, gpu=pool.gpu, tp=pool.tp, models=tuple(hostable),
                initial_model=initial, sleep_mode=pool.sleep_mode,
            )
        )
    return BuiltCluster(tuple(instances), nodes, catalog)


def _placement(
    scenario: Scenario, catalog: Catalog, raw: list[tuple[PoolSpec, str, list[str]]]
) -> list[str]:
    """Initial active model per instance."""
    placement = scenario.cluster.placement
    if isinstance(placement, dict):
        seen: dict[str, int] = {}
        out = []
        for pool, _, hostable in raw:
            cycle = [m for m in placement.get(pool.name, hostable) if m in hostable] or hostable
            k = seen.get(pool.name, 0)
            seen[pool.name] = k + 1
            out.append(cycle[k % len(cycle)])
        return out
    # proportional: give each instance to the model whose demand is least covered, weighting
    # an instance by its decode throughput for that model; models nobody asks for get none.
    demand = expected_demand(scenario)
    covered = {m: 0.0 for m in demand}
    out = []
    order = sorted(range(len(raw)), key=lambda i: (len([m for m in raw[i][2] if m in demand]), i))
    chosen: dict[int, str] = {}
    for i in order:
        pool, _, hostable = raw[i]
        wanted = [m for m in hostable if m in demand]
        if not wanted:
            chosen[i] = hostable[0]
            continue
        best = min(wanted, key=lambda m: (covered[m] / demand[m], m))
        prof = build_profile(best, pool.gpu, pool.tp, catalog)
        batch = max(1, min(prof.max_num_seqs, prof.kv_capacity_tokens // 600))
        covered[best] += prof.decode_throughput(batch, 600)
        chosen[i] = best
    out = [chosen[i] for i in range(len(raw))]
    return out
