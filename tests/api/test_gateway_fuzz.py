"""A bounded schemathesis fuzz of the gateway's OpenAPI schema: never a 5xx, errors in OpenAI's
shape (skipped without schemathesis)."""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from qlm.api.app import create_app  # noqa: E402
from tests.api.gateway_helpers import ADMIN_KEY, API_KEY, ServedGateway, gateway_config  # noqa: E402

schema = schemathesis.openapi.from_dict(create_app(gateway_config()).openapi())


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_5xx_and_openai_error_shape(case: Any, served: ServedGateway) -> None:
    key = ADMIN_KEY if case.path.startswith("/admin") else API_KEY
    resp = case.call(base_url=served.base, headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert resp.status_code < 500, f"{case.method} {case.path}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code >= 400:
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
