"""Measure the step-time model's terms on a GPU with random-weight Llama-shaped models.

The catalogue (``qlm/perf/profiles.yaml``) models one vLLM iteration with P prefill tokens,
B decode sequences and C context tokens as

    T(P, B, C) = T_lin(P + B) + C * kv_bytes_per_token / (tp * kv_read_efficiency * BW) + t_cpu

``measure`` (runs on the GPU machine with only torch + the standard library) builds each model
shape below as a bf16 decoder with random weights (embedding; per layer RMSNorm, fused QKV
projection (+ bias for Qwen2.5), attention, O projection, RMSNorm, fused gate/up projection,
SiLU*mul, down projection, residual adds; final norm; LM head over each sequence's last token)
and measures, timing with CUDA events (``time.perf_counter`` on the CPU) over enough calls for
each repetition to last ~50 ms, after a warm-up; each point keeps the median of 5 repetitions
(3 when one lasts over 0.1 s) and their min/max:

- ``t_lin``: whole-model step time over n tokens with the attention kernel left out (its
  output is the query projection), n = 1 .. 8192. n <= 512 are decode-like (n sequences of one
  token, LM head over n rows) and replayed from a CUDA graph, as vLLM does for decode batches;
  n > 512 are one prefill sequence (LM head over one row), run eagerly. Unlike Vidur's
  ``mlp.csv`` (the A100/H100 anchors), this includes the LM head.
- ``attention``: decode attention of B sequences against L context tokens each, for B in
  {1, 8, 32, 128} x L in {256, ..., 16384} (points whose one-layer K+V exceed 8 GB skipped):
  a CUDA graph of ``num_layers`` one-layer calls (times ``passes``, divided out) on K/V
  buffers rotated over >= 256 MB so that reads come from HBM, not L2, as between a real
  model's layers; least-squares slope of that whole-model time vs C = B*L (seconds per
  context token), its intercept, and the implied kv_read_efficiency. Two formulations:
  ``sdpa_gqa`` (SDPA with ``enable_gqa``; the backend SDPA picks is recorded) and ``packed``
  (the query heads of one KV head laid out as SDPA's query-length axis, as decode kernels
  treat GQA; measured only for GQA models).
- ``steps``: whole steps with real attention (one causal prefill of P tokens plus B decodes
  of context L; graphed when P + B <= 512), to check T_lin(P+B) + slope*C against.
- ``ceilings``: a device-to-device copy (GB/s, bytes read + written) and an 8192^3 bf16
  matmul (TFLOP/s), eager.

The JSON (torch/CUDA versions, device, date, command, shapes, parameter counts, memory) is
rewritten after each model, so a run cut off keeps the finished ones. The default run (four
models) took 86 s and 75 s on one H200 (experiments/results/gpu_step_times_h200*.json).

``fit`` (runs where ``qlm`` is installed) compares a measurement with the catalogue's profile
for a GPU (``--roofline``: with the roofline the catalogue uses where it has no anchors), fits the
roofline efficiencies, prints a profiles.yaml ``anchors:`` entry at ``--knots`` and, with
``--compare``, the run-to-run differences from a second measurement.

What this is not: PyTorch's kernels (cuBLAS GEMMs, unfused RMSNorm/residual/SiLU, SDPA
attention over contiguous K/V), not vLLM's fused kernels and paged attention; no rotary
embedding, no KV-cache write, no sampling; no CPU scheduling overhead (t_cpu) and no tensor
parallelism, so llama-70b (141 GB of bf16 weights) is left out: it does not fit on one GPU.

    python3 experiments/gpu_step_times.py measure --out out/h200.json [--models a,b] [--quick]
        [--device cuda] [--parts ceilings,attn,lin,steps]
    python experiments/gpu_step_times.py fit out/h200.json --gpu H200 [--yaml] [--knots 1,8,32,...]
        [--roofline] [--compare out/h200_run2.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SCRIPT = "experiments/gpu_step_times.py"
SCHEMA = 1
BF16_BYTES = 2
GB = 1e9

# [START shapes]


@dataclass(frozen=True)
class Shape:
    """A Llama-family decoder's dimensions, as in its Hugging Face config.json."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    qkv_bias: bool = False
    tied_embeddings: bool = False
    rms_eps: float = 1e-5
    source: str = ""

    @property
    def q_size(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def qkv_size(self) -> int:
        return self.q_size + 2 * self.kv_size

    def layer_params(self) -> int:
        """Parameters of one decoder layer (two norms, QKV(+bias), O, gate/up, down)."""
        qkv = self.hidden * self.qkv_size + (self.qkv_size if self.qkv_bias else 0)
        o = self.q_size * self.hidden
        mlp = 3 * self.hidden * self.intermediate
        return 2 * self.hidden + qkv + o + mlp

    def params(self) -> int:
        """All parameters: embedding, layers, final norm and (untied) LM head."""
        embed = self.vocab * self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return embed + self.layers * self.layer_params() + self.hidden + head

    def weight_bytes(self) -> int:
        return self.params() * BF16_BYTES

    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers, bf16."""
        return self.layers * self.kv_size * 2 * BF16_BYTES


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("llama-3-8b", 4096, 14336, 32, 32, 8, 128, 128256,
              source="meta-llama/Meta-Llama-3-8B config.json (hidden_size 4096, intermediate_size 14336, "
                     "32 layers, 32 heads, 8 KV heads, vocab 128256, untied, rms_norm_eps 1e-5)"),
        Shape("mistral-7b", 4096, 14336, 32, 32, 8, 128, 32000,
              source="mistralai/Mistral-7B-v0.1 config.json (4096, 14336, 32 layers, 32 heads, 8 KV heads, "
                     "vocab 32000, untied, rms_norm_eps 1e-5)"),
        Shape("qwen2.5-7b", 3584, 18944, 28, 28, 4, 128, 152064, qkv_bias=True, rms_eps=1e-6,
              source="Qwen/Qwen2.5-7B config.json (3584, 18944, 28 layers, 28 heads, 4 KV heads, vocab 152064, "
                     "tie_word_embeddings false, rms_norm_eps 1e-6; Qwen2 has a QKV bias)"),
        Shape("vicuna-13b", 5120, 13824, 40, 40, 40, 128, 32000,
              source="lmsys/vicuna-13b-v1.5 config.json = Llama-2-13B (5120, 13824, 40 layers, 40 heads, "
                     "40 KV heads, vocab 32000, untied, rms_norm_eps 1e-5)"),
    )
}


def tiny(shape: Shape) -> Shape:
    """A few-kilobyte stand-in with the same structure (GQA or not, bias) for smoke tests."""
    kv = 4 if shape.kv_heads == shape.heads else 2
    return replace(shape, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=kv, head_dim=16, vocab=256)


# [END shapes]
# [START settings]


@dataclass(frozen=True)
class Settings:
    """What to measure and how long to spend on each point."""

    lin_n: tuple[int, ...]
    attn_b: tuple[int, ...]
    attn_l: tuple[int, ...]
    steps: tuple[tuple[int, int, int], ...]  # (P, B, L)
    graph_max: int = 512  # largest CUDA-graphed batch (vLLM's default capture sizes end at 512)
    target_rep_s: float = 0.05  # one repetition: enough replays to last about this long
    reps: int = 5
    reps_long: int = 3  # when one repetition takes over long_s
    long_s: float = 0.1
    max_iters: int = 200
    kv_cap_bytes: float = 8e9  # skip points whose one-layer K+V exceed this
    rotate_bytes: float = 256e6  # rotate K/V copies until this many bytes, so reads miss L2
    copy_bytes: int = 4 << 30
    matmul_n: int = 8192


FULL = Settings(
    lin_n=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
    attn_b=(1, 8, 32, 128),
    attn_l=(256, 1024, 4096, 16384),
    steps=((0, 1, 1024), (0, 32, 1024), (0, 128, 2048), (512, 0, 0), (2048, 0, 0),
           (512, 32, 1024), (2048, 64, 2048)),
)
QUICK = Settings(
    lin_n=(1, 4, 16, 64),
    attn_b=(1, 4),
    attn_l=(16, 64),
    steps=((0, 1, 16), (0, 4, 64), (32, 0, 0), (16, 4, 16)),
    graph_max=16,
    target_rep_s=0.002,
    reps=2,
    reps_long=2,
    max_iters=3,
    rotate_bytes=0.0,
    copy_bytes=1 << 20,
    matmul_n=128,
)
ANCHOR_N = (1, 32, 128, 512, 2048, 8192)
MEASURED_TAG = "[measured: random-weight Llama-shaped model in PyTorch bf16, CUDA graphs; PyTorch kernels, not vLLM's]"

# [END settings]
# [START fit math]  (pure Python: no torch, no qlm)


def interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear through (xs, ys), flat below xs[0], extended linearly beyond xs[-1]
    (the arithmetic of ``EngineProfile.t_lin``)."""
    if x <= xs[0]:
        return ys[0]
    j = len(xs) - 2 if x >= xs[-1] else max(i for i in range(len(xs) - 1) if xs[i] <= x)
    return ys[j] + (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (x - xs[j])


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Ordinary least squares y = slope*x + intercept; returns (slope, intercept, r^2)."""
    n = len(xs)
    if n < 2:
        raise ValueError(f"least squares needs at least two points, got {n}")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("least squares needs at least two distinct x values")
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, intercept, (1.0 - ss_res / ss_tot) if ss_tot > 0 else 1.0


def mem_efficiency(weight_bytes: float, bw_gbps: float, t1_s: float) -> float:
    """mem_eff with T_lin(1) = weights / (BW * mem_eff)."""
    return weight_bytes / (bw_gbps * GB * t1_s)


def compute_efficiency(params: float, peak_tflops: float, n_a: float, t_a: float, n_b: float, t_b: float) -> float:
    """compute_eff from the large-n slope: (2*params*(n_b - n_a)) / ((t_b - t_a) * peak)."""
    return 2 * params * (n_b - n_a) / ((t_b - t_a) * peak_tflops * 1e12)


def kv_efficiency(kv_bytes_per_token: float, slope_s_per_token: float, bw_gbps: float) -> float:
    """kv_read_efficiency = kv_bytes_per_token / (slope * BW)."""
    return kv_bytes_per_token / (slope_s_per_token * bw_gbps * GB)


def t_lin_table(entry: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Measured (n, median seconds) knots of a model entry, sorted by n."""
    pts = sorted((p["n"], p["median_s"]) for p in entry.get("t_lin", []) if p.get("median_s"))
    return [float(n) for n, _ in pts], [t for _, t in pts]


def kv_fit(points: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Least-squares fit of whole-model decode attention time against C = B*L, or None."""
    pts = [(p["C"], p["model_s"]) for p in points if p.get("model_s")]
    if len({c for c, _ in pts}) < 2:
        return None
    slope, intercept, r2 = least_squares([c for c, _ in pts], [t for _, t in pts])
    return {"slope_s_per_token": slope, "intercept_s": intercept, "r2": r2, "points": len(pts)}


def formula_step(lin_n: Sequence[float], lin_t: Sequence[float], slope: float, p: int, b: int, l_ctx: int) -> float:
    """The catalogue's formula without t_cpu: T_lin(P + B) + slope * B * L."""
    return interp(lin_n, lin_t, p + b) + slope * b * l_ctx


def validate(entry: dict[str, Any], variant: str = "sdpa_gqa") -> list[dict[str, Any]]:
    """Formula vs measured whole step for each step point of a model entry (empty if unfitted)."""
    lin_n, lin_t = t_lin_table(entry)
    fit = (entry.get("attention", {}).get(variant) or {}).get("fit")
    if len(lin_n) < 2 or not fit:
        return []
    rows = []
    for s in entry.get("steps", []):
        if not s.get("median_s"):
            continue
        pred = formula_step(lin_n, lin_t, fit["slope_s_per_token"], s["P"], s["B"], s["L"])
        with_icpt = pred + (fit["intercept_s"] if s["B"] > 0 else 0.0)
        rows.append({"P": s["P"], "B": s["B"], "L": s["L"], "measured_s": s["median_s"], "formula_s": pred,
                     "error": pred / s["median_s"] - 1, "formula_with_intercept_s": with_icpt,
                     "error_with_intercept": with_icpt / s["median_s"] - 1})
    return rows


def ms_str(t_ms: float) -> str:
    """An anchor value in ms to three significant figures or so: two decimals below 10 ms, one above."""
    return f"{t_ms:.2f}" if round(t_ms, 2) < 10 else f"{t_ms:.1f}"


def anchor_yaml(model: str, gpu: str, points_ms: dict[int, float], source: str) -> str:
    """One profiles.yaml ``anchors:`` list item (ms, formatted by ``ms_str``)."""
    pts = ", ".join(f"{n}: {ms_str(t)}" for n, t in sorted(points_ms.items()))
    return (f"  - model: {model}\n    gpu: {gpu}\n    tp: 1\n    points: {{{pts}}}\n"
            f"    source: {json.dumps(source)}\n")


def parse_knots(text: str) -> tuple[int, ...]:
    """``--knots 1,8,32`` -> (1, 8, 32): distinct positive integers, sorted."""
    try:
        knots = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise SystemExit(f"gpu_step_times: --knots takes comma-separated token counts, got {text!r}") from None
    if len(knots) < 2 or knots[0] < 1:
        raise SystemExit(f"gpu_step_times: --knots needs at least two token counts >= 1, got {text!r}")
    return tuple(knots)


def compare_runs(doc: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Run-to-run agreement, ``other / doc - 1``, of every quantity both measurements hold:
    ceilings, T_lin per n, the sdpa_gqa KV slope and the whole steps per (P, B, L)."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return b / a - 1 if a and b else None

    ca, cb = doc.get("ceilings") or {}, other.get("ceilings") or {}
    out: dict[str, Any] = {"ceilings": {k: ratio(ca.get(k), cb.get(k)) for k in ("copy_gbps", "matmul_tflops")},
                           "models": {}}
    for name, ea in doc["models"].items():
        eb = other["models"].get(name)
        if not eb:
            continue
        la, lb = (dict(zip(*t_lin_table(e), strict=True)) for e in (ea, eb))
        fa, fb = ((e.get("attention", {}).get("sdpa_gqa") or {}).get("fit") or {} for e in (ea, eb))
        sa, sb = ({(s["P"], s["B"], s["L"]): s.get("median_s") for s in e.get("steps", [])} for e in (ea, eb))
        out["models"][name] = {
            "t_lin": {n: ratio(la[n], lb[n]) for n in la if n in lb},
            "kv_slope": ratio(fa.get("slope_s_per_token"), fb.get("slope_s_per_token")),
            "steps": {k: ratio(sa[k], sb[k]) for k in sa if k in sb and ratio(sa[k], sb[k]) is not None},
        }
    return out


def anchor_source(doc: dict[str, Any], results: Path | str) -> str:
    """The ``source:`` string of an anchor measured by this script, whose output is ``results``."""
    return f"{SCRIPT} on {doc['device']}, {doc['date'][:10]}, torch {doc['torch']}; {results} {MEASURED_TAG}"


# [END fit math]
# [START measuring]  (torch imported lazily: the shape table and the fit math work without it)


@dataclass
class _Weights:
    """A random-weight model on the device (tensors)."""

    shape: Shape
    embed: torch.Tensor
    layers: list[dict[str, torch.Tensor]]
    final_norm: torch.Tensor
    lm_head: torch.Tensor


def _rand(*size: int, device: torch.device) -> torch.Tensor:
    import torch

    return torch.empty(size, dtype=torch.bfloat16, device=device).normal_(0.0, 0.02)


def build_model(shape: Shape, device: torch.device) -> _Weights:
    """Allocate ``shape``'s weights on ``device`` (bf16, N(0, 0.02); norms are ones)."""
    import torch

    h, layers = shape.hidden, []
    for _ in range(shape.layers):
        w = {
            "norm1": torch.ones(h, dtype=torch.bfloat16, device=device),
            "qkv": _rand(shape.qkv_size, h, device=device),
            "o": _rand(h, shape.q_size, device=device),
            "norm2": torch.ones(h, dtype=torch.bfloat16, device=device),
            "gate_up": _rand(2 * shape.intermediate, h, device=device),
            "down": _rand(h, shape.intermediate, device=device),
        }
        if shape.qkv_bias:
            w["qkv_bias"] = _rand(shape.qkv_size, device=device)
        layers.append(w)
    embed = _rand(shape.vocab, h, device=device)
    head = embed if shape.tied_embeddings else _rand(shape.vocab, h, device=device)
    return _Weights(shape, embed, layers, torch.ones(h, dtype=torch.bfloat16, device=device), head)


@dataclass
class _Attn:
    """Real attention for a step: causal prefill of ``p`` tokens, then ``b`` decodes over ``kv``."""

    p: int
    b: int
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # rotated [b, kv_heads, L, head_dim] copies


def forward(m: _Weights, ids: torch.Tensor, last: torch.Tensor, attn: _Attn | None) -> torch.Tensor:
    """Logits of rows ``last``; with ``attn`` None the attention kernel is skipped (its output
    is the query projection itself), which is what T_lin measures."""
    import torch
    import torch.nn.functional as F

    s = m.shape
    eps, hd, nh, nkv = s.rms_eps, s.head_dim, s.heads, s.kv_heads
    gqa = nh != nkv
    x = F.embedding(ids, m.embed)
    for i, w in enumerate(m.layers):
        y = F.rms_norm(x, (s.hidden,), w["norm1"], eps)
        qkv = F.linear(y, w["qkv"], w.get("qkv_bias"))
        q = qkv[:, : s.q_size]
        if attn is None:
            a = q
        else:
            k = qkv[:, s.q_size : s.q_size + s.kv_size]
            v = qkv[:, s.q_size + s.kv_size :]
            outs = []
            if attn.p:
                p = attn.p
                qp = q[:p].view(p, nh, hd).transpose(0, 1).unsqueeze(0)
                kp = k[:p].view(p, nkv, hd).transpose(0, 1).unsqueeze(0)
                vp = v[:p].view(p, nkv, hd).transpose(0, 1).unsqueeze(0)
                op = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=gqa)
                outs.append(op[0].transpose(0, 1).reshape(p, s.q_size))
            if attn.b:
                kc, vc = attn.kv[i % len(attn.kv)]
                qd = q[attn.p :].view(attn.b, nh, 1, hd)
                od = F.scaled_dot_product_attention(qd, kc, vc, enable_gqa=gqa)
                outs.append(od.reshape(attn.b, s.q_size))
            a = outs[0] if len(outs) == 1 else torch.cat(outs)
        x = x + F.linear(a, w["o"])
        y = F.rms_norm(x, (s.hidden,), w["norm2"], eps)
        gate, up = F.linear(y, w["gate_up"]).split(s.intermediate, dim=-1)
        x = x + F.linear(F.silu(gate) * up, w["down"])
    x = F.rms_norm(x.index_select(0, last), (s.hidden,), m.final_norm, eps)
    return F.linear(x, m.lm_head)


class _Runner:
    """``fn`` as a replayable CUDA graph on CUDA (eager on CPU, or when capture fails)."""

    def __init__(self, fn: Callable[[], object], device: torch.device, graph: bool, log: Callable[[str], None]) -> None:
        import torch

        self.fn, self.mode, self._graph, self._out = fn, "eager", None, None
        if not graph or device.type != "cuda":
            return
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self._out = fn()
            self._graph, self.mode = g, "graph"
        except RuntimeError as exc:  # keep going eagerly: one failed capture must not end the run
            torch.cuda.synchronize()
            self.mode = f"eager (graph capture failed: {str(exc).splitlines()[0][:100]})"
            log(f"    ! {self.mode}")

    def __call__(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            self.fn()


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds_per_call(fn: Callable[[], object], iters: int, device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def time_point(fn: Callable[[], object], device: torch.device, cfg: Settings) -> dict[str, Any]:
    """Median/min/max seconds per call over repetitions of ``iters`` calls, after a warm-up.

    ``iters`` is chosen so that a repetition lasts about ``cfg.target_rep_s``.
    """
    fn()
    _sync(device)
    est = _seconds_per_call(fn, 1, device)
    iters = max(1, min(cfg.max_iters, round(cfg.target_rep_s / max(est, 1e-9))))
    reps = cfg.reps_long if est * iters > cfg.long_s else cfg.reps
    samples = [_seconds_per_call(fn, iters, device) for _ in range(reps)]
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "reps": reps, "iters": iters}


def _sdpa_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, gqa: bool) -> str:
    """The backend SDPA's dispatcher picks for these inputs (private API: 'unknown' if absent)."""
    import torch
    from torch.nn.attention import SDPBackend

    try:
        idx = int(torch._fused_sdp_choice(q, k, v, None, 0.0, causal, scale=None, enable_gqa=gqa))
    except (AttributeError, RuntimeError, TypeError) as exc:
        return f"unknown ({type(exc).__name__})"
    names = {int(b.value): name for name, b in SDPBackend.__members__.items()}
    return names.get(idx, str(idx))


def _sdpa_backends_ok(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gqa: bool) -> dict[str, str]:
    """For each SDPA backend alone: 'ok' or the first line of why it refused these inputs."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = {}
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with sdpa_kernel([SDPBackend.__members__[name]]):
                    F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
            out[name] = "ok"
        except RuntimeError as exc:
            out[name] = str(exc).splitlines()[0][:120]
    return out


def _kv_copies(b: int, l_ctx: int, shape: Shape, device: torch.device, n: int, seed: int,
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` random one-layer K/V pairs, each [b, kv_heads, L, head_dim]."""
    import torch

    torch.manual_seed(seed)
    return [(_rand(b, shape.kv_heads, l_ctx, shape.head_dim, device=device),
             _rand(b, shape.kv_heads, l_ctx, shape.head_dim, device=device)) for _ in range(n)]


def _rotation(per_layer_bytes: int, layers: int, rotate_bytes: float) -> tuple[int, int]:
    """(copies, passes): a graph of ``passes * layers`` calls cycling through ``copies`` K/V
    buffers touches at least ``rotate_bytes`` (or one buffer per call), so no call reads K/V
    left in L2 by the previous replay; the whole-model time is the graph time / ``passes``."""
    need = max(1, math.ceil(rotate_bytes / per_layer_bytes))
    if need <= layers:
        return need, 1
    passes = math.ceil(need / layers)
    return passes * layers, passes


def measure_attention(shape: Shape, variant: str, device: torch.device, cfg: Settings,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """Decode attention per (B, L), whole model (``num_layers`` one-layer calls, K/V rotated past
    L2, see ``_rotation``); least-squares fit of that time vs C = B*L. Times in the points are
    per whole model (``median_s`` = ``model_s``); ``layer_s`` = ``model_s / num_layers``."""
    import torch
    import torch.nn.functional as F

    group = shape.heads // shape.kv_heads
    gqa = variant == "sdpa_gqa" and group > 1
    res: dict[str, Any] = {"variant": variant, "points": [], "skipped": []}
    for b in cfg.attn_b:
        line = []
        for l_ctx in cfg.attn_l:
            per_layer = 2 * b * shape.kv_size * l_ctx * BF16_BYTES
            if per_layer > cfg.kv_cap_bytes:
                res["skipped"].append({"B": b, "L": l_ctx, "kv_gb": per_layer / GB, "why": "K+V over the cap"})
                line.append(f"L={l_ctx}: skip")
                continue
            try:
                copies, passes = _rotation(per_layer, shape.layers, cfg.rotate_bytes)
                kv = _kv_copies(b, l_ctx, shape, device, copies, seed=b * 100003 + l_ctx)
                if variant == "sdpa_gqa":
                    q = _rand(b, shape.heads, 1, shape.head_dim, device=device)
                else:  # packed: the group's query heads as the query-length axis
                    q = _rand(b, shape.kv_heads, group, shape.head_dim, device=device)
                if "backend" not in res:
                    res["backend"] = _sdpa_backend(q, kv[0][0], kv[0][1], False, gqa)
                    res["backends_ok"] = _sdpa_backends_ok(q, kv[0][0], kv[0][1], gqa)

                def call(q: torch.Tensor = q, kv: list[tuple[torch.Tensor, torch.Tensor]] = kv,
                         calls: int = passes * shape.layers) -> list[torch.Tensor]:
                    return [F.scaled_dot_product_attention(q, kv[i % len(kv)][0], kv[i % len(kv)][1], enable_gqa=gqa)
                            for i in range(calls)]

                runner = _Runner(call, device, True, log)
                t = time_point(runner, device, cfg)
                per_model = {k: t[k] / passes for k in ("median_s", "min_s", "max_s")}
                res["points"].append({"B": b, "L": l_ctx, "C": b * l_ctx, "kv_gb": per_layer / GB,
                                      "copies": copies, "passes": passes, "mode": runner.mode,
                                      "model_s": per_model["median_s"],
                                      "layer_s": per_model["median_s"] / shape.layers,
                                      **t, **per_model})
                line.append(f"L={l_ctx}: {per_model['median_s'] * 1e3:.3f}")
                del runner, kv, q
            except RuntimeError as exc:  # OOM or an unsupported kernel: record and go on
                res["skipped"].append({"B": b, "L": l_ctx, "kv_gb": per_layer / GB, "why": str(exc).splitlines()[0]})
                line.append(f"L={l_ctx}: error")
                log(f"    ! attention {variant} B={b} L={l_ctx}: {str(exc).splitlines()[0][:150]}")
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        log(f"  attention {variant} B={b} (ms, whole model): " + ", ".join(line))
    res["fit"] = kv_fit(res["points"])
    return res


def measure_lin(m: _Weights, device: torch.device, cfg: Settings, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """T_lin(n) for each n of the grid (attention kernel left out)."""
    import torch

    out = []
    for n in cfg.lin_n:
        decode_like = n <= cfg.graph_max
        torch.manual_seed(n)
        ids = torch.randint(0, m.shape.vocab, (n,), device=device)
        last = torch.arange(n, device=device) if decode_like else torch.tensor([n - 1], device=device)
        try:
            runner = _Runner(partial(forward, m, ids, last, None), device, decode_like, log)
            t = time_point(runner, device, cfg)
            out.append({"n": n, "mode": runner.mode, "lm_head_rows": int(last.numel()), **t})
            log(f"  T_lin n={n:5d} {runner.mode:5s} {t['median_s'] * 1e3:9.3f} ms "
                f"({t['min_s'] * 1e3:.3f}-{t['max_s'] * 1e3:.3f}, {t['reps']}x{t['iters']})")
            del runner
        except RuntimeError as exc:
            out.append({"n": n, "error": str(exc).splitlines()[0]})
            log(f"    ! T_lin n={n}: {str(exc).splitlines()[0][:150]}")
        gc.collect()
    return out


def measure_steps(m: _Weights, device: torch.device, cfg: Settings, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Whole steps with real attention: causal prefill of P tokens + B decodes of context L."""
    import torch

    s, out = m.shape, []
    for p, b, l_ctx in cfg.steps:
        n = p + b
        row: dict[str, Any] = {"P": p, "B": b, "L": l_ctx, "C": b * l_ctx, "n": n}
        per_layer = 2 * b * s.kv_size * l_ctx * BF16_BYTES
        if per_layer > cfg.kv_cap_bytes:
            out.append({**row, "error": f"one layer's K+V {per_layer / GB:.1f} GB over the cap"})
            continue
        try:
            torch.manual_seed(n * 7 + l_ctx)
            ids = torch.randint(0, s.vocab, (n,), device=device)
            last = torch.tensor(([p - 1] if p else []) + list(range(p, n)), device=device)
            # one K/V buffer for all layers: the next layer's weights (hundreds of MB) evict it from L2
            attn = _Attn(p, b, _kv_copies(b, l_ctx, s, device, 1, seed=n + l_ctx) if b else [])
            if p:
                qp = _rand(1, s.heads, p, s.head_dim, device=device)
                kp = _rand(1, s.kv_heads, p, s.head_dim, device=device)
                row["prefill_backend"] = _sdpa_backend(qp, kp, kp, True, s.heads != s.kv_heads)
                del qp, kp
            runner = _Runner(partial(forward, m, ids, last, attn), device, n <= cfg.graph_max, log)
            t = time_point(runner, device, cfg)
            out.append({**row, "mode": runner.mode, "kv_copies": len(attn.kv), **t})
            log(f"  step P={p:4d} B={b:3d} L={l_ctx:5d} {runner.mode:5s} {t['median_s'] * 1e3:9.3f} ms "
                f"({t['min_s'] * 1e3:.3f}-{t['max_s'] * 1e3:.3f})")
            del runner, attn
        except RuntimeError as exc:
            out.append({**row, "error": str(exc).splitlines()[0]})
            log(f"    ! step P={p} B={b} L={l_ctx}: {str(exc).splitlines()[0][:150]}")
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def measure_ceilings(device: torch.device, cfg: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Device-to-device copy rate (read + write) and a square bf16 matmul's rate."""
    import torch

    torch.manual_seed(0)
    elems = cfg.copy_bytes // BF16_BYTES
    src = _rand(elems, device=device)
    dst = torch.empty_like(src)
    copy = partial(dst.copy_, src)
    t = time_point(copy, device, cfg)
    copy_gbps = 2 * cfg.copy_bytes / t["median_s"] / GB
    del src, dst, copy
    n = cfg.matmul_n
    a, b = _rand(n, n, device=device), _rand(n, n, device=device)
    c = torch.empty_like(a)
    matmul = partial(torch.mm, a, b, out=c)
    tm = time_point(matmul, device, cfg)
    tflops = 2 * n**3 / tm["median_s"] / 1e12
    del a, b, c, matmul
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log(f"ceilings: copy {copy_gbps:.0f} GB/s (read+write of {cfg.copy_bytes / GB:.2f} GB), "
        f"matmul {n}^3 bf16 {tflops:.0f} TFLOP/s")
    return {"copy_gbps": copy_gbps, "copy_bytes": cfg.copy_bytes, "copy": t,
            "matmul_tflops": tflops, "matmul_n": n, "matmul": tm}


def _mem(device: torch.device) -> dict[str, float]:
    import torch

    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {"free_gb": free / GB, "total_gb": total / GB}


def _mem_line(mem: dict[str, float]) -> str:
    return f"{mem['free_gb']:.1f} of {mem['total_gb']:.1f} GB free" if mem else "host memory"


def _write(doc: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def measure(names: list[str], out: Path, quick: bool, device_name: str, parts: set[str],
            argv: Sequence[str]) -> dict[str, Any]:
    """Run the measurements, writing ``out`` after each model; returns the document."""
    import torch

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_step_times: CUDA is not available here; use --device cpu (with --quick)")
    cfg = QUICK if quick else FULL
    torch.manual_seed(0)
    doc: dict[str, Any] = {
        "schema": SCHEMA, "script": SCRIPT,
        "command": "python3 " + shlex.join([SCRIPT, *argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "device_capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
        "python": platform.python_version(), "quick": quick, "parts": sorted(parts),
        "settings": asdict(cfg), "memory": _mem(device), "ceilings": None, "models": {},
    }
    log(f"torch {doc['torch']} cuda {doc['cuda']} on {doc['device']}; models {', '.join(names)}"
        + (" (quick: tiny shapes)" if quick else ""))
    with torch.inference_mode():
        if "ceilings" in parts:
            try:
                doc["ceilings"] = measure_ceilings(device, cfg, log)
            except RuntimeError as exc:
                doc["ceilings_error"] = str(exc).splitlines()[0]
                log(f"    ! ceilings: {doc['ceilings_error'][:150]}")
            _write(doc, out)
        copy_gbps = (doc["ceilings"] or {}).get("copy_gbps")
        for name in names:
            shape = tiny(SHAPES[name]) if quick else SHAPES[name]
            tm = time.perf_counter()
            entry: dict[str, Any] = {"shape": asdict(shape), "params": shape.params(),
                                     "weight_bytes": shape.weight_bytes(),
                                     "kv_bytes_per_token": shape.kv_bytes_per_token(),
                                     "memory_before": _mem(device), "attention": {}}
            doc["models"][name] = entry
            log(f"{name}: {shape.params() / 1e9:.3f} B params, {shape.weight_bytes() / GB:.2f} GB, "
                f"{shape.kv_bytes_per_token()} KV bytes/token; {_mem_line(entry['memory_before'])}")
            if "attn" in parts:
                for variant in ("sdpa_gqa", "packed"):
                    if variant == "packed" and shape.heads == shape.kv_heads:
                        entry["attention"][variant] = {"variant": variant, "same_as": "sdpa_gqa (no GQA)"}
                        continue
                    a = measure_attention(shape, variant, device, cfg, log)
                    fit = a["fit"]
                    if fit and copy_gbps:
                        fit["kv_read_efficiency_measured_bw"] = kv_efficiency(
                            shape.kv_bytes_per_token(), fit["slope_s_per_token"], copy_gbps)
                    entry["attention"][variant] = a
                    if fit:
                        log(f"  attention {variant} [{a.get('backend')}]: {fit['slope_s_per_token'] * 1e9:.4f} ns/token"
                            f" + {fit['intercept_s'] * 1e3:.3f} ms (r2 {fit['r2']:.4f})")
            if parts & {"lin", "steps"}:
                torch.manual_seed(1)
                try:
                    m = build_model(shape, device)
                except RuntimeError as exc:  # e.g. out of memory on a smaller GPU: go on to the next model
                    entry["error"] = f"build: {str(exc).splitlines()[0]}"
                    log(f"    ! {name}: {entry['error'][:150]}")
                else:
                    entry["memory_loaded"] = _mem(device)
                    if "lin" in parts:
                        entry["t_lin"] = measure_lin(m, device, cfg, log)
                    if "steps" in parts:
                        entry["steps"] = measure_steps(m, device, cfg, log)
                    del m
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            entry["memory_after"] = _mem(device)
            entry["validation"] = validate(entry)
            entry["elapsed_s"] = time.perf_counter() - tm
            _write(doc, out)
            log(f"{name} done in {entry['elapsed_s']:.1f} s, {_mem_line(entry['memory_after'])} after freeing it; "
                f"wrote {out}")
    doc["elapsed_s"] = time.perf_counter() - t0
    _write(doc, out)
    print(summary_table(doc), flush=True)
    return doc


def summary_table(doc: dict[str, Any]) -> str:
    """A short fixed-width table: T_lin at the anchor n, KV slope, efficiencies, validation."""
    head = ["model"] + [f"T_lin({n})" for n in ANCHOR_N] + ["KV ns/tok", "kv_eff*", "max |err|"]
    rows = [head]
    copy = (doc.get("ceilings") or {}).get("copy_gbps")
    for name, e in doc["models"].items():
        lin = {p["n"]: p["median_s"] for p in e.get("t_lin", []) if p.get("median_s")}
        fit = (e.get("attention", {}).get("sdpa_gqa") or {}).get("fit")
        errs = [abs(v["error"]) for v in e.get("validation", [])]
        rows.append([name] + [f"{lin[n] * 1e3:.2f}" if n in lin else "-" for n in ANCHOR_N]
                    + [f"{fit['slope_s_per_token'] * 1e9:.4f}" if fit else "-",
                       f"{kv_efficiency(e['kv_bytes_per_token'], fit['slope_s_per_token'], copy):.2f}"
                       if fit and copy else "-",
                       f"{max(errs):.1%}" if errs else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    return ("\nT_lin in ms (no attention); KV = sdpa_gqa decode slope; *vs the measured copy rate; "
            "err = T_lin(P+B) + slope*C vs measured whole step\n" + "\n".join(lines))


# [END measuring]
# [START fit]


def analyse(entry: dict[str, Any], bw_gbps: float, peak_tflops: float, copy_gbps: float | None,
            matmul_tflops: float | None) -> dict[str, Any]:
    """Efficiencies of one measured model against datasheet (and measured) ceilings."""
    lin_n, lin_t = t_lin_table(entry)
    out: dict[str, Any] = {"t_lin": dict(zip(lin_n, lin_t, strict=True))}
    if lin_n and lin_n[0] == 1:
        out["mem_eff"] = mem_efficiency(entry["weight_bytes"], bw_gbps, lin_t[0])
        if copy_gbps:
            out["mem_eff_measured_bw"] = mem_efficiency(entry["weight_bytes"], copy_gbps, lin_t[0])
    if len(lin_n) >= 2 and lin_n[-1] > lin_n[-2] and lin_t[-1] > lin_t[-2]:
        args = (lin_n[-2], lin_t[-2], lin_n[-1], lin_t[-1])
        out["compute_eff"] = compute_efficiency(entry["params"], peak_tflops, *args)
        out["compute_eff_between"] = [lin_n[-2], lin_n[-1]]
        if matmul_tflops:
            out["compute_eff_measured_matmul"] = compute_efficiency(entry["params"], matmul_tflops, *args)
    out["kv"] = {}
    for variant, a in entry.get("attention", {}).items():
        fit = a.get("fit")
        if fit:
            kv_eff = kv_efficiency(entry["kv_bytes_per_token"], fit["slope_s_per_token"], bw_gbps)
            out["kv"][variant] = {**fit, "backend": a.get("backend"), "kv_eff": kv_eff}
            if copy_gbps:
                out["kv"][variant]["kv_eff_measured_bw"] = kv_efficiency(
                    entry["kv_bytes_per_token"], fit["slope_s_per_token"], copy_gbps)
    out["validation"] = validate(entry)
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"gpu_step_times: cannot read {path}: {exc}") from None
    return doc


def fit(path: Path, gpu: str, yaml_out: bool, knots: Sequence[int] = ANCHOR_N, roofline: bool = False,
        compare: Path | None = None) -> dict[str, Any]:
    """Compare a ``measure`` JSON with the catalogue's profiles on ``gpu``; print the report.

    ``knots``: the anchors' n (each must be measured); ``roofline``: compare with the profile the
    catalogue builds without its anchors for ``gpu`` (the estimate a measurement replaces);
    ``compare``: a second measurement of the same GPU, reported as ``other / this - 1``.
    """
    from qlm.perf import build_profile, default_catalog

    doc = _read(path)
    other = _read(compare) if compare else None
    cat = default_catalog()
    if gpu not in cat.gpus:
        raise SystemExit(f"gpu_step_times: unknown GPU {gpu!r}; known: {', '.join(sorted(cat.gpus))}")
    if roofline:
        cat = cat.model_copy(update={"anchors": tuple(a for a in cat.anchors if a.gpu != gpu)})
    g, eng = cat.gpus[gpu], cat.engine
    ceil = doc.get("ceilings") or {}
    copy, mm = ceil.get("copy_gbps"), ceil.get("matmul_tflops")
    p = print
    p(f"{path}: {doc['device']}, torch {doc['torch']}, {doc['date']}; compared with catalogue GPU {gpu} "
      f"({g.mem_bandwidth_gbps:g} GB/s, {g.bf16_tflops:g} TFLOP/s)")
    if copy and mm:
        p(f"measured ceilings: copy {copy:.0f} GB/s ({copy / g.mem_bandwidth_gbps:.2f} of datasheet), "
          f"matmul {mm:.0f} TFLOP/s ({mm / g.bf16_tflops:.2f} of datasheet)")
    if doc.get("quick"):
        p("note: a --quick run (tiny shapes): the catalogue comparison is meaningless")
    report: dict[str, Any] = {"gpu": gpu, "models": {}}
    anchors = []
    for name, entry in doc["models"].items():
        r = analyse(entry, g.mem_bandwidth_gbps, g.bf16_tflops, copy, mm)
        report["models"][name] = r
        p(f"\n{name}: {entry['params'] / 1e9:.3f} B params, {entry['weight_bytes'] / GB:.2f} GB")
        prof = None
        if name in cat.models and not doc.get("quick"):
            prof = build_profile(name, gpu, 1, cat)
            r["catalogue"] = {"source": prof.source, "kv_s_per_token": prof.kv_s_per_token,
                              "t_lin": {n: prof.t_lin(n) for n in r["t_lin"]}}
            p(f"  catalogue profile: {prof.source}")
        p("  n       measured ms   catalogue ms   measured/catalogue")
        for n, t in r["t_lin"].items():
            c = prof.t_lin(n) if prof else None
            p(f"  {int(n):<6d}  {t * 1e3:11.3f}   " + (f"{c * 1e3:12.3f}   {t / c:18.3f}" if c else "-"))
        if "mem_eff" in r:
            p(f"  mem_eff = weights / (BW * T_lin(1)) = {r['mem_eff']:.3f} vs datasheet (catalogue "
              f"{eng.mem_efficiency}); {r.get('mem_eff_measured_bw', float('nan')):.3f} vs measured copy")
        if "compute_eff" in r:
            a_, b_ = r["compute_eff_between"]
            p(f"  compute_eff = 2*params*dn / (dT * peak), n {int(a_)}->{int(b_)}: {r['compute_eff']:.3f} vs datasheet "
              f"(catalogue {g.compute_efficiency or eng.compute_efficiency}); "
              f"{r.get('compute_eff_measured_matmul', float('nan')):.3f} vs measured matmul")
        for variant, k in r["kv"].items():
            ratio = f", measured/catalogue {k['slope_s_per_token'] / prof.kv_s_per_token:.3f}" if prof else ""
            p(f"  KV {variant} [{k['backend']}]: {k['slope_s_per_token'] * 1e9:.4f} ns/token + "
              f"{k['intercept_s'] * 1e3:.3f} ms (r2 {k['r2']:.4f}); kv_read_efficiency {k['kv_eff']:.3f} vs datasheet "
              f"(catalogue {eng.kv_read_efficiency}), {k.get('kv_eff_measured_bw', float('nan')):.3f} vs measured copy"
              + (f"; catalogue {prof.kv_s_per_token * 1e9:.4f} ns/token{ratio}" if prof else ""))
        if r["validation"]:
            p("  validation, T_lin(P+B) + sdpa_gqa slope * C vs measured step:")
            p(f"  {'P':>5s} {'B':>4s} {'L':>5s} {'measured ms':>11s} {'formula ms':>11s} {'error':>7s} "
              f"{'+intercept':>10s}")
            for v in r["validation"]:
                p(f"  {v['P']:5d} {v['B']:4d} {v['L']:5d} {v['measured_s'] * 1e3:11.3f} {v['formula_s'] * 1e3:11.3f} "
                  f"{v['error']:+7.1%} {v['error_with_intercept']:+10.1%}")
        pts = {int(n): r["t_lin"][float(n)] * 1e3 for n in knots if float(n) in r["t_lin"]}
        missing = [n for n in knots if n not in pts]
        if tuple(knots) != ANCHOR_N and missing and not doc.get("quick"):
            raise SystemExit(f"gpu_step_times: {name} has no T_lin at --knots {missing}; "
                             f"measured: {[int(n) for n in r['t_lin']]}")
        if len(pts) >= 2 and not doc.get("quick"):
            anchors.append(anchor_yaml(name, gpu, pts, anchor_source(doc, path)))
    report["anchors_yaml"] = "anchors:\n" + "".join(anchors)
    if other is not None:
        report["compare"] = _print_comparison(compare_runs(doc, other), doc, other, compare)
    if yaml_out and not anchors:
        p("\nno anchors: a --quick run, or no model has two of the anchor points " + str(tuple(knots)))
    elif yaml_out:
        p("\n# profiles.yaml anchors (T_lin in ms; includes the LM head: over every row for n <= "
          f"{doc.get('settings', {}).get('graph_max', '?')}, over the last row above)")
        p(report["anchors_yaml"], end="")
    return report


def _print_comparison(cmp: dict[str, Any], doc: dict[str, Any], other: dict[str, Any],
                      other_path: Path | None) -> dict[str, Any]:
    """Print ``compare_runs``' result as a table (one column per model); returns it."""
    def pct(x: float | None) -> str:
        return f"{x:+.1%}" if x is not None else "-"

    p = print
    p(f"\nrun-to-run: {other_path} ({other['device']}, {other['date']}) vs this run ({doc['date']}): "
      "other / this - 1")
    c = cmp["ceilings"]
    p(f"  ceilings: copy {pct(c['copy_gbps'])}, matmul {pct(c['matmul_tflops'])}")
    names = list(cmp["models"])
    if not names:
        return cmp
    ns = sorted({n for m in cmp["models"].values() for n in m["t_lin"]})
    keys = sorted({k for m in cmp["models"].values() for k in m["steps"]})
    rows: list[tuple[str, list[float | None]]] = [("T_lin n", [])]
    rows += [(f"  {int(n)}", [cmp["models"][m]["t_lin"].get(n) for m in names]) for n in ns]
    rows.append(("KV slope", [cmp["models"][m]["kv_slope"] for m in names]))
    rows += [(f"step {k[0]}/{k[1]}/{k[2]}", [cmp["models"][m]["steps"].get(k) for m in names]) for k in keys]
    lw, w = max(len(r[0]) for r in rows), max(10, *(len(n) for n in names))
    for label, vals in rows:
        p("  " + label.ljust(lw) + "".join((pct(v) if vals else m).rjust(w + 2)
                                           for v, m in zip(vals or [None] * len(names), names, strict=True)))
    allv = [abs(v) for m in cmp["models"].values() for v in [*m["t_lin"].values(), *m["steps"].values(),
                                                             m["kv_slope"]] if v is not None]
    p(f"  (step P/B/L; largest |difference| over all of these: {max(allv):.1%})" if allv else "")
    return cmp


# [END fit]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the measured or fitted document."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog=SCRIPT, description=__doc__.splitlines()[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="measure on a GPU (needs torch only)")
    m.add_argument("--out", type=Path, required=True, help="JSON output (rewritten after each model)")
    m.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, from: {', '.join(SHAPES)}")
    m.add_argument("--quick", action="store_true", help="tiny shapes and few repetitions (smoke test)")
    m.add_argument("--device", default="cuda", help="torch device (default cuda)")
    m.add_argument("--parts", default="ceilings,attn,lin,steps", help="subset of ceilings,attn,lin,steps")
    f = sub.add_parser("fit", help="compare a measurement with the catalogue (needs qlm)")
    f.add_argument("path", type=Path)
    f.add_argument("--gpu", default="H200", help="catalogue GPU the measurement stands for (default H200)")
    f.add_argument("--yaml", action="store_true", help="print a profiles.yaml anchors entry")
    f.add_argument("--knots", default=",".join(map(str, ANCHOR_N)),
                   help="comma-separated n of the anchors' points, each measured (default %(default)s)")
    f.add_argument("--roofline", action="store_true",
                   help="compare with the catalogue's roofline for the GPU (its anchors there left out)")
    f.add_argument("--compare", type=Path, metavar="OTHER_JSON",
                   help="a second measurement: print its run-to-run differences from this one")
    args = ap.parse_args(args_list)
    if args.cmd == "fit":
        return fit(args.path, args.gpu, args.yaml, parse_knots(args.knots), args.roofline, args.compare)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown or not names:
        raise SystemExit(f"gpu_step_times: unknown model {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(SHAPES)}")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    bad = parts - {"ceilings", "attn", "lin", "steps"}
    if bad or not parts:
        raise SystemExit(f"gpu_step_times: unknown part {', '.join(sorted(bad)) or '(none given)'}; "
                         "known: ceilings, attn, lin, steps")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return measure(names, args.out, args.quick, args.device, parts, args_list)


if __name__ == "__main__":
    main()
