"""``qlm serve``: the gateway on uvicorn (registered in :mod:`qlm.cli`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["serve"]


class _StartError(Exception):
    """The gateway could not start (engines unreachable, launcher failure): one line."""


def serve(
    config: Annotated[Path | None, typer.Option(help="gateway YAML (default: embedded emulated cluster)")] = None,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(
        help="Batch API state (SQLite, WAL) in this directory; batches resume on restart")] = None,
    database_url: Annotated[str | None, typer.Option(
        help="Batch API state in this SQLAlchemy database (e.g. postgresql+psycopg://...)")] = None,
    access_log: Annotated[bool, typer.Option(help="log every HTTP request (costs CPU at high rates)")] = False,
) -> None:
    """Serve the OpenAI-compatible, SLO-aware gateway (no config: an emulated cluster)."""
    import uvicorn
    from pydantic import ValidationError

    from qlm.api.app import create_app
    from qlm.api.config import BatchSettings, GatewayConfig, load_gateway_config
    from qlm.api.gateway import Gateway
    from qlm.cli import fail
    from qlm.errors import ConfigError, pydantic_error_line

    if not 0 < port < 65536:
        fail(f"--port must be in 1..65535 (got {port})")
    try:
        cfg = load_gateway_config(config) if config is not None else GatewayConfig()
        if data_dir is not None or database_url is not None:
            update: dict[str, object] = {}
            if data_dir is not None:
                update["data_dir"] = data_dir
            if database_url is not None:
                update["database_url"] = database_url
            batch = BatchSettings.model_validate({**cfg.batch.model_dump(), **update})
            batch.store_config()  # a bad --database-url fails here, in one line
            cfg = cfg.model_copy(update={"batch": batch})
    except ConfigError as exc:
        fail(str(exc))
        return
    except ValidationError as exc:
        fail(f"command line: {pydantic_error_line('batch', exc).reason}")
        return
    typer.echo(f"qlm gateway on http://{host}:{port}/v1 (policy {cfg.policy}, "
               f"{'embedded emulated cluster' if cfg.runtime is None else f'{len(cfg.runtime.engines)} engines'})",
               err=True)
    if cfg.runtime is not None:
        typer.echo(f"waiting up to {cfg.runtime.ready_timeout_s:g} s for the engines to be ready ...", err=True)
    if cfg.batch.enabled:
        typer.echo(f"batch API state: {cfg.batch.database_url or cfg.batch.data_dir}", err=True)
    gateway = Gateway(cfg)
    server = uvicorn.Server(uvicorn.Config(create_app(gateway=gateway), host=host, port=port, log_level="info",
                                           access_log=access_log, timeout_graceful_shutdown=5))

    async def run() -> None:
        # engines first, outside the ASGI lifespan: a start-up failure is one line, not a traceback
        try:
            await gateway.start()
        except Exception as exc:  # noqa: BLE001 - any start-up failure ends the command
            with contextlib.suppress(Exception):
                await gateway.stop()
            raise _StartError(f"cannot start the gateway: {type(exc).__name__}: {exc}") from None
        # what start-up built (modules, the app, the policy and solver) is never garbage, and a
        # full collection over it stopped the event loop for 60-100 ms (qlm_gc_pause_seconds)
        gc.collect()
        gc.freeze()
        await server.serve()

    try:
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(run())
    except _StartError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        pass
