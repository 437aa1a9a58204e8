"""Scenario files: a cluster, SLO classes and a workload, validated; no I/O here except
:func:`load_scenario`, which reads a YAML file or a built-in scenario by name."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qlm.config_file import read_yaml
from qlm.domain.slo import DEFAULT_SLO_CLASSES, SLOClass
from qlm.errors import ConfigError, pydantic_error_line

BUILTIN_SCENARIOS = ("small", "wa", "wb", "wc")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolSpec(_Strict):
    """Identical nodes; each is cut into instances of ``tp`` GPUs."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    gpu: str
    nodes: int = Field(ge=1)
    gpus_per_node: int = Field(default=1, ge=1)
    cpu_ram_gb: float = Field(default=256.0, gt=0)
    disk_gbps: float = Field(default=2.0, gt=0)
    tp: int = Field(default=1, ge=1)
    models: list[str] = Field(min_length=1, description="models this pool's engines may serve")
    sleep_mode: bool = True

    @model_validator(mode="after")
    def _tp_divides(self) -> PoolSpec:
        if self.gpus_per_node % self.tp:
            raise ValueError(f"tp {self.tp} does not divide gpus_per_node {self.gpus_per_node}")
        return self


class ClusterConfig(_Strict):
    pools: list[PoolSpec] = Field(min_length=1)
    placement: Literal["proportional"] | dict[str, list[str]] = Field(
        default="proportional",
        description="initial active model per instance: proportional to expected load, or "
        "per pool a list of models cycled over its instances",
    )


class LengthSpec(_Strict):
    """Prompt and output token lengths: log-normal with the given mean and std, clipped."""

    input_mean: float = Field(gt=0)
    input_std: float = Field(ge=0)
    output_mean: float = Field(gt=0)
    output_std: float = Field(ge=0)
    input_min: int = Field(default=1, ge=1)
    input_max: int = Field(default=1_000_000, ge=1)
    output_min: int = Field(default=1, ge=1)
    output_max: int = Field(default=1_000_000, ge=1)
    total_max: int | None = Field(default=None, ge=2)


LENGTH_PRESETS: dict[str, LengthSpec] = {
    # ShareGPT with vLLM's benchmark filter (4 <= in <= 1024, in+out <= 2048): calibration.md A2
    "sharegpt": LengthSpec(
        input_mean=120, input_std=196, output_mean=348, output_std=284,
        input_min=4, input_max=1024, output_min=4, total_max=2048,
    ),
    # Azure 2023 conversation trace: calibration.md A2
    "azure-conv": LengthSpec(
        input_mean=1155, input_std=1109, output_mean=211, output_std=163,
        input_max=8000, output_max=2000,
    ),
    # long report generation from a conversation-sized context (batch jobs) [est]
    "report": LengthSpec(
        input_mean=1155, input_std=1109, output_mean=1500, output_std=500,
        input_min=64, input_max=2000, output_min=200, output_max=2500, total_max=4096,
    ),
    # very long prompts ("MegaPrompt", workload WC of the QLM paper) [est]
    "megaprompt": LengthSpec(
        input_mean=6000, input_std=2500, output_mean=250, output_std=200,
        input_min=1024, input_max=16000, output_max=2000,
    ),
}


class ArrivalSpec(_Strict):
    """Arrival process of a stream.

    - ``poisson``: exponential gaps at ``rate`` req/s from ``start_s``;
    - ``gamma``: gamma gaps with mean 1/rate and coefficient of variation ``cv`` (bursty > 1);
    - ``burst``: all requests at ``start_s``, spread uniformly over ``spread_s``.
    """

    kind: Literal["poisson", "gamma", "burst"] = "poisson"
    rate: float | None = Field(default=None, gt=0)
    cv: float = Field(default=1.0, gt=0)
    start_s: float = Field(default=0.0, ge=0)
    spread_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _rate_needed(self) -> ArrivalSpec:
        if self.kind != "burst" and self.rate is None:
            raise ValueError(f"arrival kind {self.kind!r} needs a rate")
        return self


class StreamSpec(_Strict):
    """Requests of one model and SLO class."""

    model: str
    slo_class: str
    count: int | None = Field(default=None, ge=1)
    share: float | None = Field(default=None, gt=0)
    arrival: ArrivalSpec = ArrivalSpec(kind="poisson", rate=1.0)
    lengths: str | LengthSpec = "sharegpt"
    declare_max_tokens: bool = Field(
        default=False, description="requests declare max_tokens = their true output length cap"
    )

    @model_validator(mode="after")
    def _count_or_share(self) -> StreamSpec:
        if (self.count is None) == (self.share is None):
            raise ValueError("give exactly one of count or share")
        if isinstance(self.lengths, str) and self.lengths not in LENGTH_PRESETS:
            raise ValueError(f"unknown length preset {self.lengths!r}; known: {sorted(LENGTH_PRESETS)}")
        return self

    @property
    def length_spec(self) -> LengthSpec:
        return LENGTH_PRESETS[self.lengths] if isinstance(self.lengths, str) else self.lengths


