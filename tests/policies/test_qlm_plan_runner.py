"""The qlm policy with deferred solves: provisional placements, coalescing, reconciliation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from qlm.perf import default_catalog
from qlm.policies.base import PlanRunner
from qlm.policies.qlm_policy import GreedyEDFPlanner, PlannerInput, PlannerOutput, QLMPolicy
from qlm.runtime.clock import VirtualClock
from qlm.runtime.control import ControlPlane
from qlm.runtime.events import InstanceDown
from qlm.runtime.view import InstanceView
from qlm.sim.simulator import EventHeap, build_engines
from qlm.workload.cluster import build_cluster
from tests.factories import req, scenario


class HeldRunner(PlanRunner):
    """A deferred runner the test drives: solves wait in ``jobs`` until the test ends them."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

    def run(self, solve: Callable[[], Any], done: Callable[[Any], None]) -> None:
        self.jobs.append((solve, done))


class Setup:
    """Two idle mistral-7b instances; the engines never run (no virtual time passes), and
    ``room[instance]`` says how many requests each may still take (the pulling rule)."""

    def __init__(self) -> None:
        sc = scenario()
        cluster = build_cluster(sc, default_catalog())
        clock = VirtualClock()
        _, views = build_engines(cluster, EventHeap(clock), defaultdict(lambda: 100), "fcfs")
        self.ids = sorted(views)
        self.room = dict.fromkeys(self.ids, 0)
        self.planner = RecordingPlanner()
        self.policy = QLMPolicy(planner=self.planner, balance=False)
        self.runner = HeldRunner()
        self.policy.use_plan_runner(self.runner)
        self.policy.estimator.admits = self._admits  # type: ignore[method-assign]
        self.control = ControlPlane(self.policy, views, sc.slo, clock)
        self.control.start()

    def _admits(self, inst: InstanceView, r: Any, held_tokens: float, held: int) -> bool:
        return held < self.room[inst.id]

    def submit(self, rid: str, cls: str = "interactive") -> None:
        self.control.submit(req(rid, cls=cls))

    def pull(self) -> None:
        self.control.apply(self.policy.pull(self.control.view))

    def finish(self, out: PlannerOutput | None = None) -> None:
        """End the oldest solve: with ``out`` as its result (the real one when None)."""
        solve, done = self.runner.jobs.pop(0)
        done(solve() if out is None else out)
        self.control.apply(self.policy.on_plan(self.control.view))


class RecordingPlanner(GreedyEDFPlanner):
    def __init__(self) -> None:
        self.inputs: list[PlannerInput] = []

    def plan(self, problem: PlannerInput) -> PlannerOutput:
        self.inputs.append(problem)
        return super().plan(problem)


def test_new_groups_placed_at_once_and_replans_coalesce() -> None:
    s = Setup()
    p = s.policy
    s.submit("a1")  # a new group: a solve starts; the group is placed provisionally meanwhile
    assert len(s.runner.jobs) == 1 and p.replans == 0
    a = p.groups.groups["mistral-7b/interactive/0"]
    assert p.assigned[a.id] == s.ids[0]  # idle instances: no swap either way, instance order
    s.submit("b1", cls="batch-2")  # another new group: no second solve while one is in flight
    b = p.groups.groups["mistral-7b/batch-2/0"]
    assert len(s.runner.jobs) == 1 and b.id in p.assigned
    assert p.assigned[b.id] == s.ids[1]  # the other instance has a's queued group ahead
    s.finish()  # applied; the replan asked for meanwhile starts now, seeing both groups
    assert p.replans == 1 and len(s.runner.jobs) == 1
    s.finish()
    assert p.replans == 2 and not s.runner.jobs
    assert [g.id for g in s.planner.inputs[0].groups] == [a.id]
    assert {g.id for g in s.planner.inputs[1].groups} == {a.id, b.id}


def test_provisional_place_follows_deadlines() -> None:
    s = Setup()
    p = s.policy
    i0, _ = s.ids
    s.submit("b1", cls="batch-2")  # a solve starts; b is placed on i0 (idle, instance order)
    s.submit("a1")  # interactive, during the solve: its deadline is earlier than b's, so b does
    # not count as work ahead of it on i0 (both instances ready now: instance order, i0), and
    # it takes its place in i0's queue ahead of b, as the planner's EDF order would
    b, a = p.groups.groups["mistral-7b/batch-2/0"], p.groups.groups["mistral-7b/interactive/0"]
    assert p.assigned[b.id] == i0 and p.assigned[a.id] == i0
    assert p.vqueues[i0] == [a.id, b.id]


