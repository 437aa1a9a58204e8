"""Running the emulator: blocking (``run_emulator``, the CLI) or as an in-process server on
the current event loop (``EmulatorServer``, for tests and ``qlm serve`` without a config)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import uvicorn

from qlm.runtime.emulator.app import create_app
from qlm.runtime.emulator.core import EmulatorConfig, EmulatorCore


def run_emulator(cfg: EmulatorConfig, host: str = "127.0.0.1", port: int = 8000,
                 log_level: str = "warning") -> None:
    """Serve ``cfg`` until interrupted (blocking). A ``cold_start`` emulator refuses
    connections for its start-up time first, as ``vllm serve`` does while loading."""
    time.sleep(cfg.startup_s() / cfg.speed)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=1)


class EmulatorServer:
    """An emulator served by uvicorn on the running event loop.

    ``await start()`` binds ``host:port`` (``port=0``: a free port) and returns the base URL
    (a ``cold_start`` emulator first waits its start-up time, refusing connections);
    ``await stop()`` shuts it down (``force=True``: drop open connections at once, which
    clients see as an engine death).
    """

    def __init__(self, cfg: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cfg = cfg
        self.host = host
        self.port = port
        self.app = create_app(cfg)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def core(self) -> EmulatorCore:
        core: EmulatorCore = self.app.state.core
        return core

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        await asyncio.sleep(self.cfg.startup_s() / self.cfg.speed)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"emulator on port {self.port} did not start")
            await asyncio.sleep(0.005)
        return self.url

    async def stop(self, force: bool = False) -> None:
        if self._server is None or self._task is None:
            return
        server = self._server
        server.should_exit = True
        server.force_exit = force
        if force:  # like a process death: drop every open connection now
            for conn in list(server.server_state.connections):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.abort()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, timeout=5)
        if force:  # uvicorn skips the lifespan shutdown on a forced exit: finish it here
            lifespan = getattr(server, "lifespan", None)
            if lifespan is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(lifespan.shutdown(), timeout=2)
        self._server = None
        self._task = None


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (for subprocess emulators)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
