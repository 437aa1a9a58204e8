"""The scheduling-policy interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from qlm.domain.request import Request
from qlm.runtime.actions import Action
from qlm.runtime.events import EngineEvent
from qlm.runtime.view import ClusterView


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
    - Deterministic: ties are broken explicitly (by arrival time, then id).
    """

    name: ClassVar[str]
    tick_s: float | None = None

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
