"""The request plan (seeded, time-scaled, model-mapped), request bodies and the SSE parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from qlm.api.schemas import ChatBody, CompletionBody, prompt_tokens
from qlm.bench.plan import build_plan, parse_model_map
from qlm.bench.runner import StreamParser, Target, request_body, request_headers
from qlm.workload.scenario import load_scenario

MIXED = str(Path(__file__).with_name("mixed.yaml"))


def test_plan_is_seeded_scaled_and_mapped() -> None:
    sc = load_scenario(MIXED)
    a = build_plan(sc, seed=3, time_scale=50, model_map={"mistral-7b": "m"})
    assert a == build_plan(sc, seed=3, time_scale=50, model_map={"mistral-7b": "m"})
    assert a.requests != build_plan(sc, seed=4, time_scale=50).requests
    assert len(a.requests) == 24 and {r.model for r in a.requests} == {"m"}
    assert a.classes_used == ["interactive", "batch"]
    t0 = a.requests[0].arrival_s
    for r in a.requests:
        assert r.send_s == pytest.approx((r.arrival_s - t0) / 50)
    assert [r.send_s for r in a.requests] == sorted(r.send_s for r in a.requests)
    assert len(build_plan(sc, limit=5).requests) == 5
    assert a.slo_ttft_s == {"interactive": 2.0, "batch": 60.0}


@pytest.mark.parametrize(("kw", "message"), [
    ({"time_scale": 0}, "--time-scale must be > 0"),
    ({"load": -1}, "--load must be > 0"),
    ({"limit": 0}, "--limit must be >= 1"),
    ({"model_map": {"llama": "m"}}, "'llama' is no model of the workload"),
])
def test_plan_rejects_bad_input(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_plan(load_scenario(MIXED), **kw)


@pytest.mark.parametrize(("text", "message"), [
    ("a", "expected NAME=VALUE"), ("=b", "expected NAME=VALUE"), ("a=", "expected NAME=VALUE"),
    ("a=b,a=c", "given twice"), (",", "no NAME=VALUE pair"),
])
def test_model_map_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_model_map(text)
    assert parse_model_map(" a = b , c=d ") == {"a": "b", "c": "d"}


def test_prompts_count_as_planned_by_the_gateway() -> None:
    plan = build_plan(load_scenario(MIXED), seed=1)
    chat = Target("http://x")
    comp = Target("http://x/v1/", "/v1/completions")
    assert comp.base_url == "http://x" and comp.url == "http://x/v1/completions"
    for r in plan.requests:
        assert prompt_tokens(ChatBody.model_validate(request_body(plan, r, chat))) == r.prompt_tokens
        assert prompt_tokens(CompletionBody.model_validate(request_body(plan, r, comp))) == r.prompt_tokens
    r = plan.requests[0]
    assert request_body(plan, r, chat) == request_body(plan, r, chat)  # words drawn from seed and index
    assert request_body(plan, r, chat) != request_body(build_plan(load_scenario(MIXED), seed=2), r, chat)


def test_body_and_headers_switches() -> None:
    plan = build_plan(load_scenario(MIXED), seed=0)
    r = plan.requests[0]
    body = request_body(plan, r, Target("http://x"))
    assert body["max_tokens"] == r.output_tokens and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True} and body["ignore_eos"] is True
    assert body["slo_class"] == r.slo_class and "min_tokens" not in body and "service_tier" not in body
    assert request_headers(plan, r, Target("http://x"))["X-QLM-SLO-Class"] == r.slo_class
    off = Target("http://x", class_header=False, class_field=False, ignore_eos=False, min_tokens=True,
                 service_tiers={r.slo_class: "flex"})
    body = request_body(plan, r, off)
    assert "slo_class" not in body and "ignore_eos" not in body
    assert body["min_tokens"] == r.output_tokens and body["service_tier"] == "flex"
    assert "X-QLM-SLO-Class" not in request_headers(plan, r, off)


def _chunk(content: str | None, finish: str | None = None) -> str:
    import json

    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_stream_parser_times_chunks() -> None:
    plan = build_plan(load_scenario(MIXED), limit=1)
    p = StreamParser(start=10.0, chat=True)
    lines = [(": keep-alive", 10.1), (_chunk(""), 10.5), ("", 10.5), (_chunk("a b"), 10.7),
             (_chunk("c"), 11.0), (_chunk(None, "length"), 11.1),
             ('data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}', 11.2),
             ("data: [DONE]", 11.3)]
    assert [p.feed(line, t) for line, t in lines][-1] is True
    rec = p.record(plan.requests[0], 0.25, t0=9.0)
    assert rec.success and rec.finish_reason == "length"
    assert rec.ttft_s == pytest.approx(0.5) and rec.e2el_s == pytest.approx(1.1)  # last chunk with choices
    assert rec.itl_s == pytest.approx((0.2, 0.3, 0.1))
    assert (rec.output_tokens, rec.prompt_tokens) == (3, 9)  # from usage
    assert rec.start_s == pytest.approx(1.0) and rec.send_lag_s == 0.25
    assert rec.tpot_s == pytest.approx((1.1 - 0.5) / 2)


@pytest.mark.parametrize(("lines", "reason"), [
    (['data: {"error":{"message":"boom","type":"InternalServerError","code":500}}', "data: [DONE]"],
     "stream error (InternalServerError)"),
    ([_chunk("x"), _chunk("", "abort"), "data: [DONE]"], "finish_reason abort"),
    ([_chunk("x")], "stream ended early"),
    (["data: [DONE]"], "no token"),
    (["data: {not json"], "bad SSE data"),
])
def test_stream_parser_failures(lines: list[str], reason: str) -> None:
    plan = build_plan(load_scenario(MIXED), limit=1)
    p = StreamParser(start=0.0, chat=True)
    for k, line in enumerate(lines):
        p.feed(line, 1.0 + k)
    rec = p.record(plan.requests[0], 0.0)
    assert not rec.success and rec.error == reason and rec.ttft_s is None
