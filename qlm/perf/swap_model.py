"""Model-swap costs: sleep, wake from CPU RAM (level 1), reload (level 2), cold start."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qlm.domain.cluster import GPUType, ModelSpec, NodeSpec
from qlm.perf.catalog import Catalog


class Residency(enum.IntEnum):
    """Where a model's engine is on an instance; lower is cheaper to make active."""

    ACTIVE = 0  # awake, serving
    SLEEP_L1 = 1  # weights in CPU RAM
    SLEEP_L2 = 2  # process up, weights discarded
    COLD = 3  # no process


@dataclass(frozen=True)
class SwapCosts:
    """Seconds for each swap step of one model on one instance."""

    sleep_s: float  # offload the active model's weights to CPU RAM (level 1)
    wake_l1_s: float  # from CPU RAM, including the post-wake warm-up request
    wake_l2_s: float  # reload inside the live process, including warm-up
    cold_s: float  # start a new engine process and load from disk

    def activate_s(self, residency: Residency) -> float:
        """Seconds to make the model active from ``residency`` (the sleep of the previous
        model is charged separately)."""
        if residency is Residency.ACTIVE:
            return 0.0
        if residency is Residency.SLEEP_L1:
            return self.wake_l1_s
        if residency is Residency.SLEEP_L2:
            return self.wake_l2_s
        return self.cold_s


def swap_costs(model: ModelSpec, gpu: GPUType, tp: int, node: NodeSpec, cat: Catalog) -> SwapCosts:
    """Costs from the catalogue's swap constants; weights move per GPU shard in parallel."""
    s = cat.swap
    shard_gb = model.weights_gb / tp
    return SwapCosts(
        sleep_s=s.sleep_fixed_s + shard_gb / gpu.pcie_gbps,
        wake_l1_s=s.wake_fixed_s + shard_gb / gpu.pcie_gbps + s.warmup_s,
        wake_l2_s=s.level2_fixed_s + shard_gb / s.level2_reload_gbps + s.warmup_s,
        cold_s=s.cold_fixed_s
        + (tp - 1) * s.cold_fixed_per_extra_gpu_s
        + model.weights_gb / node.disk_gbps
        + s.warmup_s,
    )
