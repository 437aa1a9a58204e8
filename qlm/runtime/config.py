"""Runtime configuration: the engines the control plane drives, validated.

YAML example (``launcher: static``, engines the operator already runs)::

    launcher: static
    nodes: {gpu-node-1: {cpu_ram_gb: 512}}
    engines:
      - id: a100-0
        node: gpu-node-1
        gpu: A100-80G
        gpus: [0]
        sleep_mode: true
        models:                      # one vLLM process per model, same GPUs
          - {model: mistral-7b, url: "http://10.0.0.5:8000"}
          - {model: llama-3-8b, url: "http://10.0.0.5:8001", profile: llama-3-8b}
        initial_model: mistral-7b

``local`` builds the ``vllm serve`` command lines itself (``path`` is what to serve,
``port`` where); ``emulated`` starts emulators. With these two, an engine may list several
models without ``sleep_mode``: only the active model's process runs, and a swap stops it and
cold-starts the target's. Errors are one line naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qlm.config_file import read_yaml
from qlm.errors import ConfigError, validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelProcess(_Strict):
    """One vLLM process of an engine: the model it serves (served name, what requests ask
    for) and where it listens."""

    model: str = Field(min_length=1, description="served model name")
    url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(:\d+)?/?$",
                            description="base URL (static); set by local/emulated launchers")
    profile: str | None = Field(default=None, description="catalogue model for timings "
                                "(default: the served name)")
    path: str | None = Field(default=None, description="local: model path or HF id to serve")
    port: int | None = Field(default=None, ge=1, le=65535, description="local: port")
    extra_args: tuple[str, ...] = Field(default=(), description="local: extra vllm serve args")

    @property
    def profile_model(self) -> str:
        return self.profile or self.model


class NodeConfig(_Strict):
    cpu_ram_gb: float = Field(default=256.0, gt=0)
    disk_gbps: float = Field(default=2.0, gt=0)


class EngineConfig(_Strict):
    """One instance: ``tp`` GPUs of type ``gpu`` on ``node`` running one process per model;
    with ``sleep_mode`` all but the active one sleep (``sleep_level`` 1: weights to CPU RAM;
    2: discarded)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    node: str = "node0"
    gpu: str
    tp: int = Field(default=1, ge=1)
    gpus: tuple[int, ...] = Field(default=(), description="device indices (local launcher)")
    models: tuple[ModelProcess, ...] = Field(min_length=1)
    initial_model: str | None = None
    sleep_mode: bool = True
    sleep_level: Literal[1, 2] = 1
    scheduling_policy: Literal["fcfs", "priority"] = "priority"

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        names = [m.model for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: a model appears twice in {names}")
        if self.initial_model is not None and self.initial_model not in names:
            raise ValueError(f"initial_model: {self.initial_model!r} is not among models {names}")
        if self.gpus and len(self.gpus) != self.tp:
            raise ValueError(f"gpus: {len(self.gpus)} devices listed for tp {self.tp}")
        return self

    @property
    def cold_swaps(self) -> bool:
        """Several models without sleep mode: a swap stops one engine process and starts
        another (a cold start, which needs a launcher that can start processes)."""
        return len(self.models) > 1 and not self.sleep_mode

    @property
    def active_model(self) -> str:
        return self.initial_model or self.models[0].model


class RuntimeConfig(_Strict):
    """The engines of a deployment and how to reach (or start) them."""

    launcher: Literal["static", "local", "emulated"] = "static"
    engines: tuple[EngineConfig, ...] = Field(min_length=1)
    nodes: dict[str, NodeConfig] = Field(default_factory=dict)
    speed: float = Field(default=1.0, gt=0, description="time compression (emulated engines)")
    health_interval_s: float = Field(default=1.0, gt=0)
    ready_timeout_s: float = Field(default=600.0, gt=0)
    host: str = Field(default="127.0.0.1", description="local/emulated: listen address")

    @model_validator(mode="after")
    def _consistent(self) -> RuntimeConfig:
        ids = [e.id for e in self.engines]
        if len(set(ids)) != len(ids):
            raise ValueError(f"engines: duplicate engine id in {ids}")
        for i, e in enumerate(self.engines):
            if self.launcher == "static" and e.cold_swaps:
                raise ValueError(f"engines.{i}.sleep_mode: several models on a static engine need "
                                 "sleep mode (cold starts need a local or emulated launcher)")
            for j, m in enumerate(e.models):
                if self.launcher == "static" and m.url is None:
                    raise ValueError(f"engines.{i}.models.{j}.url: required with launcher static")
                if self.launcher == "local" and m.port is None:
                    raise ValueError(f"engines.{i}.models.{j}.port: required with launcher local")
        return self

    def node(self, name: str) -> NodeConfig:
        return self.nodes.get(name, NodeConfig())


def parse_runtime_config(raw: Any, source: str = "runtime config") -> RuntimeConfig:
    """Validate a raw mapping; errors are one line naming ``source`` and the field."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "a runtime config must be a mapping")
    try:
        return RuntimeConfig.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(source, exc) from None

def load_runtime_config(path: str | Path) -> RuntimeConfig:
    """Read and validate a YAML runtime config."""
    return parse_runtime_config(read_yaml(path), str(path))
