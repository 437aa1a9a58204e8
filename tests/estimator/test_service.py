"""Service-rate model: profile arithmetic and the online correction."""

import pytest

from qlm.estimator.service import ServiceRateModel
from tests.factories import flat_profile


def test_flat_profile_step_times() -> None:
    prof = flat_profile(step_ms=10.0)
    st = ServiceRateModel().step_times("i0", prof, batch=8, prompt_tokens=100, output_tokens=50)
    # flat T_lin: decode step 10 ms; marginal prefill cost T_lin(8+100) - T_lin(8) = 0
    assert st.decode_s == pytest.approx(0.010)
    assert st.tau_s == pytest.approx(0.010)
    assert st.first_token_s(100) == pytest.approx(0.010)


def test_kv_term_and_amortised_prefill() -> None:
    prof = flat_profile(step_ms=10.0, kv_ms_per_token=0.001)
    st = ServiceRateModel().step_times("i0", prof, batch=4, prompt_tokens=100, output_tokens=50)
    # context = 4 * (100 + 50/2) = 500 tokens * 1 us = 0.5 ms -> 10.5 ms per decode step
    assert st.decode_s == pytest.approx(0.0105)


def test_online_correction_converges_to_slower_server() -> None:
    svc = ServiceRateModel(alpha=1.0)
    svc.observe_tpot("i0", "m", observed_s=0.02, predicted_s=0.01)
    assert svc.factor("i0", "m") == pytest.approx(2.0)  # alpha 1: last ratio
    assert svc.factor("i1", "m") == 1.0  # per instance
    prof = flat_profile(step_ms=10.0)
    st = svc.step_times("i0", prof, 1, 10, 10)
    assert st.tau_s == pytest.approx(0.020)
    svc2 = ServiceRateModel(alpha=0.5)
    for _ in range(30):
        svc2.observe_tpot("i0", "m", 0.015, 0.01)
    assert svc2.factor("i0", "m") == pytest.approx(1.5, rel=1e-6)


def test_capacity_kv_or_max_seqs() -> None:
    prof = flat_profile(kv_tokens=10_000, max_seqs=256)
    assert ServiceRateModel.capacity(prof, 500) == 20  # 10000 // 500
    assert ServiceRateModel.capacity(prof, 10) == 256  # max_num_seqs binds
