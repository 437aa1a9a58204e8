"""The engine performance model, pinned against hand-computed cases."""

import pytest

from qlm.domain.cluster import NodeSpec
from qlm.perf import default_catalog, default_profile, fits, swap_costs


def test_kv_capacity_llama8b_a100() -> None:
    p = default_profile("llama-3-8b", "A100-80G", 1)
    # (0.9 * 80 GB - 16.1 GB weights - 2.5 GB reserved) = 53.4 GB; / 131072 B per token
    assert p.kv_capacity_tokens == int(53.4e9 // 131072) == 407_409


def test_step_time_decode_one_sequence() -> None:
    p = default_profile("llama-3-8b", "A100-80G", 1)
    # T_lin(1) = 9.7 ms (Vidur anchor); KV read: 1000 tok * 131072 B / (0.7 * 2039 GB/s)
    # = 0.0918 ms; CPU 2.0 ms  ->  11.79 ms
    kv = 1000 * 131072 / (0.7 * 2039e9)
    assert p.step_time(0, 1, 1000) == pytest.approx(0.0097 + kv + 0.002, rel=1e-9)
    assert p.step_time(0, 1, 1000) == pytest.approx(0.01179, abs=1e-5)


def test_step_time_interpolates_anchor_and_extrapolates() -> None:
    p = default_profile("llama-3-8b", "A100-80G", 1)
    # halfway between the 512 (34.7 ms) and 2048 (145.7 ms) knots: 1280 tokens -> 90.2 ms
    assert p.t_lin(1280) == pytest.approx(0.0902)
    # beyond 2048 the last slope continues: (145.7-34.7)/1536 ms per token
    assert p.t_lin(4096) == pytest.approx(0.1457 + (0.1457 - 0.0347) / 1536 * 2048)


def test_h200_uses_the_measured_anchor() -> None:
    p = default_profile("llama-3-8b", "H200", 1)
    assert "measured" in p.source and "gpu_step_times_h200.json" in p.source
    assert p.lin_n == (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    # halfway between the 1024 (24.6 ms) and 2048 (47.7 ms) knots: 1536 tokens -> (24.6 + 47.7) / 2 = 36.15 ms
    assert p.t_lin(1536) == pytest.approx(0.03615)
    # 32 decodes of 1024 context tokens each: T_lin(32) = 4.97 ms (a knot);
    # KV read: 32 * 1024 = 32768 tok * 131072 B = 4,294,967,296 B / (0.7 * 4800e9 B/s = 3.36e12) = 1.278264 ms;
    # CPU 2.0 ms  ->  4.97 + 1.278264 + 2.0 = 8.248264 ms
    assert p.kv_s_per_token == pytest.approx(131072 / 3.36e12)
    assert p.step_time(0, 32, 32 * 1024) == pytest.approx(0.008248264, rel=1e-6)
    # a pair without an anchor keeps the roofline: llama-70b on two H200s
    assert "roofline" in default_profile("llama-70b", "H200", 2).source


def test_tensor_parallel_adds_allreduce() -> None:
    p = default_profile("llama-70b", "A100-80G", 4)
    # CPU 2.0 ms + 2 all-reduces per layer * 80 layers * 0.04 ms = 8.4 ms per step
    assert p.fixed_s == pytest.approx(0.0084)
    # calibration.md: 70B TP4 A100 decode step ~33 ms at B=1 with 1k context
    assert p.step_time(0, 1, 1000) == pytest.approx(0.0334, abs=5e-4)


def test_roofline_profile_for_unmeasured_pair() -> None:
    p = default_profile("mistral-7b", "A10", 1)
    # memory-bound floor: 14.5 GB / (600 GB/s * 0.81) = 29.84 ms at one token
    assert p.t_lin(1) == pytest.approx(14.5 / (600 * 0.81), rel=1e-3)
    assert "est" in p.source


def test_decode_run_time_is_sum_of_steps() -> None:
    p = default_profile("mistral-7b", "A100-80G", 1)
    batch, c0, steps = 32, 20_000, 17
    direct = sum(p.step_time(0, batch, c0 + j * batch) for j in range(steps))
    assert p.decode_run_time(batch, c0, steps) == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize("elapsed_steps", [0, 1, 5, 40])
def test_decode_steps_within_inverts_run_time(elapsed_steps: int) -> None:
    p = default_profile("mistral-7b", "A100-80G", 1)
    t = p.decode_run_time(64, 10_000, elapsed_steps)
    assert p.decode_steps_within(64, 10_000, t + 1e-9) == elapsed_steps
    if elapsed_steps:
        assert p.decode_steps_within(64, 10_000, t - 1e-6) == elapsed_steps - 1


def test_model_fit() -> None:
    cat = default_catalog()
    a10, a100 = cat.gpu("A10"), cat.gpu("A100-80G")
    assert fits(cat.model("mistral-7b"), a10, 1)
    # 26 GB of weights > 0.9 * 24 GB
    assert not fits(cat.model("vicuna-13b"), a10, 1)
    assert fits(cat.model("vicuna-13b"), a10, 2)
    # a 70B never lands on A10s: 0.9*96 - 141 < 0
    assert not fits(cat.model("llama-70b"), a10, 4)
    assert fits(cat.model("llama-70b"), a100, 4)


def test_swap_costs() -> None:
    cat = default_catalog()
    node = NodeSpec(name="n", gpu="A100-80G", num_gpus=4, cpu_ram_gb=512, disk_gbps=2.0)
    c = swap_costs(cat.model("mistral-7b"), cat.gpu("A100-80G"), 1, node, cat)
    # wake L1: 0.1 s fixed + 14.5 GB / 21 GB/s + 0.5 s warm-up = 1.2905 s
    assert c.wake_l1_s == pytest.approx(0.1 + 14.5 / 21 + 0.5)
    # cold: 20 s fixed + 14.5 GB / 2 GB/s + 0.5 s warm-up = 27.75 s
    assert c.cold_s == pytest.approx(27.75)
    assert c.wake_l1_s < c.wake_l2_s < c.cold_s
    c70 = swap_costs(cat.model("llama-70b"), cat.gpu("A100-80G"), 4, node, cat)
    # shards move in parallel: 141/4 GB per GPU at 21 GB/s
    assert c70.wake_l1_s == pytest.approx(0.1 + 141 / 4 / 21 + 0.5)


def test_catalog_entries_cite_sources() -> None:
    cat = default_catalog()
    assert all(g.source for g in cat.gpus.values())
    assert all(m.source for m in cat.models.values())
    assert all(a.source for a in cat.anchors)
