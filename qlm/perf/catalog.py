"""The performance catalogue: GPUs, models and calibration data, loaded from YAML.

The packaged ``profiles.yaml`` is the default; a scenario may add GPUs and models of its own.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qlm.domain.cluster import GPUType, ModelSpec
from qlm.errors import ConfigError, pydantic_error_line


class EngineDefaults(BaseModel):
    """Constants of the step-time and memory model (see profiles.yaml for their sources)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kv_read_efficiency: float = Field(gt=0, le=1)
    mem_efficiency: float = Field(gt=0, le=1)
    compute_efficiency: float = Field(gt=0, le=1)
    t_cpu_ms: float = Field(ge=0)
    t_allreduce_ms: float = Field(ge=0)
    allreduce_per_layer: int = Field(ge=0)
    gpu_memory_utilization: float = Field(gt=0, le=1)
    reserved_gb_per_gpu: float = Field(ge=0)
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens_small_gpu: int = Field(ge=1)
    max_num_batched_tokens_large_gpu: int = Field(ge=1)


class SwapDefaults(BaseModel):
    """Constants of the model-swap cost model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wake_fixed_s: float = Field(ge=0)
    warmup_s: float = Field(ge=0)
    sleep_fixed_s: float = Field(ge=0)
    level2_fixed_s: float = Field(ge=0)
    level2_reload_gbps: float = Field(gt=0)
    cold_fixed_s: float = Field(ge=0)
    cold_fixed_per_extra_gpu_s: float = Field(ge=0)


class Anchor(BaseModel):
    """Measured T_lin(n) points (ms) for one (model, gpu, tp)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    gpu: str
    tp: int = Field(ge=1)
    points: dict[int, float]
    source: str = ""

    @model_validator(mode="after")
    def _points_sane(self) -> Anchor:
        if len(self.points) < 2:
            raise ValueError("an anchor needs at least two points")
        if any(n < 1 or t <= 0 for n, t in self.points.items()):
            raise ValueError("anchor points must have tokens >= 1 and time > 0")
        return self


class Catalog(BaseModel):
    """Everything the performance model needs, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: dict[str, GPUType]
    models: dict[str, ModelSpec]
    engine: EngineDefaults
    swap: SwapDefaults
    anchors: tuple[Anchor, ...] = ()

    @model_validator(mode="after")
    def _anchors_known(self) -> Catalog:
        for a in self.anchors:
            if a.model not in self.models:
                raise ValueError(f"anchor names unknown model {a.model!r}")
            if a.gpu not in self.gpus:
                raise ValueError(f"anchor names unknown gpu {a.gpu!r}")
        return self

    def anchor(self, model: str, gpu: str, tp: int) -> Anchor | None:
        for a in self.anchors:
            if (a.model, a.gpu, a.tp) == (model, gpu, tp):
                return a
        return None

    def gpu(self, name: str) -> GPUType:
        try:
            return self.gpus[name]
        except KeyError:
            raise KeyError(f"unknown GPU type {name!r}; known: {sorted(self.gpus)}") from None

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}; known: {sorted(self.models)}") from None

    def extended(self, gpus: dict[str, Any] | None, models: dict[str, Any] | None) -> Catalog:
        """A copy with extra GPU and model entries (as raw mappings, validated here)."""
        data = self.model_dump()
        for name, g in (gpus or {}).items():
            data["gpus"][name] = {"name": name, **g}
        for name, m in (models or {}).items():
            data["models"][name] = {"name": name, **m}
        return Catalog.model_validate(data)


def parse_catalog(raw: dict[str, Any], source: str) -> Catalog:
    """Validate a raw catalogue mapping; errors name ``source`` and the field."""
    try:
        data = dict(raw)
        data["gpus"] = {k: {"name": k, **v} for k, v in (raw.get("gpus") or {}).items()}
        data["models"] = {k: {"name": k, **v} for k, v in (raw.get("models") or {}).items()}
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error_line(source, exc) from None
    except (TypeError, AttributeError) as exc:
        raise ConfigError(source, "", f"malformed catalogue ({exc})") from None


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The catalogue shipped in the package (``qlm/perf/profiles.yaml``)."""
    text = resources.files("qlm.perf").joinpath("profiles.yaml").read_text(encoding="utf-8")
    return parse_catalog(yaml.safe_load(text), "qlm/perf/profiles.yaml")
