"""Policy registry: the qlm factory's estimator switch."""

from typing import Any

import pytest

from qlm.estimator import EstimatorConfig, MeanOnlyEstimator, RWTEstimator
from qlm.policies import registry


@pytest.mark.parametrize("name", ["qlm", "qlm-greedy"])
def test_qlm_estimator_by_name(name: str) -> None:
    default: Any = registry.create(name)
    assert type(default.estimator) is RWTEstimator
    mean_only: Any = registry.create(name, estimator="mean-only", estimator_config=EstimatorConfig(samples=4))
    assert isinstance(mean_only.estimator, MeanOnlyEstimator)
    assert mean_only.estimator.config.samples == 4


def test_unknown_estimator_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown estimator 'paper'; known: rwt, mean-only"):
        registry.create("qlm", estimator="paper")
