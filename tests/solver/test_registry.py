from __future__ import annotations

import pytest

from qlm.solver import BackendUnavailableError, available_backends, known_backends
from qlm.solver.registry import BackendInfo, get_backend, register_backend


def test_known_backends() -> None:
    assert {"cpsat", "pulp-cbc", "pulp-highs", "pulp-gurobi", "pulp-cplex",
            "qlm-paper"} <= set(known_backends())
    assert "qlm-paper" not in available_backends()
    assert "qlm-paper" in available_backends(include_baselines=True)


def test_duplicate_registration_rejected() -> None:
    info = get_backend("cpsat")
    with pytest.raises(ValueError, match="already registered"):
        register_backend(BackendInfo("cpsat", "on_time", "dup", info.load, info.available))


@pytest.mark.parametrize("name", ["pulp-gurobi", "pulp-cplex"])
def test_commercial_backends_clear_error(name: str) -> None:
    info = get_backend(name)
    if info.available():
        pytest.skip(f"{name} is installed here")
    with pytest.raises(BackendUnavailableError, match=f"'{name}'.*not available"):
        info.load()
