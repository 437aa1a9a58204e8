"""Hardware and model specifications: validated data, no I/O."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

GB = 1e9


class Spec(BaseModel):
    """Base for immutable, strictly validated specification records."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class GPUType(Spec):
    """One GPU model: memory, bandwidth and dense BF16 compute."""

    name: str
    memory_gb: float = Field(gt=0)
    mem_bandwidth_gbps: float = Field(gt=0, description="HBM/GDDR bandwidth, GB/s")
    bf16_tflops: float = Field(gt=0, description="dense BF16 tensor TFLOP/s")
    pcie_gbps: float = Field(default=20.0, gt=0, description="host<->device copy rate, GB/s")
    compute_efficiency: float | None = Field(
        default=None, gt=0, le=1, description="override of the catalogue's fitted MFU"
    )
    source: str = ""


class ModelSpec(Spec):
    """One servable LLM: weights and KV-cache footprint."""

    name: str
    params_b: float = Field(gt=0, description="parameters, billions")
    weights_gb: float = Field(gt=0, description="BF16 weights, GB")
    kv_bytes_per_token: int = Field(gt=0, description="KV cache bytes per token, all layers")
    num_layers: int = Field(gt=0)
    max_model_len: int = Field(default=8192, gt=0)
    source: str = ""


class NodeSpec(Spec):
    """A host: its GPUs and the CPU RAM that holds sleeping models' weights."""

    name: str
    gpu: str
    num_gpus: int = Field(ge=1)
    cpu_ram_gb: float = Field(gt=0, description="RAM available for sleep-level-1 weight offload")
    disk_gbps: float = Field(default=2.0, gt=0, description="checkpoint read rate for cold loads")


class InstanceSpec(Spec):
    """A set of GPUs on one node running one engine (one awake model at a time).

    ``models`` are the models this instance may serve (one vLLM process each, all but one
    asleep when ``sleep_mode`` is on). ``initial_model`` is awake at time zero.
    """

    id: str
    node: str
    gpu: str
    tp: int = Field(default=1, ge=1)
    models: tuple[str, ...]
    initial_model: str | None = None
    sleep_mode: bool = True

    @model_validator(mode="after")
    def _initial_is_served(self) -> InstanceSpec:
        if not self.models:
            raise ValueError(f"instance {self.id!r} serves no model")
        if self.initial_model is not None and self.initial_model not in self.models:
            raise ValueError(
                f"initial_model {self.initial_model!r} is not among models {list(self.models)}"
            )
        return self
