"""Fixtures of the gateway tests: one served gateway per module (emulated cluster at 20x)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.api.gateway_helpers import API_KEY, ServedGateway, gateway_config


@pytest.fixture(scope="module")
def served() -> Iterator[ServedGateway]:
    with ServedGateway(gateway_config()) as s:
        yield s


@pytest.fixture(scope="module")
def sdk(served: ServedGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base}/v1", api_key=API_KEY, max_retries=0, timeout=30)
