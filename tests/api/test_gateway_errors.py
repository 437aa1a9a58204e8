"""Bad input never costs a 5xx, and errors have OpenAI's shape; auth; operations endpoints."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import openai
import pytest

from qlm.domain.request import RequestState
from tests.api.gateway_helpers import ADMIN_KEY, API_KEY, ServedGateway

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MSG = [{"role": "user", "content": "hi"}]


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return dict(err)


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "nope", "messages": MSG}, 404, "model"),
    ({"model": "mistral-7b", "messages": MSG, "slo_class": "gold"}, 400, "slo_class"),
    ({"model": "mistral-7b", "messages": MSG, "service_tier": "platinum"}, 400, "service_tier"),
    ({"model": "mistral-7b", "messages": MSG, "max_tokens": "5"}, 400, "max_tokens"),
    ({"model": "mistral-7b", "messages": MSG, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "mistral-7b", "messages": "hi"}, 400, "messages"),
    ({"model": "mistral-7b", "messages": []}, 400, "messages"),
    ({"model": "mistral-7b", "messages": MSG, "stream": "yes"}, 400, "stream"),
    ({"model": "mistral-7b", "messages": MSG, "n": 2}, 400, "n"),
    ({"model": "mistral-7b", "messages": MSG, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"model": "llama-3-8b", "messages": MSG, "max_tokens": 100_000}, 400, "max_tokens"),
    ({"messages": MSG}, 400, "model"),
])
def test_bad_chat_bodies(served: ServedGateway, body: dict[str, Any], status: int, param: str) -> None:
    r = httpx.post(f"{served.base}/v1/chat/completions", json=body, headers=AUTH)
    assert _error(r, status)["param"] == param


def test_unknown_class_header_and_bad_completion_prompt(served: ServedGateway) -> None:
    r = httpx.post(f"{served.base}/v1/chat/completions", json={"model": "mistral-7b", "messages": MSG},
                   headers={**AUTH, "X-QLM-SLO-Class": "gold"})
    _error(r, 400)
    r = httpx.post(f"{served.base}/v1/completions", json={"model": "mistral-7b", "prompt": ["a", "b"]}, headers=AUTH)
    _error(r, 400)


def test_malformed_json_non_object_and_oversize(served: ServedGateway) -> None:
    url = f"{served.base}/v1/chat/completions"
    h = {**AUTH, "content-type": "application/json"}
    assert _error(httpx.post(url, content=b"{not json", headers=h), 400)["code"] == "invalid_json"
    _error(httpx.post(url, content=b"[1, 2]", headers=h), 400)
    _error(httpx.post(url, content=b"\xff\xfe", headers=h), 400)
    big = {"model": "mistral-7b", "messages": [{"role": "user", "content": "x" * 70_000}]}
    _error(httpx.post(url, json=big, headers=AUTH), 413)


def test_keys(served: ServedGateway) -> None:
    url = f"{served.base}/v1/chat/completions"
    body = {"model": "mistral-7b", "messages": MSG, "max_tokens": 1}
    assert _error(httpx.post(url, json=body), 401)["type"] == "authentication_error"
    _error(httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}), 401)
    _error(httpx.get(f"{served.base}/v1/models"), 401)
    sdk = openai.OpenAI(base_url=f"{served.base}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()


def test_unknown_route_and_method_keep_the_error_shape(served: ServedGateway) -> None:
    _error(httpx.get(f"{served.base}/v1/nothing"), 404)
    _error(httpx.get(f"{served.base}/v1/chat/completions", headers=AUTH), 405)


def test_health_ready_metrics(served: ServedGateway) -> None:
    httpx.post(f"{served.base}/v1/chat/completions", headers=AUTH,
               json={"model": "mistral-7b", "messages": MSG, "max_tokens": 2}).raise_for_status()
    assert httpx.get(f"{served.base}/health").json() == {"status": "ok"}
    assert httpx.get(f"{served.base}/ready").json()["engines_up"] == 3
    text = httpx.get(f"{served.base}/metrics").text
    for needle in ('qlm_requests_total{model="mistral-7b",outcome="finished",slo_class="interactive"}',
                   'qlm_lso_actions_total{kind="pull"}', 'qlm_ttft_seconds_bucket', 'qlm_queue_time_seconds_count',
                   'qlm_slo_attainment_ratio{slo_class="interactive"}', 'qlm_queue_depth{slo_class="batch-1"} 0.0',
                   'qlm_engine_state{engine="a100-0",state="ready"} 1.0', "qlm_solver_seconds_total",
                   "qlm_event_loop_lag_seconds_bucket", "qlm_gc_pause_seconds"):
        assert needle in text, needle


def test_admin_auth_state_and_weights(served: ServedGateway) -> None:
    _error(httpx.get(f"{served.base}/admin/state"), 401)
    _error(httpx.get(f"{served.base}/admin/state", headers=AUTH), 401)  # an API key is not an admin key
    state = httpx.get(f"{served.base}/admin/state", headers=ADMIN).json()
    assert state["policy"] == "qlm" and {e["id"] for e in state["engines"]} == {"a100-0", "a100-1", "h100-0"}
    assert set(state) >= {"virtual_queues", "groups", "last_plan", "weights"}
    url = f"{served.base}/admin/weights"
    _error(httpx.put(url, json={"swap_penalty": 2.0}), 401)
    _error(httpx.put(url, json={"swap_penalty": -1}, headers=ADMIN), 400)
    _error(httpx.put(url, json={"no_such_knob": 1}, headers=ADMIN), 400)
    _error(httpx.put(url, json={"class_importance": {"gold": 2}}, headers=ADMIN), 400)
    _error(httpx.put(url, content=b"nope", headers=ADMIN), 400)
    r = httpx.put(url, json={"swap_penalty": 2.0, "class_importance": {"interactive": 3.0}}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["weights"]["swap_penalty"] == 2.0
    planner = served.gateway.runtime.control.policy.planner  # type: ignore[attr-defined]
    assert planner.weights.swap_penalty == 2.0 and planner.weights.class_importance == {"interactive": 3.0}
    assert httpx.get(f"{served.base}/admin/state", headers=ADMIN).json()["weights"]["swap_penalty"] == 2.0


def test_client_disconnect_mid_stream_aborts_the_engine_request(served: ServedGateway) -> None:
    body = {"model": "mistral-7b", "messages": MSG, "max_tokens": 5000, "stream": True}
    with httpx.stream("POST", f"{served.base}/v1/chat/completions", json=body, headers=AUTH, timeout=30) as r:
        rid = r.headers["x-qlm-request-id"]
        lines = r.iter_lines()
        next(lines)
        next(lines)
    control = served.gateway.runtime.control
    deadline = time.monotonic() + 10
    while control.requests[rid].state is not RequestState.FAILED and time.monotonic() < deadline:
        time.sleep(0.05)
    req = control.requests[rid]
    assert req.state is RequestState.FAILED and req.generated_tokens < 5000
    assert all(rid not in i.outstanding for i in control.instances.values())


def test_client_gone_before_its_body_is_read(served: ServedGateway, caplog: pytest.LogCaptureFixture) -> None:
    host, port = served.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:  # promises 100 bytes, sends 9
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":".encode())
    time.sleep(0.3)
    assert "inference request failed" not in caplog.text  # nothing submitted, no 500, no traceback
    ok = httpx.post(f"{served.base}/v1/completions", headers=AUTH, json={"model": "mistral-7b", "prompt": "hi",
                                                                         "max_tokens": 2})
    assert ok.status_code == 200
