"""Output-length model: prior, online window, class priors, caps."""

import numpy as np
import pytest

from qlm.estimator.lengths import LengthPrior, OutputLengthModel, _Window


def test_prior_moments_and_quantiles() -> None:
    m = OutputLengthModel(LengthPrior(mean=200, std=100))
    assert m.mean_var("m", "c") == (200, 100**2)
    # log-normal median = exp(mu) = mean / sqrt(1 + cv^2) = 200 / sqrt(1.25) = 178.9
    assert m.tail("m", "c", 0.5) == pytest.approx(200 / np.sqrt(1.25), rel=1e-6)


def test_window_replaces_prior_after_min_obs() -> None:
    m = OutputLengthModel(LengthPrior(mean=500, std=0), min_obs=3)
    for x in (10, 20):
        m.observe("m", "c", x)
    assert m.mean_var("m", "c")[0] == pytest.approx(500)  # 2 < min_obs: still the prior
    m.observe("m", "c", 30)
    # window {10, 20, 30}: mean 20, population variance (100 + 0 + 100) / 3
    assert m.mean_var("m", "c") == pytest.approx((20.0, 200 / 3))
    # empirical quantile: u = 0.5 -> position 0.5 * (3 - 1) = 1 -> 20
    assert m.quantile("m", "c", np.array([0.5]))[0] == pytest.approx(20)
    assert m.count("m") == 3 and m.count("m", "c") == 3


def test_class_prior_beats_model_window() -> None:
    m = OutputLengthModel(LengthPrior(mean=300, std=0), min_obs=2)
    m.set_prior(("m", "batch"), LengthPrior(mean=1500, std=0))
    m.observe("m", "chat", 100)
    m.observe("m", "chat", 100)
    assert m.mean_var("m", "chat")[0] == pytest.approx(100)  # own window
    assert m.mean_var("m", "batch")[0] == pytest.approx(1500)  # configured class prior
    assert m.mean_var("m", "other")[0] == pytest.approx(100)  # model-level window


def test_capped_mean_uses_max_tokens() -> None:
    m = OutputLengthModel(LengthPrior(mean=300, std=0))
    assert m.capped_mean("m", "c", None) == pytest.approx(300)
    assert m.capped_mean("m", "c", 120) == pytest.approx(120)  # min(300, 120)


def test_cdf_conditions_on_generated_tokens() -> None:
    m = OutputLengthModel(min_obs=1)
    for x in (100, 200, 300, 400):
        m.observe("m", "c", x)
    # two of four observations are <= 250
    assert m.cdf("m", "c", np.array([250.0]))[0] == pytest.approx(0.5)


def test_invalid_prior() -> None:
    with pytest.raises(ValueError, match="mean > 0"):
        LengthPrior(mean=0, std=1)


def test_completions_enter_in_start_order() -> None:
    # a burst starts a, b, c together; b and c (short) end first. Counting them before a
    # (long) ends would learn only the short ones: they wait for a.
    m = OutputLengthModel(LengthPrior(mean=500, std=0), min_obs=3)
    for rid in ("a", "b", "c"):
        m.start("m", "c", rid)
    m.observe("m", "c", 10, "b")
    m.observe("m", "c", 20, "c")
    assert m.count("m", "c") == 0 and m.pending("m", "c") == 2
    assert m.mean_var("m", "c")[0] == pytest.approx(500)  # still the prior
    m.observe("m", "c", 900, "a")
    # window {900, 10, 20}: mean 310
    assert m.count("m", "c") == 3 and m.pending("m", "c") == 0
    assert m.mean_var("m", "c")[0] == pytest.approx(310)


def test_cancelled_start_releases_the_ones_behind() -> None:
    m = OutputLengthModel(min_obs=1)
    m.start("m", "c", "a")
    m.start("m", "c", "b")
    m.observe("m", "c", 40, "b")
    assert m.count("m", "c") == 0
    m.cancel("a")  # evicted: it will not complete in this run
    assert m.count("m", "c") == 1 and m.mean_var("m", "c")[0] == pytest.approx(40)
    m.observe("m", "c", 70)  # not started here (no first token seen): counted at once
    assert m.count("m", "c") == 2


@pytest.mark.parametrize("size", [1, 2, 5, 50])
def test_window_keeps_its_sorted_copy_equal_to_a_fresh_sort(size: int) -> None:
    # small integers: many ties; the copy is built at the 8th observation, then kept up to
    # date by insertion (and removal of the oldest once full) at every observation
    rng = np.random.default_rng(size)
    w = _Window(size)
    held = []
    for i in range(200):
        x = float(rng.integers(1, 20))
        w.add(x)
        held = (held + [x])[-size:]
        if i == 7:
            first = w.sorted()
            snapshot = first.copy()
        if i >= 7:
            assert np.array_equal(w.sorted(), np.sort(np.array(held)))
    assert np.array_equal(first, snapshot)  # an array handed out is never changed in place
