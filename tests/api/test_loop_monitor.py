"""The gateway process's loop lag and garbage-collector pause histograms."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import CollectorRegistry

from qlm.api.metrics import LoopMonitor


def _count(reg: CollectorRegistry, name: str, labels: dict[str, str] | None = None, le: str | None = None) -> float:
    if le is None:
        value = reg.get_sample_value(f"{name}_count", labels or {})
    else:
        value = reg.get_sample_value(f"{name}_bucket", {**(labels or {}), "le": le})
    return 0.0 if value is None else value


async def test_a_blocked_loop_shows_as_lag_and_collections_as_pauses() -> None:
    reg = CollectorRegistry()
    monitor = LoopMonitor(reg, interval_s=0.01)
    monitor.start()
    await asyncio.sleep(0.05)  # a few on-time timers
    time.sleep(0.06)  # the loop is blocked: the timer due meanwhile fires >= 50 ms late
    await asyncio.sleep(0.03)
    gc.collect(0)
    await monitor.stop()
    lags = _count(reg, "qlm_event_loop_lag_seconds")
    within_20ms = _count(reg, "qlm_event_loop_lag_seconds", le="0.02")
    assert lags >= 3 and lags - within_20ms >= 1  # one observation above 20 ms: the blocked one
    assert _count(reg, "qlm_gc_pause_seconds", {"generation": "0"}) >= 1
    # stopped: no callback left behind, no more observations
    assert all(getattr(cb, "__self__", None) is not monitor for cb in gc.callbacks)
    pauses = _count(reg, "qlm_gc_pause_seconds", {"generation": "0"})
    gc.collect(0)
    await asyncio.sleep(0.03)
    assert _count(reg, "qlm_gc_pause_seconds", {"generation": "0"}) == pauses
    assert _count(reg, "qlm_event_loop_lag_seconds") == lags
