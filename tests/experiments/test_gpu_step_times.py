"""experiments/gpu_step_times.py: the shape table against the catalogue, a CPU smoke run of
``measure --quick`` (skipped without torch, which is not a project dependency) and the fitting
arithmetic on a hand-built measurement."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from experiments import gpu_step_times as gst
from qlm.perf import build_profile, default_catalog, default_profile, parse_catalog

# [START shapes vs catalogue]


@pytest.mark.parametrize("name", sorted(gst.SHAPES))
def test_shape_matches_catalogue(name: str) -> None:
    shape, spec = gst.SHAPES[name], default_catalog().model(name)
    # e.g. llama-3-8b: 128256*4096 (embedding) * 2 (untied LM head) + 32 * 218,112,000 + 4096
    #      = 8,030,261,248 parameters vs params_b 8.03
    assert shape.params() / 1e9 == pytest.approx(spec.params_b, rel=0.02)
    assert shape.weight_bytes() / 1e9 == pytest.approx(spec.weights_gb, rel=0.02)
    # layers * kv_heads * head_dim * 2 (K, V) * 2 bytes, e.g. 28 * 4 * 128 * 2 * 2 = 57344 for qwen2.5-7b
    assert shape.kv_bytes_per_token() == spec.kv_bytes_per_token
    assert shape.layers == spec.num_layers
    assert shape.source


def test_known_parameter_counts() -> None:
    # the published totals of the Hugging Face checkpoints
    assert gst.SHAPES["llama-3-8b"].params() == 8_030_261_248
    assert gst.SHAPES["mistral-7b"].params() == 7_241_732_096
    assert gst.SHAPES["qwen2.5-7b"].params() == 7_615_616_512
    assert gst.SHAPES["vicuna-13b"].params() == 13_015_864_320
    assert "llama-70b" not in gst.SHAPES  # 141 GB of weights: does not fit one GPU


def test_interp_is_the_profiles_arithmetic() -> None:
    prof = default_profile("mistral-7b", "A100-80G", 1)  # an anchored profile
    for n in (0.5, 1, 7, 32, 100, 512, 1000, 2048, 5000):
        assert gst.interp(prof.lin_n, prof.lin_t, n) == pytest.approx(prof.t_lin(n), rel=1e-12)


# [END shapes vs catalogue]
# [START fitting arithmetic]

T_LIN_MS = {1: 4.0, 32: 4.2, 128: 4.6, 512: 9.0, 2048: 50.0, 4096: 100.0, 8192: 190.0}


def _hand_built() -> dict[str, Any]:
    """A measurement of llama-3-8b on an H200 with round numbers."""
    # decode attention: t = 0.1 ms + C * 3.2e-8 s exactly, so the fit recovers both
    attn = [{"B": b, "L": l_ctx, "C": b * l_ctx, "model_s": 1e-4 + 3.2e-8 * b * l_ctx}
            for b, l_ctx in ((1, 1024), (32, 1024), (32, 4096))]
    steps = [{"P": 0, "B": 32, "L": 1024, "median_s": 5.5e-3},
             {"P": 2048, "B": 0, "L": 0, "median_s": 52.5e-3},
             {"P": 512, "B": 32, "L": 1024, "median_s": 11.0e-3}]
    entry = {"params": 8.0e9, "weight_bytes": 16.1e9, "kv_bytes_per_token": 131072,
             "t_lin": [{"n": n, "median_s": t / 1e3} for n, t in T_LIN_MS.items()],
             "attention": {"sdpa_gqa": {"backend": "FLASH_ATTENTION", "points": attn, "fit": gst.kv_fit(attn)}},
             "steps": steps}
    return {"schema": 1, "device": "NVIDIA H200", "torch": "2.11.0+cu130", "date": "2026-12-01T10:00:00+00:00",
            "quick": False, "ceilings": {"copy_gbps": 4000.0, "matmul_tflops": 700.0},
            "models": {"llama-3-8b": entry}}


def test_fit_arithmetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h200.json"
    path.write_text(json.dumps(_hand_built()), encoding="utf-8")
    rep = gst.main(["fit", str(path), "--gpu", "H200", "--yaml"])
    r = rep["models"]["llama-3-8b"]
    # mem_eff = 16.1e9 / (4800e9 * 0.004) = 0.838542; against the measured copy: 16.1e9 / (4000e9 * 0.004) = 1.00625
    assert r["mem_eff"] == pytest.approx(0.838542, rel=1e-5)
    assert r["mem_eff_measured_bw"] == pytest.approx(1.00625)
    # compute_eff from the 4096 -> 8192 slope: 2 * 8e9 * 4096 / (0.090 s * 989e12) = 6.5536e13 / 8.901e13 = 0.736277
    assert r["compute_eff"] == pytest.approx(0.736277, rel=1e-5)
    assert r["compute_eff_between"] == [4096.0, 8192.0]
    # ... and against the measured matmul: 6.5536e13 / (0.090 * 700e12) = 1.040254
    assert r["compute_eff_measured_matmul"] == pytest.approx(1.040254, rel=1e-5)
    kv = r["kv"]["sdpa_gqa"]
    assert kv["slope_s_per_token"] == pytest.approx(3.2e-8)
    assert kv["intercept_s"] == pytest.approx(1e-4)
    assert kv["r2"] == pytest.approx(1.0)
    # kv_read_efficiency = 131072 / (3.2e-8 * 4800e9) = 131072 / 153600 = 0.853333
    # and against the measured copy: 131072 / (3.2e-8 * 4000e9) = 131072 / 128000 = 1.024
    assert kv["kv_eff"] == pytest.approx(0.853333, rel=1e-5)
    assert kv["kv_eff_measured_bw"] == pytest.approx(1.024)
    v = {(x["P"], x["B"]): x for x in r["validation"]}
    # (0, 32, 1024): T_lin(32) + 32*1024 * 3.2e-8 = 4.2 ms + 1.048576 ms = 5.248576 ms vs 5.5 ms -> -4.571%
    assert v[0, 32]["formula_s"] == pytest.approx(5.248576e-3)
    assert v[0, 32]["error"] == pytest.approx(5.248576 / 5.5 - 1)
    # with the 0.1 ms intercept: 5.348576 / 5.5 - 1 = -2.753%
    assert v[0, 32]["error_with_intercept"] == pytest.approx(5.348576 / 5.5 - 1)
    # (2048, 0, 0): T_lin(2048) = 50.0 ms vs 52.5 ms -> -4.762%; no decodes, so no intercept either
    assert v[2048, 0]["error"] == pytest.approx(50.0 / 52.5 - 1)
    assert v[2048, 0]["error_with_intercept"] == v[2048, 0]["error"]
    # (512, 32, 1024): T_lin(544) = 9.0 + (50 - 9) / (2048 - 512) * 32 = 9.854167 ms, + 1.048576 = 10.902743 ms
    assert v[512, 32]["formula_s"] == pytest.approx(10.902743e-3, rel=1e-6)
    # the catalogue side is the packaged profile's own numbers
    prof = default_profile("llama-3-8b", "H200", 1)
    assert r["catalogue"]["t_lin"][32.0] == prof.t_lin(32)
    assert r["catalogue"]["kv_s_per_token"] == prof.kv_s_per_token
    out = capsys.readouterr().out
    assert "mem_eff" in out and "compute_eff" in out and "validation" in out


def test_anchor_yaml_loads_into_the_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "h200.json"
    path.write_text(json.dumps(_hand_built()), encoding="utf-8")
    rep = gst.main(["fit", str(path), "--gpu", "H200"])
    items = yaml.safe_load(rep["anchors_yaml"])["anchors"]
    assert items == [{
        "model": "llama-3-8b", "gpu": "H200", "tp": 1,
        # n = 1, 32, 128, 512, 2048, 8192 in ms (4096 is measured but not a default anchor point)
        "points": {1: 4.0, 32: 4.2, 128: 4.6, 512: 9.0, 2048: 50.0, 8192: 190.0},
        "source": f"experiments/gpu_step_times.py on NVIDIA H200, 2026-12-01, torch 2.11.0+cu130; {path} "
                  + gst.MEASURED_TAG,
    }]
    assert "{1: 4.00, 32: 4.20, 128: 4.60, 512: 9.00, 2048: 50.0, 8192: 190.0}" in rep["anchors_yaml"]
    # pasted into profiles.yaml (replacing any llama-3-8b/H200 row), the catalogue loads and uses it
    text = resources.files("qlm.perf").joinpath("profiles.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    raw["anchors"] = [a for a in raw["anchors"] if (a["model"], a["gpu"]) != ("llama-3-8b", "H200")] + items
    prof = build_profile("llama-3-8b", "H200", 1, parse_catalog(raw, "test"))
    assert prof.t_lin(32) == pytest.approx(4.2e-3)
    assert prof.source == items[0]["source"]


def test_anchor_values_keep_about_three_significant_figures() -> None:
    # two decimals below 10 ms, one from 10 ms up (rounding decides which side 9.996 is on)
    assert [gst.ms_str(t) for t in (4.673, 9.994, 9.996, 13.524, 186.241)] == ["4.67", "9.99", "10.0", "13.5", "186.2"]


def test_fit_knots_roofline_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, other_path = tmp_path / "h200.json", tmp_path / "h200_run2.json"
    doc = _hand_built()
    path.write_text(json.dumps(doc), encoding="utf-8")
    other = json.loads(json.dumps(doc))
    e = other["models"]["llama-3-8b"]
    for pt in e["t_lin"]:
        pt["median_s"] *= 1.01  # every T_lin 1% slower
    e["steps"][1]["median_s"] = 52.5e-3 * 0.98  # the 2048-token prefill 2% faster
    other["ceilings"]["copy_gbps"] = 4040.0
    other_path.write_text(json.dumps(other), encoding="utf-8")
    rep = gst.main(["fit", str(path), "--knots", "4096,1,32", "--roofline", "--compare", str(other_path)])
    items = yaml.safe_load(rep["anchors_yaml"])["anchors"]
    assert items[0]["points"] == {1: 4.0, 32: 4.2, 4096: 100.0}
    # --roofline: the catalogue without its H200 anchors, i.e. the roofline; at one token it is memory-bound:
    # hypot(16.1 GB / (4800 GB/s * 0.81) = 4.140947 ms, 2 * 8.03e9 / (989e12 * 0.72) = 0.022548 ms) = 4.141008 ms
    r = rep["models"]["llama-3-8b"]["catalogue"]
    assert "roofline" in r["source"]
    assert r["t_lin"][1.0] == pytest.approx(4.141008e-3, rel=1e-6)
    assert r["t_lin"][1.0] == pytest.approx(math.hypot(16.1 / (4800 * 0.81), 2 * 8.03e9 / (989e12 * 0.72)))
    # --compare: other / this - 1
    cmp = rep["compare"]
    assert cmp["ceilings"]["copy_gbps"] == pytest.approx(0.01)
    assert cmp["ceilings"]["matmul_tflops"] == pytest.approx(0.0)
    m = cmp["models"]["llama-3-8b"]
    assert all(v == pytest.approx(0.01) for v in m["t_lin"].values()) and len(m["t_lin"]) == len(T_LIN_MS)
    assert m["kv_slope"] == pytest.approx(0.0)
    assert m["steps"][2048, 0, 0] == pytest.approx(-0.02) and m["steps"][0, 32, 1024] == pytest.approx(0.0)
    out = capsys.readouterr().out
    assert "run-to-run" in out and "largest |difference| over all of these: 2.0%" in out
    # without --roofline, the packaged catalogue's H200 row is the measured anchor
    rep = gst.main(["fit", str(path)])
    assert "measured" in rep["models"]["llama-3-8b"]["catalogue"]["source"]
    with pytest.raises(SystemExit, match=r"llama-3-8b has no T_lin at --knots \[64\]; measured: \[1, 32, 128"):
        gst.main(["fit", str(path), "--knots", "1,64"])
    with pytest.raises(SystemExit, match="--knots takes comma-separated token counts"):
        gst.main(["fit", str(path), "--knots", "1,a"])
    with pytest.raises(SystemExit, match="at least two token counts"):
        gst.main(["fit", str(path), "--knots", "32"])


def test_least_squares_and_errors() -> None:
    slope, intercept, r2 = gst.least_squares([0, 1, 2, 3], [1, 3, 5, 7])  # y = 2x + 1
    assert (slope, intercept, r2) == (pytest.approx(2.0), pytest.approx(1.0), pytest.approx(1.0))
    with pytest.raises(ValueError, match="two distinct"):
        gst.least_squares([5, 5], [1, 2])
    assert gst.kv_fit([{"C": 10, "model_s": 1.0}]) is None


def test_kv_rotation_busts_l2() -> None:
    # llama-3-8b, B=1, L=256: one layer's K+V = 2 * 1024 * 256 * 2 bytes = 1,048,576; 256e6 / that = 244.1 -> 245
    # buffers, more than 32 layers, so ceil(245 / 32) = 8 whole-model passes over 8 * 32 = 256 buffers
    assert gst._rotation(1_048_576, 32, 256e6) == (256, 8)
    assert gst._rotation(100_000_000, 32, 256e6) == (3, 1)  # ceil(2.56) buffers cycled over the 32 layers
    assert gst._rotation(2 << 30, 32, 256e6) == (1, 1)  # one buffer larger than the rotation span
    assert gst._rotation(1_000, 2, 0.0) == (1, 1)  # --quick: no rotation


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"unknown model llama-70b; known: llama-3-8b, mistral-7b"):
        gst.main(["measure", "--out", str(tmp_path / "x.json"), "--models", "llama-70b", "--device", "cpu"])
    with pytest.raises(SystemExit, match="unknown part gpu"):
        gst.main(["measure", "--out", str(tmp_path / "x.json"), "--parts", "lin,gpu", "--device", "cpu"])
    path = tmp_path / "h.json"
    path.write_text(json.dumps(_hand_built()), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"unknown GPU 'B300'; known: .*H200"):
        gst.main(["fit", str(path), "--gpu", "B300"])
    with pytest.raises(SystemExit, match="cannot read"):
        gst.main(["fit", str(tmp_path / "missing.json")])


# [END fitting arithmetic]
# [START CPU smoke run]


def test_measure_quick_on_cpu(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "quick.json"
    gst.main(["measure", "--quick", "--device", "cpu", "--models", "qwen2.5-7b,vicuna-13b", "--out", str(out)])
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["quick"] is True and doc["schema"] == gst.SCHEMA
    for key in ("command", "date", "torch", "device", "settings", "ceilings", "models"):
        assert doc[key], key
    assert doc["ceilings"]["copy_gbps"] > 0 and doc["ceilings"]["matmul_tflops"] > 0
    assert list(doc["models"]) == ["qwen2.5-7b", "vicuna-13b"]
    for name, e in doc["models"].items():
        shape = gst.tiny(gst.SHAPES[name])
        assert e["params"] == shape.params() and e["kv_bytes_per_token"] == shape.kv_bytes_per_token()
        timed = e["t_lin"] + e["steps"] + e["attention"]["sdpa_gqa"]["points"]
        assert len(e["t_lin"]) == len(gst.QUICK.lin_n) and len(e["steps"]) == len(gst.QUICK.steps)
        for p in timed:
            assert 0 < p["min_s"] <= p["median_s"] <= p["max_s"], p
            assert p["mode"] == "eager"  # no graphs on the CPU
        assert math.isfinite(e["attention"]["sdpa_gqa"]["fit"]["slope_s_per_token"])
        assert len(e["validation"]) == len(gst.QUICK.steps)
    assert doc["models"]["qwen2.5-7b"]["attention"]["packed"]["points"]
    assert doc["models"]["vicuna-13b"]["attention"]["packed"]["same_as"]
    rep = gst.main(["fit", str(out), "--yaml"])  # a quick run fits without catalogue rows or anchors
    assert "catalogue" not in rep["models"]["qwen2.5-7b"]
    assert rep["anchors_yaml"] == "anchors:\n"


# [END CPU smoke run]
