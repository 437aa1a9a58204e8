"""Fixtures of the Batch API tests: a manual clock, a config in tmp_path, an open store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qlm.api.batch import BatchConfig, BatchStore
from tests.api.batch.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config(tmp_path: Path) -> BatchConfig:
    return BatchConfig(data_dir=tmp_path / "data", max_file_bytes=64 * 1024, max_requests_per_batch=100)


@pytest.fixture
def store(config: BatchConfig, clock: Clock) -> Iterator[BatchStore]:
    with BatchStore(config, now=clock) as s:
        yield s
