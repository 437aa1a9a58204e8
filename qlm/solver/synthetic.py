"""Seeded synthetic snapshots for tests and ``experiments/bench_solver.py``.

A fleet in the spirit of the QLM evaluation (3/8 A10-24G, the rest A100-80G, some A100s
grouped in tp4 engines for 70B models), three SLO classes (interactive 20 s, batch-1 60 s,
batch-2 1 h), Zipf-like model popularity, sleeping models (wake from CPU RAM) and cold loads.
``load`` scales service times so that the near-deadline work is ``load`` x the fleet's
capacity within those deadlines (1.0: tight, > 1: overload).
"""

from __future__ import annotations

import numpy as np

from qlm.solver.problem import (
    GroupSpec,
    InstanceSpec,
    OperatorWeights,
    SchedulingProblem,
    ServiceTime,
)

__all__ = ["random_problem"]

_SIZES_B = [7, 13, 70, 8, 14, 34, 7, 13, 70, 8, 3, 32]
_CLASSES = [("interactive", 20.0, 0.4), ("batch-1", 60.0, 0.35), ("batch-2", 3600.0, 0.25)]
_SPEED = {"A10-24G/tp1": 0.45, "A100-80G/tp1": 1.0, "A100-80G/tp4": 2.8}
_MEMORY = {"A10-24G/tp1": 24.0, "A100-80G/tp1": 80.0, "A100-80G/tp4": 320.0}


def _fits(size_b: int, itype: str) -> bool:
    return size_b * 2 * 1.15 <= _MEMORY[itype]


def random_problem(
    seed: int,
    n_gpus: int,
    n_groups: int,
    n_models: int,
    *,
    load: float = 1.1,
    pinned_fraction: float = 0.03,
    horizon_s: float | None = None,
) -> SchedulingProblem:
    """A reproducible snapshot (same arguments -> same problem)."""
    rng = np.random.default_rng(seed)
    n_a10 = round(n_gpus * 3 / 8)
    n_a100 = n_gpus - n_a10
    n_tp4 = (n_a100 // 4) // 3 if n_a100 >= 8 else (1 if n_a100 >= 4 else 0)
    sizes = [s for s in _SIZES_B if s < 70 or n_tp4 > 0][:n_models]
    models = [f"m{k}-{s}b" for k, s in enumerate(sizes)]
    types = (["A10-24G/tp1"] * n_a10 + ["A100-80G/tp1"] * (n_a100 - 4 * n_tp4)
             + ["A100-80G/tp4"] * n_tp4)
    instances: list[InstanceSpec] = []
    for n, itype in enumerate(types):
        hostable = [m for m, s in zip(models, sizes, strict=True) if _fits(s, itype)]
        if not hostable:
            hostable = [models[int(np.argmin(sizes))]]
        active = None if rng.random() < 0.05 else hostable[int(rng.integers(len(hostable)))]
        others = [m for m in hostable if m != active]
        rng.shuffle(others)
        sleeping = sorted(others[: int(rng.integers(0, 3))])
        swap = {}
        for m in hostable:
            s = sizes[models.index(m)]
            swap[m] = 0.0 if m == active else round(
                (0.1 + 0.08 * s) if m in sleeping else (3.0 + 0.8 * s), 3)
        instances.append(InstanceSpec(
            id=f"i{n:03d}", instance_type=itype, gpu_type=itype.split("/")[0],
            gpu_memory_gb=_MEMORY[itype], active_model=active, sleeping_models=sleeping,
            hostable_models=hostable, free_in_s=round(float(rng.uniform(0, 4)), 3),
            swap_in_s=swap))
    popularity = 1.0 / np.arange(1, len(models) + 1)
    popularity /= popularity.sum()
    raw: list[tuple[str, str, int, float, float, bool]] = []
    for _ in range(n_groups):
        m = models[int(rng.choice(len(models), p=popularity))]
        cls = int(rng.choice(3, p=[c[2] for c in _CLASSES]))
        name, slo, _ = _CLASSES[cls]
        size = int(rng.integers(1, 33))
        if rng.random() < 0.03:
            deadline = -float(rng.uniform(0, 5))
        else:
            deadline = slo - float(rng.uniform(0, 0.6 * slo if slo < 3600 else 1800))
        raw.append((m, name, size, round(deadline, 3), float(rng.uniform(0.8, 1.2)),
                    name == "interactive" and bool(rng.random() < 0.5)))
    # service per request on an A100 tp1 for a 7B model: calibrated to the requested load
    near = [r for r in raw if r[1] != "batch-2"]
    demand = sum(r[2] * r[4] * sizes[models.index(r[0])] / 7 for r in near)
    capacity = sum(_SPEED[t] for t in types) * 40.0
    unit = load * capacity / max(demand, 1e-9)
    groups: list[GroupSpec] = []
    for n, (m, name, size, deadline, noise, can_reject) in enumerate(raw):
        s_b = sizes[models.index(m)]
        service = {}
        for itype in sorted(set(types)):
            if _fits(s_b, itype):
                mean = 0.05 + unit * size * noise * s_b / 7 / _SPEED[itype]
                service[itype] = ServiceTime(mean_s=round(mean, 4), std_s=round(0.15 * mean, 4))
        groups.append(GroupSpec(id=f"g{n:04d}", model=m, slo_class=name, size=size,
                                deadline_s=deadline, weight=1.0, service_s=service,
                                can_reject=can_reject))
    hosts = {m: [i.id for i in instances if m in i.hostable_models] for m in models}
    for n, g in enumerate(groups):
        if rng.random() < pinned_fraction and hosts[g.model]:
            pick = hosts[g.model][int(rng.integers(len(hosts[g.model])))]
            groups[n] = g.model_copy(update={"pinned_instance": pick})
    weights = OperatorWeights(class_importance={"interactive": 2.0, "batch-1": 1.0,
                                                "batch-2": 0.5})
    return SchedulingProblem(now_s=0.0, groups=groups, instances=instances, weights=weights,
                             horizon_s=horizon_s)
