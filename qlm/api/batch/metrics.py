"""Prometheus view of the Batch API, read from the store when ``/metrics`` is scraped.

- ``qlm_batches{status}``: batches by batch status (validating, in_progress, ..., completed);
- ``qlm_batch_requests{status}``: batch requests by request status, summed over all batches:
  ``pending`` (no result yet), ``completed`` (2xx) and ``failed`` (anything else, including
  ``batch_expired`` and ``batch_cancelled``). The same numbers as the batches' ``request_counts``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qlm.api.batch.records import BatchStatus
from qlm.api.batch.store import BatchStore

__all__ = ["BatchCollector"]

log = logging.getLogger(__name__)


class BatchCollector(Collector):
    """Register on a ``CollectorRegistry``; reads ``store`` at every scrape (one aggregate query)."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            totals = self.store.request_totals()
        except Exception:  # a scrape must not fail because the database is briefly unavailable
            log.exception("batch metrics: cannot read the store")
            return
        batches = GaugeMetricFamily("qlm_batches", "Batches by status", labels=["status"])
        for status in BatchStatus:
            batches.add_metric([status.value], totals.get(status.value, {}).get("batches", 0))
        yield batches
        requests = GaugeMetricFamily("qlm_batch_requests", "Batch requests by status (pending, completed, failed)",
                                     labels=["status"])
        completed = sum(t["completed"] for t in totals.values())
        failed = sum(t["failed"] for t in totals.values())
        total = sum(t["total"] for t in totals.values())
        requests.add_metric(["pending"], total - completed - failed)
        requests.add_metric(["completed"], completed)
        requests.add_metric(["failed"], failed)
        yield requests
