"""Clocks: the one thing that differs between virtual time and real time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds since the clock's epoch. Policies never read a clock: they get ``view.now``."""

    def now(self) -> float: ...


class VirtualClock:
    """Simulated time, advanced by the simulator only (monotone)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        if t < self._now:
            raise ValueError(f"virtual time cannot go back: {t} < {self._now}")
        self._now = t


class RealClock:
    """Wall time (monotonic) since construction, optionally sped up by ``speed``."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed
