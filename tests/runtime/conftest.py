"""Fixtures for the runtime tests: in-process emulators on loopback ports."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from qlm.domain.request import Request
from qlm.runtime.control import ControlListener
from qlm.runtime.emulator import EmulatorConfig, EmulatorServer
from qlm.runtime.loop import RuntimeLoop
from tests.factories import ListSink as Sink  # noqa: F401  (re-exported for the runtime tests)

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


async def until(pred: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``pred`` every 10 ms until it is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


class _EndCounter(ControlListener):
    def __init__(self) -> None:
        self.ends: Counter[str] = Counter()

    def on_request_end(self, request: Request) -> None:
        self.ends[request.id] += 1


def count_ends(rt: RuntimeLoop) -> Counter[str]:
    """Request id -> terminal transitions seen from now on (each request must end once)."""
    counter = _EndCounter()
    rt.control.listeners.append(counter)
    return counter.ends
