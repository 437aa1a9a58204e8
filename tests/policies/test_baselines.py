"""Each baseline's defining behaviour on a tiny hand-built case."""

from typing import Any

from qlm.domain.request import RequestState
from qlm.perf import default_catalog
from qlm.policies import registry
from qlm.runtime.actions import Abort, Dispatch, Swap
from qlm.runtime.control import ControlListener
from qlm.sim.simulator import simulate
from qlm.workload.cluster import build_cluster
from tests.factories import req, scenario, timed


class Actions(ControlListener):
    def __init__(self) -> None:
        self.actions: list[Any] = []

    def on_action(self, action: Any, t: float) -> None:
        self.actions.append((t, action))


def _run(sc: Any, policy: str, workload: list, **params: Any) -> tuple[Any, Actions]:
    cluster = build_cluster(sc, default_catalog())
    rec = Actions()
    run = simulate(cluster, sc.slo, workload, registry.create(policy, **params),
                   engine_policy=sc.engine_scheduling, listeners=[rec])
    return run, rec


def two_model_scenario(**kw: Any) -> Any:
    return scenario(
        cluster={"pools": [{"name": "p", "gpu": "A100-80G", "nodes": 1, "gpus_per_node": 2,
                            "models": ["mistral-7b", "qwen2.5-7b"]}],
                 "placement": {"p": ["mistral-7b"]}},
        workload={"streams": [
            {"model": "mistral-7b", "slo_class": "interactive", "count": 1},
            {"model": "qwen2.5-7b", "slo_class": "batch-1", "count": 1}]},
        **kw,
    )


def test_fcfs_routes_to_least_loaded_and_never_swaps() -> None:
    sc = two_model_scenario()
    work = [timed(req(f"a{i}", model="mistral-7b", t=0.0), 50) for i in range(4)]
    work.append(timed(req("q", model="qwen2.5-7b", cls="batch-1", t=0.0), 5))
    run, rec = _run(sc, "fcfs", work)
    disp = [a for _, a in rec.actions if isinstance(a, Dispatch)]
    # 4 mistral requests alternate over the two instances (ties broken by id)
    assert [d.instance_id for d in disp] == ["p-0", "p-1", "p-0", "p-1"]
    assert not any(isinstance(a, Swap) for _, a in rec.actions)
    # nobody serves qwen under static placement: rejected, not stuck
    q = next(r for r in run.requests if r.id == "q")
    assert q.state is RequestState.REJECTED


def test_edf_serves_earliest_deadline_first_and_swaps_on_demand() -> None:
    sc = scenario(
        cluster={"pools": [{"name": "p", "gpu": "A100-80G", "nodes": 1, "gpus_per_node": 1,
                            "models": ["mistral-7b", "qwen2.5-7b"]}],
                 "placement": {"p": ["mistral-7b"]}},
        workload={"streams": [{"model": "mistral-7b", "slo_class": "interactive", "count": 1}]},
    )
    # a busy instance; a batch-2 request arrives before an interactive one
    work = [timed(req("busy", model="mistral-7b", t=0.0), 400)]
    work.append(timed(req("late-deadline", model="mistral-7b", cls="batch-2", t=0.1), 5))
    work.append(timed(req("early-deadline", model="mistral-7b", cls="interactive", t=0.2), 5))
    work.append(timed(req("other-model", model="qwen2.5-7b", cls="batch-1", t=0.3), 5))
    run, rec = _run(sc, "edf", work)
    assert all(r.state is RequestState.FINISHED for r in run.requests)
    swaps = [a for _, a in rec.actions if isinstance(a, Swap)]
    assert swaps and swaps[0].model == "qwen2.5-7b"  # on demand, through sleep/wake


def test_edf_global_queue_orders_by_deadline() -> None:
    # batch capacity of 1: only one request in the engine at a time
    from qlm.policies.edf import EDFPolicy

    class One(EDFPolicy):
        def fill(self, view):  # type: ignore[no-untyped-def]
            self.capacity.limit = lambda inst: 1  # type: ignore[method-assign]
            return super().fill(view)

    registry._ensure_builtins()
    if "edf-one" not in registry.available():
        registry.register("edf-one", One)
    sc = scenario(cluster={"pools": [{"name": "p", "gpu": "A100-80G", "nodes": 1, "gpus_per_node": 1,
                                      "models": ["mistral-7b"]}]})
    work = [timed(req("first", t=0.0), 100)]
    work.append(timed(req("batch", cls="batch-2", t=0.01), 5))
    work.append(timed(req("inter", cls="interactive", t=0.02), 5))
    run, rec = _run(sc, "edf-one", work)
    disp = [a.request_id for _, a in rec.actions if isinstance(a, Dispatch)]
    # the interactive request (deadline 20.02) overtakes the earlier batch-2 one (3600.01)
    assert disp == ["first", "inter", "batch"]


def test_shepherd_preempts_lower_priority_work() -> None:
    from qlm.policies.shepherd import ShepherdPolicy

    class Full(ShepherdPolicy):
        def fill(self, view):  # type: ignore[no-untyped-def]
            self.capacity.limit = lambda inst: 2  # type: ignore[method-assign]
            return super().fill(view)

    registry._ensure_builtins()
    if "shepherd-two" not in registry.available():
        registry.register("shepherd-two", Full)
    sc = scenario(cluster={"pools": [{"name": "p", "gpu": "A100-80G", "nodes": 1, "gpus_per_node": 1,
                                      "models": ["mistral-7b"]}]})
    work = [timed(req(f"b{i}", cls="batch-2", t=0.0), 300) for i in range(2)]
    work.append(timed(req("urgent", cls="interactive", t=0.5), 5))
    run, rec = _run(sc, "shepherd-two", work)
    aborts = [a for _, a in rec.actions if isinstance(a, Abort)]
    assert len(aborts) == 1 and aborts[0].request_id in {"b0", "b1"}
    assert all(r.state is RequestState.FINISHED for r in run.requests)  # the victim is requeued
    victim = next(r for r in run.requests if r.id == aborts[0].request_id)
    assert victim.evictions == 1


def test_shepherd_repartitions_periodically() -> None:
    sc = two_model_scenario()
    work = [timed(req(f"q{i}", model="qwen2.5-7b", cls="batch-1", t=0.0), 20) for i in range(30)]
    run, rec = _run(sc, "shepherd", work, period_s=1.0)
    swaps = [(t, a) for t, a in rec.actions if isinstance(a, Swap)]
    # both instances start on mistral; the herd step at t=1 moves them to qwen
    assert swaps and all(a.model == "qwen2.5-7b" for _, a in swaps)
    assert swaps[0][0] == 1.0
    assert all(r.state is RequestState.FINISHED for r in run.requests)


def test_unknown_policy_fails_loudly() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        registry.create("nope")
