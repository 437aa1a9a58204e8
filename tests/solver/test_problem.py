from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from qlm.solver import SchedulingProblem
from qlm.solver.synthetic import random_problem


def test_json_round_trip() -> None:
    prob = random_problem(0, 8, 20, 3, horizon_s=120.0)
    again = SchedulingProblem.model_validate_json(prob.model_dump_json())
    assert again == prob


def _base() -> dict[str, Any]:
    return {
        "groups": [{"id": "g0", "model": "m7", "slo_class": "int", "size": 1,
                    "deadline_s": 5, "service_s": {"T": {"mean_s": 1}}}],
        "instances": [{"id": "i0", "instance_type": "T", "gpu_type": "A100",
                       "gpu_memory_gb": 80, "active_model": "m7",
                       "hostable_models": ["m7"], "swap_in_s": {"m7": 0}}],
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = d
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return apply


def _dup_group(d: dict[str, Any]) -> None:
    d["groups"].append(dict(d["groups"][0]))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (_set("groups.0.size", 0), "greater than or equal to 1"),
        (_set("groups.0.weight", 0), "greater than 0"),
        (_set("groups.0.deadline_s", float("nan")), "finite"),
        (_set("groups.0.service_s", {"X": {"mean_s": 1}}), "groups.0.service_s: missing entry"),
        (_set("groups.0.pinned_instance", "nope"), "groups.0.pinned_instance: unknown"),
        (_set("instances.0.swap_in_s", {}), "swap_in_s: missing cost for hostable model 'm7'"),
        (_set("instances.0.swap_in_s", {"m7": 3}), "must be 0 for the active model"),
        (_set("instances.0.active_model", "m70"), "not in hostable_models"),
        (_set("instances.0.sleeping_models", ["m70"]), "sleeping_models"),
        (_set("instances.0.free_in_s", -1), "greater than or equal to 0"),
        (_set("instances", []), "at least 1"),
        (_dup_group, "duplicate group id 'g0'"),
        (_set("weights", {"class_importance": {"int": 0}}), "class_importance.int"),
        (_set("weights", {"swap_penalty": -1}), "greater than or equal to 0"),
    ],
)
def test_validation_errors_name_field(mutate: Callable[[dict[str, Any]], None],
                                      fragment: str) -> None:
    data = _base()
    mutate(data)
    with pytest.raises(ValidationError, match=None) as info:
        SchedulingProblem.model_validate_json(json.dumps(data, allow_nan=True))
    assert fragment in str(info.value)


def test_valid_base() -> None:
    prob = SchedulingProblem.model_validate(_base())
    assert prob.value(prob.groups[0]) == 1.0
    assert prob.time_scale_s() == 5.0


def test_pinned_must_be_hostable(group: Any, instance: Any, problem: Any) -> None:
    with pytest.raises(ValidationError, match="cannot host model 'm70'"):
        problem([group("g", model="m70", pinned_instance="small")],
                [instance("small"), instance("big", hostable=("m7", "m70"))])
