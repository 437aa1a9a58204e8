"""``qlm serve``: the gateway on uvicorn (registered in :mod:`qlm.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    config: Annotated[Path | None, typer.Option(help="gateway YAML (default: embedded emulated cluster)")] = None,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """Serve the OpenAI-compatible, SLO-aware gateway (no config: an emulated cluster)."""
    import uvicorn

    from qlm.api.app import create_app
    from qlm.api.config import GatewayConfig, load_gateway_config
    from qlm.cli import fail
    from qlm.errors import ConfigError

    if not 0 < port < 65536:
        fail(f"--port must be in 1..65535 (got {port})")
    try:
        cfg = load_gateway_config(config) if config is not None else GatewayConfig()
    except ConfigError as exc:
        fail(str(exc))
        return
    typer.echo(f"qlm gateway on http://{host}:{port}/v1 (policy {cfg.policy}, "
               f"{'embedded emulated cluster' if cfg.runtime is None else f'{len(cfg.runtime.engines)} engines'})",
               err=True)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
