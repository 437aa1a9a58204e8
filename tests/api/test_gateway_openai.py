"""The official ``openai`` SDK against a served gateway: chat, completions, streaming, models,
SLO classes (extra_body, header, service_tier), admission (reject, downgrade), headers."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.gateway_helpers import API_KEY, ServedGateway, gateway_config

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


def test_chat_non_streamed_has_usage_and_qlm_headers(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="mistral-7b", messages=MSG, max_tokens=6)
    out = raw.parse()
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 6
    assert out.usage.total_tokens == out.usage.prompt_tokens + 6
    assert raw.headers["x-qlm-request-id"] == out.id
    assert raw.headers["x-qlm-slo-class"] == "interactive"
    assert float(raw.headers["x-qlm-estimated-wait-s"]) >= 0
    assert 0 <= float(raw.headers["x-qlm-slo-probability"]) <= 1


def test_completions_non_streamed(sdk: openai.OpenAI) -> None:
    out = sdk.completions.create(model="qwen2.5-7b", prompt="Once upon a time", max_tokens=4)
    assert out.object == "text_completion"
    assert out.choices[0].text
    assert out.usage is not None and out.usage.completion_tokens == 4


def test_chat_streamed_with_final_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="mistral-7b", messages=MSG, max_tokens=8, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 8
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_streamed(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=5, stream=True))
    assert "".join(c.choices[0].text for c in chunks).split() and chunks[-1].choices[0].finish_reason == "length"


def test_models_lists_resident_and_swappable(sdk: openai.OpenAI) -> None:
    assert sorted(m.id for m in sdk.models.list()) == ["llama-3-8b", "mistral-7b", "qwen2.5-7b"]


def test_slo_class_from_extra_body_header_and_service_tier(sdk: openai.OpenAI) -> None:
    def cls(**kw: object) -> str:
        raw = sdk.chat.completions.with_raw_response.create(model="mistral-7b", messages=MSG, max_tokens=2,
                                                            **kw)  # type: ignore[call-overload]
        return str(raw.headers["x-qlm-slo-class"])

    assert cls(extra_body={"slo_class": "batch-1"}) == "batch-1"
    assert cls(extra_headers={"X-QLM-SLO-Class": "batch-2"}) == "batch-2"
    assert cls(extra_body={"slo_class": "batch-1"}, extra_headers={"X-QLM-SLO-Class": "batch-2"}) == "batch-1"
    assert cls(service_tier="flex") == "batch-2"  # the loosest class
    assert cls(service_tier="priority") == "interactive"
    assert cls(service_tier="default") == "interactive"


def test_admission_reject_gives_429_with_retry_after(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="mistral-7b", messages=MSG, max_tokens=2, extra_body={"slo_class": "tight"})
    resp = info.value.response
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.json()["error"]["type"] == "rate_limit_error"


def test_admission_downgrade_serves_in_the_target_class(sdk: openai.OpenAI, served: ServedGateway) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="mistral-7b", messages=MSG, max_tokens=2,
                                                        extra_body={"slo_class": "tight-dg"})
    assert raw.headers["x-qlm-slo-class"] == "batch-2"
    assert raw.headers["x-qlm-requested-class"] == "tight-dg"
    out = raw.parse()
    info = httpx.get(f"{served.base}/v1/requests/{out.id}", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert info["state"] == "finished" and info["slo_class"] == "batch-2"


def test_request_visibility(sdk: openai.OpenAI, served: ServedGateway) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{served.base}/v1/chat/completions", headers=auth, timeout=30,
                      json={"model": "mistral-7b", "messages": MSG, "max_tokens": 2000, "stream": True}) as r:
        rid = r.headers["x-qlm-request-id"]
        lines = r.iter_lines()  # keep the iterator: dropping it closes the connection
        next(lines)
        info = httpx.get(f"{served.base}/v1/requests/{rid}", headers=auth).json()
        assert info["id"] == rid and info["state"] in ("dispatched", "running")
        assert info["instance"] in ("a100-0", "a100-1")
    missing = httpx.get(f"{served.base}/v1/requests/chatcmpl-nope", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "request_not_found"


def test_only_the_most_recent_ended_requests_stay_visible() -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with ServedGateway(gateway_config(limits={"ended_requests_kept": 2})) as served:
        sdk = openai.OpenAI(base_url=f"{served.base}/v1", api_key=API_KEY, max_retries=0, timeout=30)
        ids = [sdk.completions.create(model="mistral-7b", prompt="hi", max_tokens=2).id for _ in range(3)]
        states = [httpx.get(f"{served.base}/v1/requests/{rid}", headers=auth) for rid in ids]
        # three ended, two kept: the oldest answers 404 like an unknown id
        assert [s.status_code for s in states] == [404, 200, 200]
        assert [s.json()["state"] for s in states[1:]] == ["finished", "finished"]
        assert served.gateway.rt is not None and len(served.gateway.rt.control.requests) == 2