@dataclass(frozen=True, slots=True)
class DeclaredTraffic:
    """What a workload declares for one (model, SLO class): output tokens' mean and standard
    deviation, mean prompt tokens, and the summed rate of its steady streams (Poisson,
    gamma; ``None`` when it has only bursts), in requests per second."""

    output_mean: float
    output_std: float
    prompt_mean: float
    rate: float | None


class WorkloadConfig(_Strict):
    requests: int | None = Field(default=None, ge=1, description="total, split by stream share")
    streams: list[StreamSpec] = Field(min_length=1)

    def declared_traffic(self) -> dict[tuple[str, str], DeclaredTraffic]:
        """Per (model, class), in the order the streams first name them: the lengths of the
        last stream of the key, the rates of all its steady streams summed (the priors a
        deployment would configure; see ``QLMPolicy.configure``)."""
        out: dict[tuple[str, str], DeclaredTraffic] = {}
        for stream in self.streams:
            key = (stream.model, stream.slo_class)
            ls = stream.length_spec
            rate = out[key].rate if key in out else None
            if stream.arrival.kind != "burst" and stream.arrival.rate is not None:
                rate = (rate or 0.0) + stream.arrival.rate
            out[key] = DeclaredTraffic(ls.output_mean, ls.output_std, ls.input_mean, rate)
        return out

    @model_validator(mode="after")
    def _shares_need_total(self) -> WorkloadConfig:
        if any(s.share is not None for s in self.streams) and self.requests is None:
            raise ValueError("streams with a share need workload.requests")
        return self


class Scenario(_Strict):
    """A what-if set-up: cluster, SLO classes, workload and simulation settings."""

    name: str
    description: str = ""
    slo_classes: list[SLOClass] = Field(default_factory=lambda: list(DEFAULT_SLO_CLASSES))
    cluster: ClusterConfig
    workload: WorkloadConfig
    engine_scheduling: Literal["fcfs", "priority"] = "fcfs"
    horizon_s: float | None = Field(
        default=None, gt=0, description="stop time; default last arrival + 2x the largest TTFT"
    )
    gpus: dict[str, dict[str, Any]] = Field(default_factory=dict, description="extra GPU types")
    models: dict[str, dict[str, Any]] = Field(default_factory=dict, description="extra models")

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        names = [c.name for c in self.slo_classes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate SLO class names in {names}")
        for i, s in enumerate(self.workload.streams):
            if s.slo_class not in names:
                raise ValueError(f"workload.streams.{i}.slo_class {s.slo_class!r} not in {names}")
            if not any(s.model in p.models for p in self.cluster.pools):
                raise ValueError(f"workload.streams.{i}.model {s.model!r} is served by no pool")
        pools = {p.name for p in self.cluster.pools}
        if len(pools) != len(self.cluster.pools):
            raise ValueError("duplicate pool names")
        if isinstance(self.cluster.placement, dict):
            for pool, models in self.cluster.placement.items():
                if pool not in pools:
                    raise ValueError(f"cluster.placement names unknown pool {pool!r}")
                spec = next(p for p in self.cluster.pools if p.name == pool)
                bad = [m for m in models if m not in spec.models]
                if bad:
                    raise ValueError(f"cluster.placement.{pool}: {bad} not among its models")
        return self

    @property
    def slo(self) -> dict[str, SLOClass]:
        return {c.name: c for c in self.slo_classes}


def parse_scenario(raw: Any, source: str) -> Scenario:
    """Validate a raw mapping; errors are one line naming ``source`` and the field."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "a scenario must be a YAML mapping")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_error_line(source, exc) from None


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a YAML file by path."""
    if name_or_path in BUILTIN_SCENARIOS:
        res = resources.files("qlm.workload").joinpath("scenarios", f"{name_or_path}.yaml")
        return parse_scenario(yaml.safe_load(res.read_text(encoding="utf-8")), f"{name_or_path}.yaml")
    path = Path(name_or_path)
    if not path.exists():
        raise ConfigError(
            name_or_path, "", f"no such scenario file (built-in: {', '.join(BUILTIN_SCENARIOS)})"
        )
    raw = read_yaml(path)
    return parse_scenario(raw, str(path))
