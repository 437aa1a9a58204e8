"""The emulator against the vLLM HTTP contract (framing, usage, metrics, sleep, priority,
abort on disconnect)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from qlm.runtime.vllm.sse import DONE, chunk_kind, metric_sum, parse_prometheus, parse_sse
from tests.runtime.conftest import EmulatorFactory

CHAT = [{"role": "user", "content": "Say something."}]


async def stream_events(c: httpx.AsyncClient, path: str, body: dict[str, Any],
                        headers: dict[str, str] | None = None) -> list[dict[str, Any] | str]:
    async with c.stream("POST", path, json={**body, "stream": True}, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return parse_sse([line async for line in resp.aiter_lines()])


def collapse(kinds: list[str]) -> list[str]:
    out: list[str] = []
    for k in kinds:
        if not out or out[-1] != k:
            out.append(k)
    return out


async def metrics(c: httpx.AsyncClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    return parse_prometheus((await c.get("/metrics")).text)


async def until(pred: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def test_chat_stream_framing(emulator: EmulatorFactory) -> None:
    s = await emulator()
    async with httpx.AsyncClient(base_url=s.url) as c:
        evs = await stream_events(c, "/v1/chat/completions", {
            "messages": CHAT, "max_completion_tokens": 30,
            "stream_options": {"include_usage": True}}, headers={"X-Request-Id": "abc"})
    assert collapse([chunk_kind(e) for e in evs]) == ["role", "content", "finish", "usage", "done"]
    objs = [e for e in evs if e != DONE]
    assert all(isinstance(o, dict) and o["id"] == "chatcmpl-abc" for o in objs)
    assert all(o["object"] == "chat.completion.chunk" for o in objs if isinstance(o, dict))
    role = objs[0]
    assert isinstance(role, dict) and role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(o["choices"][0]["delta"].get("content", "") for o in objs
                   if isinstance(o, dict) and o["choices"])
    assert len(text.split()) == 30  # one placeholder word per token
    fin = objs[-2]
    assert isinstance(fin, dict) and fin["choices"][0]["finish_reason"] == "length"
    usage = objs[-1]
    assert isinstance(usage, dict) and usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 30
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 30


async def test_completion_stream_framing_and_token_ids(emulator: EmulatorFactory) -> None:
    s = await emulator()
    async with httpx.AsyncClient(base_url=s.url) as c:
        evs = await stream_events(c, "/v1/completions", {
            "prompt": [1] * 77, "max_tokens": 12, "request_id": "body-id",
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
    assert collapse([chunk_kind(e) for e in evs]) == ["content", "finish", "usage", "done"]
    objs = [e for e in evs if isinstance(e, dict)]
    assert {o["id"] for o in objs} == {"cmpl-body-id"}
    assert all(o["object"] == "text_completion" for o in objs)
    counts = [o["usage"]["completion_tokens"] for o in objs]
    assert counts == sorted(counts) and counts[-1] == 12  # continuous usage is cumulative
    assert objs[-1]["usage"]["prompt_tokens"] == 77


async def test_non_streaming_and_seeded_length(emulator: EmulatorFactory) -> None:
    s = await emulator(seed=7)
    async with httpx.AsyncClient(base_url=s.url) as c:
        r = await c.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 9})
        body = r.json()
        assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] == 9
        lens = []
        for _ in range(2):
            r = await c.post("/v1/completions", json={"prompt": "hi"},
                             headers={"X-Request-Id": "same"})
            lens.append(r.json()["usage"]["completion_tokens"])
            assert r.json()["choices"][0]["finish_reason"] == "stop"
        assert lens[0] == lens[1] >= 1  # seeded by (seed, request id)
        r = await c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 20,
                                                  "ignore_eos": True})
        assert r.json()["usage"]["completion_tokens"] == 20


@pytest.mark.parametrize(("body", "code"), [
    ({"prompt": "x", "stream_options": {"include_usage": True}}, 400),
    ({"prompt": "x", "max_tokens": 10**6}, 400),
    ({"prompt": "x", "model": "other"}, 404),
    ({"prompt": "x", "max_tokens": 0}, 400),
])
async def test_errors(emulator: EmulatorFactory, body: dict[str, Any], code: int) -> None:
    s = await emulator()
    async with httpx.AsyncClient(base_url=s.url) as c:
        r = await c.post("/v1/completions", json=body)
    assert r.status_code == code
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "\n" not in err["message"]


async def test_info_endpoints(emulator: EmulatorFactory) -> None:
    s = await emulator(served_model="my-model", gpu="H100")
    async with httpx.AsyncClient(base_url=s.url) as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/version")).json() == {"version": "0.33.0"}
        m = (await c.get("/v1/models")).json()
        assert m["object"] == "list" and m["data"][0]["id"] == "my-model"
        assert m["data"][0]["owned_by"] == "vllm" and m["data"][0]["max_model_len"] == 32768
        assert (await c.get("/load")).json() == {"server_load": 0}
        assert (await c.post("/sleep")).status_code == 404  # dev routes need sleep mode
        t = (await c.post("/tokenize", json={"prompt": [5, 6, 7]})).json()
        assert t["count"] == 3


async def test_metrics_names_and_labels(emulator: EmulatorFactory) -> None:
    s = await emulator(served_model="mm")
    async with httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/v1/completions", json={"prompt": [1] * 50, "max_tokens": 5})
        m = await metrics(c)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:request_success_total", "vllm:engine_sleep_state",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:e2e_request_latency_seconds_count",
                 "vllm:request_queue_time_seconds_sum"):
        assert name in m, name
        assert all(lab["model_name"] == "mm" and lab["engine"] == "0" for lab, _ in m[name])
    assert metric_sum(m, "vllm:prompt_tokens_total") == 50
    assert metric_sum(m, "vllm:request_success_total", finished_reason="length") == 1
    assert metric_sum(m, "vllm:time_to_first_token_seconds_count") == 1
    assert metric_sum(m, "vllm:engine_sleep_state", sleep_state="awake") == 1


async def test_sleep_queues_requests_and_wake_serves_them(emulator: EmulatorFactory) -> None:
    s = await emulator(sleep_mode=True)
    async with httpx.AsyncClient(base_url=s.url) as c:
        r = await c.post("/sleep", params={"level": 1})
        assert r.json() == {"status": "sleeping", "level": 1}
        assert (await c.get("/is_sleeping")).json() == {"is_sleeping": True}
        m = await metrics(c)
        assert metric_sum(m, "vllm:engine_sleep_state", sleep_state="weights_offloaded") == 1
        assert (await c.get("/health")).status_code == 200  # health ignores sleep
        pending = asyncio.create_task(c.post("/v1/completions", json={"prompt": "x", "max_tokens": 3}))

        async def waiting() -> bool:
            return metric_sum(await metrics(c), "vllm:num_requests_waiting") == 1

        await until(waiting)  # accepted and queued, not rejected
        assert not pending.done()
        assert (await c.post("/wake_up")).json()["status"] == "awake"
        r = await pending
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


async def test_level2_wake_sequence(emulator: EmulatorFactory) -> None:
    s = await emulator(sleep_mode=True)
    async with httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/sleep", params={"level": 2, "mode": "wait"})
        m = await metrics(c)
        assert metric_sum(m, "vllm:engine_sleep_state", sleep_state="discard_all") == 1
        r = await c.post("/wake_up", params=[("tags", "weights")])
        assert r.json()["status"] == "sleeping"
        assert (await c.post("/collective_rpc", json={"method": "reload_weights"})).status_code == 200
        r = await c.post("/wake_up", params=[("tags", "kv_cache")])
        assert r.json()["status"] == "awake"
        assert (await c.post("/reset_prefix_cache")).status_code == 200
        assert (await c.get("/is_sleeping")).json() == {"is_sleeping": False}


async def test_sleep_abort_mode_ends_streams_with_abort(emulator: EmulatorFactory) -> None:
    s = await emulator(sleep_mode=True, speed=5)
    async with httpx.AsyncClient(base_url=s.url) as c:
        task = asyncio.create_task(stream_events(c, "/v1/completions", {
            "prompt": "x", "max_tokens": 5000}))

        async def running() -> bool:
            return metric_sum(await metrics(c), "vllm:num_requests_running") == 1

        await until(running)
        await c.post("/sleep", params={"level": 1, "mode": "abort"})
        evs = await task
    fin = [e for e in evs if isinstance(e, dict) and e["choices"] and e["choices"][0]["finish_reason"]]
    assert fin[-1]["choices"][0]["finish_reason"] == "abort" and evs[-1] == DONE


@pytest.mark.parametrize("policy", ["priority", "fcfs"])
async def test_priority_scheduling(emulator: EmulatorFactory, policy: str) -> None:
    # Scheduling is paused (sleep level 0) while five 8000-token prompts queue up; each step
    # admits one full prompt (8192-token budget), so completion order = admission order.
    s = await emulator(sleep_mode=True, scheduling_policy=policy, speed=20)
    order: list[str] = []
    async with httpx.AsyncClient(base_url=s.url) as c:
        await c.post("/sleep", params={"level": 0})

        async def send(rid: str, body_prio: int, header: str | None) -> None:
            hdr = {"X-Request-Id": rid} | ({"X-Vllm-Priority": header} if header else {})
            r = await c.post("/v1/completions", headers=hdr, json={
                "prompt": [1] * 8000, "max_tokens": 1, "priority": body_prio})
            assert r.status_code == 200
            order.append(rid)

        tasks = []
        for i, (prio, hdr) in enumerate([(0, None), (0, None), (0, None), (5, "-1"), (-3, None)]):
            tasks.append(asyncio.create_task(send(f"r{i}", prio, hdr)))

            async def queued(n: int = i + 1) -> bool:
                return metric_sum(await metrics(c), "vllm:num_requests_waiting") == n

            await until(queued)
        await c.post("/wake_up", params=[("tags", "scheduling")])
        await asyncio.gather(*tasks)
    if policy == "priority":  # lower = sooner; the header (-1) overrides the body (5)
        assert order == ["r4", "r3", "r0", "r1", "r2"]
    else:
        assert order == ["r0", "r1", "r2", "r3", "r4"]


async def test_abort_on_disconnect_frees_the_slot(emulator: EmulatorFactory) -> None:
    s = await emulator(speed=2)
    async with httpx.AsyncClient(base_url=s.url) as c:
        async with c.stream("POST", "/v1/completions", json={
                "prompt": "x", "max_tokens": 20000, "stream": True}) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    break  # first token seen: leave, closing the connection

        async def aborted() -> bool:
            m = await metrics(c)
            return (metric_sum(m, "vllm:request_success_total", finished_reason="abort") == 1
                    and metric_sum(m, "vllm:num_requests_running") == 0)

        await until(aborted)
        with pytest.raises(httpx.ReadTimeout):  # non-streaming: the client times out
            await c.post("/v1/completions", json={"prompt": "x", "max_tokens": 20000}, timeout=0.3)

        async def aborted2() -> bool:
            m = await metrics(c)
            return (metric_sum(m, "vllm:request_success_total", finished_reason="abort") == 2
                    and metric_sum(m, "vllm:kv_cache_usage_perc") == 0)

        await until(aborted2)
        assert (await c.get("/load")).json() == {"server_load": 0}
