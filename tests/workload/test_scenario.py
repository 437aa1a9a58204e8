"""Scenario loading and its one-line errors."""

from pathlib import Path

import pytest

from qlm.errors import ConfigError
from qlm.perf import default_catalog
from qlm.workload.cluster import build_cluster
from qlm.workload.generator import generate, stream_counts
from qlm.workload.scenario import BUILTIN_SCENARIOS, load_scenario


@pytest.mark.parametrize("name", BUILTIN_SCENARIOS)
def test_builtin_scenarios_load_and_build(name: str) -> None:
    sc = load_scenario(name)
    cluster = build_cluster(sc, default_catalog())
    assert cluster.instances
    assert all(i.initial_model in i.models for i in cluster.instances)


@pytest.mark.parametrize("name", ["wa", "wb", "wc"])
def test_paper_scale(name: str) -> None:
    sc = load_scenario(name)
    cluster = build_cluster(sc, default_catalog())
    gpus = {g: sum(i.tp for i in cluster.instances if i.gpu == g) for g in ("A10", "A100-80G")}
    assert gpus == {"A10": 30, "A100-80G": 50}
    assert sum(stream_counts(sc)) == 3500


def test_seventy_b_only_on_large_gpus() -> None:
    cluster = build_cluster(load_scenario("wb"), default_catalog())
    for inst in cluster.instances:
        if "llama-70b" in inst.models:
            assert inst.gpu == "A100-80G" and inst.tp == 4


def test_generate_is_sorted_and_seeded() -> None:
    sc = load_scenario("small")
    w = generate(sc, seed=1)
    times = [t.request.arrival_s for t in w]
    assert times == sorted(times)
    assert [t.output_tokens for t in generate(sc, seed=1)] == [t.output_tokens for t in w]


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return str(p)


GOOD = """
name: t
cluster:
  pools:
    - {name: p, gpu: A100-80G, nodes: 1, models: [mistral-7b]}
workload:
  streams:
    - {model: mistral-7b, slo_class: interactive, count: 5}
"""


@pytest.mark.parametrize(
    "edit, field, reason",
    [
        (("nodes: 1", "nodes: 0"), "cluster.pools.0.nodes", "greater than or equal to 1"),
        (("count: 5", "count: five"), "workload.streams.0.count", "valid integer"),
        (("slo_class: interactive", "slo_class: gold"), "", "'gold' not in"),
        (("models: [mistral-7b]}", "models: [mistral-7b], colour: red}"), "cluster.pools.0.colour", "Extra inputs"),
        (("count: 5", "count: 5, lengths: tiny"), "workload.streams.0", "unknown length preset"),
    ],
)
def test_bad_scenario_one_line_error(tmp_path: Path, edit: tuple[str, str], field: str, reason: str) -> None:
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as exc:
        load_scenario(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(path)
    assert field in msg and reason in msg


def test_unknown_gpu_and_unfit_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster.pools.0.gpu: unknown GPU type 'B300'"):
        sc = load_scenario(_write(tmp_path, GOOD.replace("A100-80G", "B300")))
        build_cluster(sc, default_catalog())
    bad = GOOD.replace("gpu: A100-80G", "gpu: A10").replace("mistral-7b", "llama-70b")
    with pytest.raises(ConfigError, match="none of .* fits 1 x A10"):
        build_cluster(load_scenario(_write(tmp_path, bad)), default_catalog())


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_scenario(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="no such scenario file"):
        load_scenario(str(tmp_path / "nope.yaml"))


def test_declared_traffic_and_the_gateway_priors() -> None:
    # two steady interactive streams (5 + 2 req/s) and a batch burst: interactive's rate is
    # their sum, batch has none (a burst is not steady traffic); lengths are the streams' own
    from qlm.bench.local import traffic_priors
    from tests.factories import scenario

    sc = scenario(workload={"streams": [
        {"model": "mistral-7b", "slo_class": "interactive", "count": 5, "arrival": {"kind": "poisson", "rate": 5.0}},
        {"model": "mistral-7b", "slo_class": "interactive", "count": 5, "arrival": {"kind": "poisson", "rate": 2.0}},
        {"model": "mistral-7b", "slo_class": "batch-2", "count": 5, "arrival": {"kind": "burst", "start_s": 1},
         "lengths": "report"},
    ]})
    t = sc.workload.declared_traffic()
    assert list(t) == [("mistral-7b", "interactive"), ("mistral-7b", "batch-2")]
    assert t[("mistral-7b", "interactive")].rate == 7.0 and t[("mistral-7b", "batch-2")].rate is None
    report = sc.workload.streams[2].length_spec
    assert t[("mistral-7b", "batch-2")].output_mean == report.output_mean
    # sent 10x faster, the gateway expects 70 requests per wall second; no rate for the burst
    pri = traffic_priors(sc, speed=10.0)["mistral-7b"]
    assert pri["interactive"]["rate"] == 70.0 and "rate" not in pri["batch-2"]
    assert pri["batch-2"]["output_mean"] == report.output_mean