def test_plan_reconciled_with_what_changed_during_the_solve() -> None:
    s = Setup()
    p = s.policy
    i0, i1 = s.ids
    s.submit("c1")
    s.submit("a1", cls="batch-1")
    s.submit("a2", cls="batch-1")
    s.finish()  # the first plan (c only); the coalesced solve now sees c and a
    c, a = p.groups.groups["mistral-7b/interactive/0"], p.groups.groups["mistral-7b/batch-1/0"]
    # c went first (to i0); a, created during that solve, kept its provisional place (i1)
    assert len(s.runner.jobs) == 1 and p.assigned[c.id] == i0 and p.assigned[a.id] == i1
    # during the second solve: c's only request is dispatched (c ends), a starts on i1 (a2
    # stays queued), and a new group b arrives and is placed provisionally
    s.room[i0] = s.room[i1] = 1
    s.pull()
    assert not c.requests
    assert a.id in p.started and [r.id for r in a.requests] == ["a2"]
    s.submit("b1", cls="batch-2")
    b = "mistral-7b/batch-2/0"
    b_inst = p.assigned[b]
    # the solve returns a plan that moves a to i0 and still holds c
    s.finish(PlannerOutput(queues={i0: [a.id, c.id], i1: []}))
    assert c.id not in p.assigned and all(c.id not in q for q in p.vqueues.values())  # ended: dropped
    assert p.assigned[a.id] == i1 and p.vqueues[i1][0] == a.id  # started: stays, at the head
    assert p.assigned[b] == b_inst and p.vqueues[b_inst][-1] == b  # created since: place kept
    assert p.replans == 2


def test_failed_solve_keeps_provisional_places_and_down_instance_loses_its_groups() -> None:
    s = Setup()
    p = s.policy
    i0, i1 = s.ids
    s.submit("a1")
    a = "mistral-7b/interactive/0"
    assert p.assigned[a] == i0
    solve, done = s.runner.jobs.pop(0)
    done(None)  # the solve failed: nothing applied, the provisional place stays
    assert p.replans == 0 and p.assigned[a] == i0 and p._solving is None
    s.submit("b1", cls="batch-2")  # the next new group starts a new solve
    assert len(s.runner.jobs) == 1
    # i0 goes down during the solve: its group is placed on i1 at once; the plan, solved
    # before i0 went down, puts a on i0 again: it stays on i1
    s.control.post(InstanceDown(i0, 0.0))
    s.control.process_pending()
    assert p.assigned[a] == i1
    s.finish(PlannerOutput(queues={i0: [a], i1: ["mistral-7b/batch-2/0"]}))
    assert p.assigned[a] == i1 and p.vqueues[i0] == []


def test_runner_cores_limit_the_planner_threads() -> None:
    from qlm.policies.milp_planner import MILPPlanner

    planner = MILPPlanner()  # two solver threads by default
    assert planner.options.num_workers == 2
    QLMPolicy(planner=planner).use_plan_runner(PlanRunner())  # the simulator's: no limit
    assert planner.options.num_workers == 2

    class Beside(PlanRunner):
        cores = 1  # solves run beside an event loop on a 2-core machine

    QLMPolicy(planner=planner).use_plan_runner(Beside())
    assert planner.options.num_workers == 1


def test_group_created_during_a_solve_keeps_its_edf_place_when_the_plan_lands() -> None:
    s = Setup()
    p = s.policy
    i0, i1 = s.ids
    s.submit("c1", cls="batch-2")  # solve 1 (c only); c provisionally on i0
    s.submit("a1")  # interactive, created during solve 1: provisionally on i0, ahead of c
    c, a = p.groups.groups["mistral-7b/batch-2/0"], p.groups.groups["mistral-7b/interactive/0"]
    s.finish(PlannerOutput(queues={i0: [c.id], i1: []}))  # the plan knows only c
    # a keeps its instance and goes ahead of c (earlier deadline), not behind the plan's groups
    assert p.vqueues[i0] == [a.id, c.id] and p.assigned[a.id] == i0
