"""Engine performance model for one (model, GPU type, tensor-parallel degree).

All times are seconds. The model is pure arithmetic over catalogue data; the simulator,
the emulator and the estimator all use it, so they agree by construction.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

from qlm.domain.cluster import GPUType, ModelSpec
from qlm.perf.catalog import Catalog, default_catalog

GB = 1e9


@dataclass(frozen=True)
class EngineProfile:
    """Timing and capacity of one vLLM engine serving ``model`` on ``tp`` GPUs of ``gpu``.

    ``step_time(P, B, C)`` is one continuous-batching iteration with ``P`` prefill tokens,
    ``B`` decode sequences and ``C`` context tokens read from the KV cache.
    """

    model: ModelSpec
    gpu: GPUType
    tp: int
    lin_n: tuple[float, ...]  # T_lin interpolation knots (tokens)
    lin_t: tuple[float, ...]  # T_lin values (s)
    kv_s_per_token: float  # seconds per context token read
    fixed_s: float  # CPU + all-reduce time per step
    kv_capacity_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int
    source: str

    @property
    def key(self) -> str:
        """Instance-type key shared by identical engines, e.g. ``mistral-7b@A100-80G/tp1``."""
        return f"{self.model.name}@{self.gpu.name}/tp{self.tp}"

    def t_lin(self, n: float) -> float:
        """Non-attention time of a step over ``n`` tokens (linear beyond the last knot)."""
        xs, ys = self.lin_n, self.lin_t
        if n <= xs[0]:
            return ys[0]
        if n >= xs[-1]:
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            return ys[-1] + slope * (n - xs[-1])
        j = bisect_right(xs, n) - 1  # xs[j] <= n < xs[j + 1]; np.interp's arithmetic, without its call overhead
        return (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (n - xs[j]) + ys[j]

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        """Seconds for one iteration (0 when there is nothing to run)."""
        n = prefill_tokens + decode_seqs
        if n <= 0:
            return 0.0
        return self.t_lin(n) + context_tokens * self.kv_s_per_token + self.fixed_s

    def decode_run_time(self, batch: int, context0: int, steps: int) -> float:
        """Seconds for ``steps`` decode-only iterations of a fixed batch whose context grows
        by ``batch`` tokens per step, starting at ``context0``: closed-form arithmetic series.
        """
        if steps <= 0 or batch <= 0:
            return 0.0
        per_step = self.t_lin(batch) + self.fixed_s
        ctx_sum = steps * context0 + batch * steps * (steps - 1) / 2
        return steps * per_step + ctx_sum * self.kv_s_per_token

    def decode_steps_within(self, batch: int, context0: int, elapsed: float) -> int:
        """Largest ``j`` with ``decode_run_time(batch, context0, j) <= elapsed`` (inverse)."""
        if elapsed <= 0 or batch <= 0:
            return 0
        a = self.t_lin(batch) + self.fixed_s
        k = self.kv_s_per_token
        # t(j) = j*a + k*(j*C0 + B*j*(j-1)/2) = (k*B/2) j^2 + (a + k*C0 - k*B/2) j
        qa = k * batch / 2
        qb = a + k * context0 - qa
        if qa <= 0:
            j = int(elapsed // qb) if qb > 0 else 0
        else:
            j = int((-qb + math.sqrt(qb * qb + 4 * qa * elapsed)) / (2 * qa))
        while j > 0 and self.decode_run_time(batch, context0, j) > elapsed:
            j -= 1
        while self.decode_run_time(batch, context0, j + 1) <= elapsed:
            j += 1
        return j

    def prefill_throughput(self, chunk: int | None = None) -> float:
        """Prefill tokens per second at a full chunk, without decodes."""
        n = chunk or self.max_num_batched_tokens
        return n / self.step_time(n, 0, 0)

    def decode_throughput(self, batch: int, context_per_seq: float) -> float:
        """Output tokens per second of a decode-only batch."""
        if batch <= 0:
            return 0.0
        return batch / self.step_time(0, batch, int(batch * context_per_seq))


def fits(model: ModelSpec, gpu: GPUType, tp: int, catalog: Catalog | None = None) -> bool:
    """Whether the weights leave room for a KV cache of at least one full-length sequence."""
    cat = catalog or default_catalog()
    return kv_capacity_tokens(model, gpu, tp, cat) >= min(model.max_model_len, 2048)


def kv_capacity_tokens(model: ModelSpec, gpu: GPUType, tp: int, catalog: Catalog) -> int:
    """KV tokens = (util * memory * tp - weights - reserved * tp) / kv bytes per token."""
    e = catalog.engine
    free_gb = e.gpu_memory_utilization * gpu.memory_gb * tp - model.weights_gb
    free_gb -= e.reserved_gb_per_gpu * tp
    return max(0, int(free_gb * GB // model.kv_bytes_per_token))


def build_profile(model_name: str, gpu_name: str, tp: int, catalog: Catalog) -> EngineProfile:
    """Derive the profile from the catalogue (anchors where measured, roofline elsewhere)."""
    model = catalog.model(model_name)
    gpu = catalog.gpu(gpu_name)
    e = catalog.engine
    anchor = catalog.anchor(model_name, gpu_name, tp)
    if anchor is not None:
        pts = sorted(anchor.points.items())
        lin_n = tuple(float(n) for n, _ in pts)
        lin_t = tuple(t / 1000.0 for _, t in pts)
        source = anchor.source
    else:
        t_mem = model.weights_gb * GB / (tp * gpu.mem_bandwidth_gbps * GB * e.mem_efficiency)
        flops_per_token = 2 * model.params_b * 1e9
        eff = gpu.compute_efficiency or e.compute_efficiency
        rate = tp * gpu.bf16_tflops * 1e12 * eff
        lin_n = (1.0, 32.0, 128.0, 512.0, 2048.0, 8192.0)
        lin_t = tuple(math.hypot(t_mem, flops_per_token * n / rate) for n in lin_n)
        source = "roofline from catalogue specs and fitted efficiencies [est]"
    kv_s = model.kv_bytes_per_token / (tp * gpu.mem_bandwidth_gbps * GB * e.kv_read_efficiency)
    fixed = e.t_cpu_ms / 1000.0
    if tp > 1:
        fixed += e.allreduce_per_layer * model.num_layers * e.t_allreduce_ms / 1000.0
    large = gpu.memory_gb >= 70
    batched = e.max_num_batched_tokens_large_gpu if large else e.max_num_batched_tokens_small_gpu
    return EngineProfile(
        model=model,
        gpu=gpu,
        tp=tp,
        lin_n=lin_n,
        lin_t=lin_t,
        kv_s_per_token=kv_s,
        fixed_s=fixed,
        kv_capacity_tokens=kv_capacity_tokens(model, gpu, tp, catalog),
        max_num_seqs=e.max_num_seqs,
        max_num_batched_tokens=batched,
        source=source,
    )


@lru_cache(maxsize=256)
def default_profile(model_name: str, gpu_name: str, tp: int = 1) -> EngineProfile:
    """Profile from the packaged catalogue (cached)."""
    return build_profile(model_name, gpu_name, tp, default_catalog())
