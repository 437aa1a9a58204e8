"""``/metrics`` of the emulator: vLLM V1 metric names and labels, read from the core at scrape
time (labels ``model_name`` and ``engine="0"``; counters exposed with ``_total``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from qlm.runtime.emulator.core import SLEEP_STATES, EmulatorCore, Histogram

LABELS = ["model_name", "engine"]


def _hist(name: str, doc: str, h: Histogram, labels: list[str]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=LABELS)
    buckets = [(repr(float(b)), float(c)) for b, c in zip(h.buckets, h.counts, strict=True)]
    buckets.append(("+Inf", float(h.total)))
    fam.add_metric(labels, buckets, sum_value=h.sum)
    return fam


class EmulatorCollector(Collector):
    """Prometheus collector over one :class:`EmulatorCore`."""

    def __init__(self, core: EmulatorCore) -> None:
        self.core = core

    def collect(self) -> Iterator[Metric]:
        core = self.core
        lv = [core.cfg.served_model, "0"]
        stats = core.engine.stats()
        for name, doc, val in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.",
             stats.num_running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
             stats.num_waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
             stats.kv_usage),
        ):
            g = GaugeMetricFamily(name, doc, labels=LABELS)
            g.add_metric(lv, float(val))
            yield g
        g = GaugeMetricFamily("vllm:engine_sleep_state", "Engine sleep state.",
                              labels=[*LABELS, "sleep_state"])
        for state in SLEEP_STATES:
            g.add_metric([*lv, state], 1.0 if core.sleep_state == state else 0.0)
        yield g
        for name, doc, val in (
            ("vllm:num_preemptions", "Cumulative number of preemptions.", stats.preemptions_total),
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", stats.prompt_tokens_total),
            ("vllm:generation_tokens", "Number of generation tokens processed.",
             stats.generation_tokens_total),
        ):
            c = CounterMetricFamily(name, doc, labels=LABELS)
            c.add_metric(lv, float(val))
            yield c
        c = CounterMetricFamily("vllm:request_success", "Count of successfully processed requests.",
                                labels=[*LABELS, "finished_reason"])
        for reason, n in sorted(core.counters.success.items()):
            c.add_metric([*lv, reason], float(n))
        yield c
        k = core.counters
        yield _hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                    k.ttft, lv)
        yield _hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                    k.e2e, lv)
        yield _hist("vllm:request_queue_time_seconds",
                    "Histogram of time spent in WAITING phase for request.", k.queue, lv)
        yield _hist("vllm:request_time_per_output_token_seconds",
                    "Histogram of time_per_output_token_seconds per request.", k.tpot, lv)


def render_metrics(core: EmulatorCore) -> bytes:
    """Prometheus text exposition of ``core``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EmulatorCollector(core))
    return generate_latest(reg)
