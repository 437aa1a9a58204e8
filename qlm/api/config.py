"""Gateway configuration: SLO classes, admission, API keys, limits, policy and engines.

YAML (every key optional; see ``examples/gateway.yaml``)::

    slo_classes:                     # default: interactive 20 s, batch-1 60 s, batch-2 3600 s TTFT
      - {name: interactive, ttft_s: 20, priority: 0}
      - {name: batch-1, ttft_s: 60, priority: 1}
    default_class: interactive
    service_tiers: {priority: interactive, default: interactive, flex: batch-1}
    admission:                       # when the estimator says the class's SLO will be missed
      interactive: {action: "downgrade:batch-1", min_probability: 0.5}
      batch-1: {action: reject}
    auth: {api_keys: [sk-...], admin_key: admin-...}   # none configured: open
    limits: {max_body_bytes: 1048576}
    policy: qlm
    expected_traffic:                # estimator priors per model and class (all optional)
      mistral-7b: {interactive: {rate: 20, output_mean: 350, output_std: 280, prompt_mean: 600}}
    runtime: null                    # null: the embedded emulated cluster; else qlm.runtime.config
    emulated: {speed: 1.0, seed: 0}
    batch:                           # Batch API (off without data_dir or database_url)
      data_dir: /var/lib/qlm         # SQLite (WAL) at <data_dir>/batch.sqlite3; `qlm serve --data-dir`
      database_url: null             # a SQLAlchemy URL (PostgreSQL) instead of the SQLite file
      window_classes:                # completion window -> SLO class; first rule with window <= max_window_s
        - {max_window_s: 3600, slo_class: batch-1}
        - {max_window_s: .inf, slo_class: batch-2}

Errors are one line, ``<source>: <field>: <reason>`` (:class:`qlm.errors.ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qlm.api.batch.config import BatchConfig
from qlm.config_file import read_yaml
from qlm.domain.slo import DEFAULT_SLO_CLASSES, SLOClass
from qlm.errors import ConfigError, validation_error
from qlm.runtime.config import RuntimeConfig

__all__ = [
    "AdmissionRule",
    "AuthConfig",
    "BatchSettings",
    "EmulatedSettings",
    "GatewayConfig",
    "LimitsConfig",
    "TrafficPrior",
    "WindowRule",
    "load_gateway_config",
    "parse_gateway_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdmissionRule(_Strict):
    """What to do with a request whose SLO the estimator predicts will be missed, i.e. whose
    probability of meeting its TTFT target at admission is below ``min_probability``.

    ``action``: ``accept`` (queue it anyway), ``reject`` (HTTP 429 with ``Retry-After``) or
    ``downgrade:<class>`` (re-admit it in a looser class)."""

    action: str = Field(default="accept", pattern=r"^(accept|reject|downgrade:.+)$")
    min_probability: float = Field(default=0.5, ge=0.0, le=1.0)

    @property
    def kind(self) -> Literal["accept", "reject", "downgrade"]:
        head = self.action.split(":", 1)[0]
        return "downgrade" if head == "downgrade" else ("reject" if head == "reject" else "accept")

    @property
    def target(self) -> str | None:
        """The class of a ``downgrade``, else None."""
        return self.action.split(":", 1)[1] if self.kind == "downgrade" else None


class TrafficPrior(_Strict):
    """What an operator expects of one (model, SLO class), the estimator's priors until it has
    learned from the traffic itself: ``rate``, steady requests per wall second (used until the
    class's first arrival; a forecast of steady traffic, not of bursts); ``output_mean`` /
    ``output_std``, output tokens (until 30 completions of the class); ``prompt_mean``, prompt
    tokens (the start of its running mean)."""

    rate: float | None = Field(default=None, ge=0)
    output_mean: float | None = Field(default=None, gt=0)
    output_std: float | None = Field(default=None, ge=0)
    prompt_mean: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> TrafficPrior:
        if (self.output_mean is None) != (self.output_std is None):
            raise ValueError("output_mean and output_std go together")
        return self


class AuthConfig(_Strict):
    """Bearer keys. No ``api_keys``: inference is open. No ``admin_key``: ``/admin/*`` is open."""

    api_keys: tuple[str, ...] = ()
    admin_key: str | None = Field(default=None, min_length=1)


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(default=1 << 20, ge=256, description="larger bodies get 413")
    ended_requests_kept: int = Field(
        default=10_000, ge=1,
        description="ended requests kept for GET /v1/requests/{id} (older ones answer 404); bounds the "
                    "gateway's memory")


class EmulatedSettings(_Strict):
    """The embedded emulated cluster (no ``runtime``): ``default_emulated_engines()``."""

    speed: float = Field(default=1.0, gt=0, description="time compression of the emulators")
    seed: int = 0
    subprocess: bool = Field(default=False, description="run emulators as processes")


class WindowRule(_Strict):
    """Batches whose completion window is at most ``max_window_s`` (wall seconds) run in ``slo_class``."""

    max_window_s: float = Field(gt=0)
    slo_class: str = Field(min_length=1)


class BatchSettings(_Strict):
    """The Batch API (``/v1/files``, ``/v1/batches``). Off (503 ``batch_disabled``) unless
    ``data_dir`` or ``database_url`` says where its state lives.

    ``window_classes``: completion window -> SLO class, the first rule whose ``max_window_s`` is
    at least the window. Empty (the default): the loosest class other than the default class
    whose TTFT target fits in the window (converted to control-plane seconds), else the tightest
    such class; with the default classes, a window under 1 h runs in ``batch-1``, 1 h or more
    in ``batch-2``. A batch's deadline is always ``created_at + window`` (``expires_at``)."""

    data_dir: Path | None = Field(default=None, description="directory of the SQLite database")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL, e.g. PostgreSQL")
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="largest upload (413 beyond)")
    max_requests_per_batch: int = Field(default=50_000, ge=1)
    window_classes: tuple[WindowRule, ...] = ()
    max_concurrency: int = Field(default=256, ge=1, description="batch requests in the global queue at once")
    poll_interval_s: float = Field(default=0.5, gt=0, description="runner idle poll period")
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"

    @property
    def enabled(self) -> bool:
        return self.data_dir is not None or self.database_url is not None

    def store_config(self) -> BatchConfig:
        """The storage layer's config (validated; touches no file)."""
        extra: dict[str, Any] = {} if self.data_dir is None else {"data_dir": self.data_dir}
        return BatchConfig(database_url=self.database_url, max_file_bytes=self.max_file_bytes,
                           max_requests_per_batch=self.max_requests_per_batch,
                           sqlite_synchronous=self.sqlite_synchronous, **extra)


class GatewayConfig(_Strict):
    """The whole gateway. Cross-field rules: ``default_class``, ``service_tiers`` targets,
    ``admission`` keys and downgrade targets must name configured classes."""

    slo_classes: tuple[SLOClass, ...] = Field(default=DEFAULT_SLO_CLASSES, min_length=1)
    default_class: str | None = Field(default=None, description="default: the first class")
    service_tiers: dict[str, str] = Field(
        default_factory=dict,
        description="OpenAI service_tier -> class; defaults: priority -> tightest, "
        "default/auto -> default_class, flex -> loosest")
    admission: dict[str, AdmissionRule] = Field(default_factory=dict)
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    policy: str = "qlm"
    policy_params: dict[str, Any] = Field(default_factory=dict)
    expected_traffic: dict[str, dict[str, TrafficPrior]] = Field(
        default_factory=dict, description="the estimator's priors per model and SLO class")
    runtime: RuntimeConfig | None = None
    emulated: EmulatedSettings = EmulatedSettings()
    batch: BatchSettings = BatchSettings()

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        from qlm.policies import registry

        if v not in registry.available():
            raise ValueError(f"unknown policy {v!r}; known: {', '.join(registry.available())}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        names = [c.name for c in self.slo_classes]
        if len(set(names)) != len(names):
            raise ValueError(f"slo_classes: a class appears twice in {names}")
        known = set(names)
        if self.default_class is not None and self.default_class not in known:
            raise ValueError(f"default_class: unknown class {self.default_class!r}; known: {names}")
        for tier, cls in self.service_tiers.items():
            if cls not in known:
                raise ValueError(f"service_tiers.{tier}: unknown class {cls!r}; known: {names}")
        for cls, rule in self.admission.items():
            if cls not in known:
                raise ValueError(f"admission.{cls}: unknown class; known: {names}")
            if rule.target is not None and (rule.target not in known or rule.target == cls):
                raise ValueError(f"admission.{cls}.action: cannot downgrade to {rule.target!r}; "
                                 f"known: {names}")
        for model, by_class in self.expected_traffic.items():
            for cls in by_class:
                if cls not in known:
                    raise ValueError(f"expected_traffic.{model}.{cls}: unknown class; known: {names}")
        for i, w in enumerate(self.batch.window_classes):
            if w.slo_class not in known:
                raise ValueError(f"batch.window_classes.{i}.slo_class: unknown class {w.slo_class!r}; "
                                 f"known: {names}")
        return self

    # ---- derived ------------------------------------------------------------------------
    @property
    def classes(self) -> dict[str, SLOClass]:
        return {c.name: c for c in self.slo_classes}

    @property
    def default(self) -> str:
        return self.default_class or self.slo_classes[0].name

    def tiers(self) -> dict[str, str]:
        """``service_tier`` -> class, the configured mapping over the defaults."""
        by_ttft = sorted(self.slo_classes, key=lambda c: (c.ttft_s, c.name))
        out = {"priority": by_ttft[0].name, "default": self.default, "auto": self.default,
               "flex": by_ttft[-1].name}
        out.update(self.service_tiers)
        return out

    def rule(self, slo_class: str) -> AdmissionRule:
        return self.admission.get(slo_class, AdmissionRule())

    def batch_class(self, window_s: float, speed: float = 1.0) -> str:
        """The SLO class of a batch with a completion window of ``window_s`` wall seconds
        (``speed``: control-plane seconds per wall second). See :class:`BatchSettings`."""
        for w in self.batch.window_classes:
            if window_s <= w.max_window_s:
                return w.slo_class
        if self.batch.window_classes:
            raise ValueError(f"no batch.window_classes rule covers a window of {window_s:g} s")
        pool = [c for c in self.slo_classes if c.name != self.default] or list(self.slo_classes)
        fits = [c for c in pool if c.ttft_s <= window_s * speed]
        if fits:
            return max(fits, key=lambda c: (c.ttft_s, c.name)).name
        return min(pool, key=lambda c: (c.ttft_s, c.name)).name


def parse_gateway_config(raw: Any, source: str = "gateway config") -> GatewayConfig:
    """Validate a raw mapping (None: all defaults); errors are one line naming the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "a gateway config must be a mapping")
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(source, exc) from None

def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML gateway config."""
    return parse_gateway_config(read_yaml(path), str(path))
