"""A gateway served by uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

from qlm.api.app import create_app
from qlm.api.config import GatewayConfig, parse_gateway_config
from qlm.api.gateway import Gateway
from qlm.runtime.emulator.server import free_port
from qlm.runtime.launcher import EmulatedEngineSpec

T = TypeVar("T")

API_KEY = "sk-test"
ADMIN_KEY = "admin-test"


def gateway_config(**overrides: Any) -> GatewayConfig:
    """Default classes plus ``tight`` (reject) and ``tight-dg`` (downgrade to batch-2), both
    with a TTFT target no request can meet; keys; a 64 KiB body limit; emulators at 20x."""
    raw: dict[str, Any] = {
        "slo_classes": [
            {"name": "interactive", "ttft_s": 20, "priority": 0},
            {"name": "batch-1", "ttft_s": 60, "priority": 1},
            {"name": "batch-2", "ttft_s": 3600, "priority": 2},
            {"name": "tight", "ttft_s": 0.0001, "priority": 0},
            {"name": "tight-dg", "ttft_s": 0.0001, "priority": 0},
        ],
        "default_class": "interactive",
        "service_tiers": {"priority": "interactive"},
        "admission": {"tight": {"action": "reject", "min_probability": 0.5},
                      "tight-dg": {"action": "downgrade:batch-2", "min_probability": 0.5}},
        "auth": {"api_keys": [API_KEY], "admin_key": ADMIN_KEY},
        "limits": {"max_body_bytes": 65536},
        "emulated": {"speed": 20.0},
    }
    raw.update(overrides)
    return parse_gateway_config(raw)


class ServedGateway:
    """``create_app`` on uvicorn in a daemon thread; :meth:`call` runs a coroutine on its loop."""

    def __init__(self, config: GatewayConfig, engines: list[EmulatedEngineSpec] | None = None) -> None:
        self.gateway = Gateway(config, emulated_engines=engines)
        self.app = create_app(gateway=self.gateway)
        self.port = free_port("127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedGateway:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        rt = self.gateway.rt
        assert rt is not None and rt._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, rt._loop).result(timeout)
