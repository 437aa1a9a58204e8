"""The scheduling-policy interface, and how a policy's planner solves run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

from qlm.domain.request import Request
from qlm.runtime.actions import Action
from qlm.runtime.events import EngineEvent
from qlm.runtime.view import ClusterView

T = TypeVar("T")


class PlanRunner:
    """Where and when a policy's planner solves run; the driver injects it
    (:meth:`Policy.use_plan_runner`).

    A policy splits a replan in three: it snapshots the planner input on the control
    plane's thread, hands ``solve`` (a pure function of that snapshot) and ``done`` (which
    applies the result to the policy's state) to :meth:`run`, and asks for at most one solve
    at a time.

    This default runs ``solve`` at once and ``done`` before :meth:`run` returns, inside the
    hook that asked: the simulator's runner (virtual time, deterministic), and the one a
    policy uses when no driver sets another. An exception in ``solve`` propagates.

    A deferred runner (the runtime's, :mod:`qlm.runtime.loop`) runs
    ``solve`` elsewhere and calls ``done`` later on the control plane's thread, with
    ``None`` when the solve failed; it then carries out :meth:`Policy.on_plan`'s actions.
    It may never call ``done`` when the driver stops meanwhile.

    ``cores``: how many CPU cores a solve may use (None: no limit). A runner whose solves
    run beside other work (the runtime's, next to the event loop) sets it, so that a
    multi-threaded solver does not take the cores the rest of the system needs.
    """

    cores: int | None = None

    def run(self, solve: Callable[[], T], done: Callable[[T | None], None]) -> None:
        done(solve())


class Policy(ABC):
    """Decides LSO actions from what a real control plane can observe.

    Contract:
    - The control plane is the only caller, the same one in the simulator and against real
      engines. A policy never reads a clock (``view.now`` is the time), never touches
      backends, and never sees a request's true output length.
    - Every hook returns the actions to carry out now, in order; an action that is invalid in
      the current state (dispatch to an instance whose active model differs, say) raises
      ``PolicyError`` in the simulator.
    - ``view.queue`` holds every request not yet dispatched; a request leaves it only through a
      ``Dispatch`` or ``Reject``. Evicted requests come back through ``on_requeue``.
    - ``tick_s`` is the period of :meth:`on_tick` (``None``: never called).
    - Slow work (a planner's solve) goes through ``plan_runner`` (:class:`PlanRunner`), never
      straight into a hook: the runtime runs it off its event loop.
    - Deterministic: ties are broken explicitly (by arrival time, then id).
    """

    name: ClassVar[str]
    tick_s: float | None = None
    plan_runner: PlanRunner = PlanRunner()

    def use_plan_runner(self, runner: PlanRunner) -> None:
        """The driver says how solves run (before :meth:`start`)."""
        self.plan_runner = runner

    def start(self, view: ClusterView) -> Sequence[Action]:
        """Called once before the first arrival."""
        return ()

    @abstractmethod
    def on_arrival(self, request: Request, view: ClusterView) -> Sequence[Action]:
        """A request entered the global queue."""

    def on_requeue(self, request: Request, view: ClusterView) -> Sequence[Action]:
        """An evicted or orphaned request is back in the global queue (progress kept)."""
        return self.on_arrival(request, view)

    @abstractmethod
    def on_event(self, event: EngineEvent, view: ClusterView) -> Sequence[Action]:
        """An engine reported something (first token, finish, abort, swap done, down/up)."""

    def on_tick(self, view: ClusterView) -> Sequence[Action]:
        """Periodic hook (scheduling epoch)."""
        return ()

    def on_plan(self, view: ClusterView) -> Sequence[Action]:
        """A deferred solve's result was applied (:class:`PlanRunner`): the actions it enables."""
        return ()
