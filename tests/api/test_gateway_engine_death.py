"""An engine dying mid-stream gives the client a clean SSE error event; then 503 (no engine)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from qlm.api.config import parse_gateway_config
from qlm.runtime.launcher import EmulatedEngineSpec, EmulatedLauncher
from tests.api.gateway_helpers import ServedGateway


@pytest.fixture(scope="module")
def solo() -> Iterator[ServedGateway]:
    cfg = parse_gateway_config({"policy": "edf", "emulated": {"speed": 5.0}})
    with ServedGateway(cfg, [EmulatedEngineSpec("solo", "A100-80G", ("mistral-7b",))]) as s:
        yield s


def test_engine_death_mid_stream_then_503(solo: ServedGateway) -> None:
    body = {"model": "mistral-7b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000,
            "stream": True}
    events: list[str] = []
    with httpx.stream("POST", f"{solo.base}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 2:
                    launcher = solo.gateway.launcher
                    assert isinstance(launcher, EmulatedLauncher)
                    solo.call(launcher.kill("solo"))
        # the stream ends cleanly: an error event, then [DONE]
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == 503
    deadline = time.monotonic() + 10  # the health probe marks the engine down
    while httpx.get(f"{solo.base}/ready").status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{solo.base}/ready").status_code == 503
    r2 = httpx.post(f"{solo.base}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
    assert r2.status_code == 503 and r2.json()["error"]["type"] == "service_unavailable"
