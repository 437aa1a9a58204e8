"""Fixtures for the runtime tests: in-process emulators on loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from qlm.runtime.emulator import EmulatorConfig, EmulatorServer
from qlm.runtime.events import EngineEvent

EmulatorFactory = Callable[..., Awaitable[EmulatorServer]]


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorFactory]:
    """``await emulator(served_model="m", speed=50, ...)`` -> a started EmulatorServer."""
    servers: list[EmulatorServer] = []

    async def make(**kw: Any) -> EmulatorServer:
        kw.setdefault("served_model", "m")
        kw.setdefault("speed", 50.0)
        s = EmulatorServer(EmulatorConfig(**kw))
        await s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        await s.stop(force=True)


class Sink:
    """Collects backend events in order."""

    def __init__(self) -> None:
        self.events: list[EngineEvent] = []

    def post(self, event: EngineEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]
