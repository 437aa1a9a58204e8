"""An engine dying mid-stream gives the client a clean SSE error event; then 503 (no engine)."""

from __future__ import annotations

import json
import threading
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


def test_queued_request_fails_fast_when_every_engine_for_it_dies() -> None:
    # one engine, two models: a long mistral stream keeps it busy, so the qwen request waits in
    # the global queue for the swap (edf drains first); killing the engine must end it with 503
    cfg = parse_gateway_config({"policy": "edf", "emulated": {"speed": 5.0}})
    with ServedGateway(cfg, [EmulatedEngineSpec("duo", "A100-80G", ("mistral-7b", "qwen2.5-7b"))]) as s:
        long = {"model": "mistral-7b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000,
                "stream": True}
        result: dict[str, httpx.Response] = {}

        def queued() -> None:
            result["r"] = httpx.post(f"{s.base}/v1/chat/completions", timeout=30, json={
                "model": "qwen2.5-7b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})

        with httpx.stream("POST", f"{s.base}/v1/chat/completions", json=long, timeout=30) as r:
            assert r.status_code == 200
            next(line for line in r.iter_lines() if line.startswith("data: "))  # the long one runs
            t = threading.Thread(target=queued)
            t.start()
            rt = s.gateway.rt
            assert rt is not None
            deadline = time.monotonic() + 10
            while not any(q.model == "qwen2.5-7b" for q in list(rt.control.queue.values())):
                assert time.monotonic() < deadline and t.is_alive()
                time.sleep(0.02)
            launcher = s.gateway.launcher
            assert isinstance(launcher, EmulatedLauncher)
            s.call(launcher.kill("duo"))
            t.join(15)
        assert not t.is_alive()
        resp = result["r"]
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "no_engine"
