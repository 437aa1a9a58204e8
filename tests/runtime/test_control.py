"""The control plane's request table: ended requests beyond ``keep_ended`` leave it, and
late events about them are ignored at run time (raised in the simulator)."""

from __future__ import annotations

from typing import Literal

import pytest

from qlm.domain.cluster import InstanceSpec, NodeSpec
from qlm.domain.request import Request, RequestState
from qlm.domain.slo import DEFAULT_SLO_CLASSES
from qlm.perf.swap_model import Residency
from qlm.policies import registry
from qlm.runtime.backend import EventSink, InstanceBackend, InstanceStats
from qlm.runtime.clock import VirtualClock
from qlm.runtime.control import ControlPlane
from qlm.runtime.events import Finished
from qlm.runtime.view import InstanceView
from tests.factories import SWAP, flat_profile, req

SLO = {c.name: c for c in DEFAULT_SLO_CLASSES}


class RecordingBackend(InstanceBackend):
    """Takes every dispatch and reports nothing by itself: the test posts the events."""

    instance_id = "i0"

    def __init__(self) -> None:
        self.dispatched: list[str] = []

    def bind(self, sink: EventSink) -> None:
        self.sink = sink

    def dispatch(self, request: Request, priority: int) -> None:
        self.dispatched.append(request.id)

    def abort(self, request_id: str) -> None:
        pass

    def swap(self, model: str, mode: Literal["abort", "wait"]) -> None:
        pass

    def stats(self) -> InstanceStats:
        return InstanceStats()


def control_plane(keep_ended: int | None, strict: bool = False) -> tuple[ControlPlane, RecordingBackend]:
    backend = RecordingBackend()
    view = InstanceView(
        spec=InstanceSpec(id="i0", node="n0", gpu="G", models=("m",), initial_model="m"),
        node=NodeSpec(name="n0", gpu="G", num_gpus=1, cpu_ram_gb=64), profiles={"m": flat_profile()},
        swap_costs={"m": SWAP}, backend=backend, residency={"m": Residency.ACTIVE}, active_model="m")
    control = ControlPlane(registry.create("fcfs"), {"i0": view}, SLO, VirtualClock(), strict=strict,
                           keep_ended=keep_ended)
    control.start()
    return control, backend


def finish(control: ControlPlane, rid: str) -> None:
    control.post(Finished(rid, "i0", control.clock.now(), 5, reason="length"))
    control.process_pending()


def test_only_the_most_recent_ended_requests_stay() -> None:
    control, backend = control_plane(keep_ended=2)
    for k in range(5):
        control.submit(req(f"r{k}", model="m"))
    assert backend.dispatched == [f"r{k}" for k in range(5)]  # fcfs: all in flight at once
    for k in range(4):
        finish(control, f"r{k}")
    # 4 ended, 2 kept (r2, r3, the last two to end); r4 is still in flight
    assert sorted(control.requests) == ["r2", "r3", "r4"]
    assert control.requests["r3"].state is RequestState.FINISHED
    control.cancel("r4")  # in flight: aborted on its backend, still in the table until it ends
    assert "r4" in control.requests


def test_a_late_event_for_a_dropped_request_is_ignored_at_run_time(caplog: pytest.LogCaptureFixture) -> None:
    control, _ = control_plane(keep_ended=1)
    for k in range(2):
        control.submit(req(f"r{k}", model="m"))
        finish(control, f"r{k}")
    assert list(control.requests) == ["r1"]
    finish(control, "r0")  # a duplicate end for a dropped request: logged, nothing else
    assert list(control.requests) == ["r1"] and "not in the request table" in caplog.text


def test_the_simulator_keeps_every_request_and_raises_on_unknown_ids() -> None:
    control, _ = control_plane(keep_ended=None, strict=True)
    for k in range(3):
        control.submit(req(f"r{k}", model="m"))
        finish(control, f"r{k}")
    assert sorted(control.requests) == ["r0", "r1", "r2"]
    with pytest.raises(KeyError, match="not in the request table"):
        finish(control, "nope")


def test_keep_ended_must_be_positive() -> None:
    with pytest.raises(ValueError, match="keep_ended must be >= 1"):
        control_plane(keep_ended=0)
