"""The vLLM instance driver against emulators: submit, stream, abort, resume, sleep/wake
swaps (levels 1 and 2), metrics, engine death."""

from __future__ import annotations

import asyncio

import httpx

from qlm.domain.request import Request
from qlm.perf.swap_model import Residency
from qlm.runtime.events import Aborted, Finished, FirstToken, InstanceDown, InstanceUp, SwapDone
from qlm.runtime.vllm.driver import (
    OUTPUT_TOKENS,
    PARTIAL_TEXT,
    ModelEndpoint,
    VLLMInstance,
    stats_from_metrics,
)
from qlm.runtime.vllm.stream import RequestStream
from tests.runtime.conftest import EmulatorFactory, Sink, until


def req(rid: str, model: str = "m", out: int | None = 20, prompt: int = 64) -> Request:
    r = Request(id=rid, model=model, slo_class="interactive", arrival_s=0.0, prompt_tokens=prompt)
    if out is not None:
        r.meta[OUTPUT_TOKENS] = out
    return r


async def make(emulator: EmulatorFactory, models: tuple[str, ...] = ("m",), level: int = 1,
               **kw: object) -> tuple[VLLMInstance, Sink, dict[str, str]]:
    urls = {}
    for m in models:
        s = await emulator(served_model=m, sleep_mode=True, scheduling_policy="priority", **kw)
        urls[m] = s.url
    eps = [ModelEndpoint(m, urls[m], sleep_level=level) for m in models]  # type: ignore[arg-type]
    inst = VLLMInstance("i0", eps, models[0], health_timeout_s=0.5)
    sink = Sink()
    inst.bind(sink)
    await inst.wait_ready(timeout_s=10)
    return inst, sink, urls


async def test_submit_streams_tokens_and_reports_events(emulator: EmulatorFactory) -> None:
    inst, sink, _ = await make(emulator)
    streams: dict[str, RequestStream] = {"a": RequestStream("a")}
    inst.stream_lookup = streams.get
    inst.dispatch(req("a", out=25), priority=2)
    await until(lambda: sink.of(Finished))
    kinds = [type(e) for e in sink.events]
    assert kinds == [FirstToken, Finished]
    assert sink.of(Finished)[0].output_tokens == 25 and sink.of(Finished)[0].reason == "length"
    assert streams["a"].delivered_tokens == 25
    chunks = streams["a"].ready()
    assert len("".join(c.text for c in chunks).split()) == 25
    await inst.refresh()
    assert inst.stats().generation_tokens_total >= 25
    await inst.close()


def test_request_shape_priority_and_resume() -> None:
    inst = VLLMInstance("i0", [ModelEndpoint("m", "http://127.0.0.1:1")], "m")
    r = req("x", out=30, prompt=10)
    path, body, headers = inst.build_request(r, inst.endpoints["m"], priority=3)
    assert path == "/v1/completions" and body["prompt"] == [100] * 10
    assert body["stream"] is True and body["max_tokens"] == 30 and body["ignore_eos"] is True
    assert body["stream_options"]["include_usage"] is True
    assert headers == {"X-Request-Id": "x", "X-Vllm-Priority": "3"} and body["priority"] == 3
    r.generated_tokens = 12  # resumed after an eviction: generated tokens join the prompt
    _, body, _ = inst.build_request(r, inst.endpoints["m"], priority=3)
    assert len(body["prompt"]) == 22 and body["max_tokens"] == 18
    chat = Request(id="c", model="m", slo_class="interactive", arrival_s=0, prompt_tokens=5,
                   meta={"body": {"messages": [{"role": "user", "content": "q"}],
                                  "max_completion_tokens": 10}, PARTIAL_TEXT: " so far"})
    chat.generated_tokens = 2
    path, body, _ = inst.build_request(chat, inst.endpoints["m"], 0)
    assert path == "/v1/chat/completions" and body["max_completion_tokens"] == 8
    assert body["messages"][-1] == {"role": "assistant", "content": " so far"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    inst2 = VLLMInstance("i1", [ModelEndpoint("m", "http://127.0.0.1:1")], "m",
                         priority_scheduling=False)
    _, body, headers = inst2.build_request(req("y"), inst2.endpoints["m"], priority=3)
    assert "priority" not in body and "X-Vllm-Priority" not in headers


async def test_abort_closes_connection_and_frees_slot(emulator: EmulatorFactory) -> None:
    inst, sink, urls = await make(emulator, speed=5)
    inst.dispatch(req("long", out=20000), 0)
    await until(lambda: sink.of(FirstToken))
    inst.abort("long")
    await until(lambda: sink.of(Aborted))
    ab = sink.of(Aborted)[0]
    assert ab.retryable and ab.reason == "abort" and ab.generated_tokens >= 1
    async with httpx.AsyncClient() as c:
        async def freed() -> bool:
            st = stats_from_metrics((await c.get(urls["m"] + "/metrics")).text)
            return st.num_running == 0 and st.kv_usage == 0

        for _ in range(500):
            if await freed():
                break
            await asyncio.sleep(0.01)
        assert await freed()
    await inst.close()


async def test_swap_level1_sleeps_active_and_wakes_target(emulator: EmulatorFactory) -> None:
    inst, sink, urls = await make(emulator, models=("m", "n"))
    async with httpx.AsyncClient() as c:
        assert (await c.get(urls["n"] + "/is_sleeping")).json()["is_sleeping"]  # put to sleep
        inst.swap("n", "wait")
        await until(lambda: sink.of(SwapDone))
        done = sink.of(SwapDone)[0]
        assert done.model == "n" and not done.cold and done.duration_s > 0
        assert (await c.get(urls["m"] + "/is_sleeping")).json()["is_sleeping"]
        assert not (await c.get(urls["n"] + "/is_sleeping")).json()["is_sleeping"]
    assert inst.active == "n" and inst.residency_of("m") is Residency.SLEEP_L1
    assert inst.swap_log and inst.swap_log[0][:2] == ("m", "n")
    inst.dispatch(req("after", model="n", out=3), 0)
    await until(lambda: sink.of(Finished))
    await inst.close()


async def test_swap_level2_and_abort_mode(emulator: EmulatorFactory) -> None:
    inst, sink, urls = await make(emulator, models=("m", "n"), level=2, speed=5)
    inst.dispatch(req("busy", out=20000), 0)
    await until(lambda: sink.of(FirstToken))
    inst.swap("n", "abort")
    await until(lambda: sink.of(SwapDone))
    ab = sink.of(Aborted)
    assert len(ab) == 1 and ab[0].reason == "swap" and ab[0].retryable
    assert sink.events.index(ab[0]) < sink.events.index(sink.of(SwapDone)[0])
    assert inst.residency_of("m") is Residency.SLEEP_L2
    inst.swap("m", "wait")  # back: level-2 wake sequence (weights, reload, kv_cache)
    await until(lambda: len(sink.of(SwapDone)) == 2)
    assert inst.active == "m"
    async with httpx.AsyncClient() as c:
        assert not (await c.get(urls["m"] + "/is_sleeping")).json()["is_sleeping"]
    await inst.close()


async def test_engine_death_aborts_then_down_then_up(emulator: EmulatorFactory) -> None:
    inst, sink, _ = await make(emulator, speed=5)
    server = None
    streams = {"s": RequestStream("s", streaming=True), "b": RequestStream("b", streaming=False)}
    inst.stream_lookup = streams.get
    inst.dispatch(req("s", out=20000), 0)
    inst.dispatch(req("b", out=20000), 0)
    await until(lambda: len(sink.of(FirstToken)) == 2 and streams["s"].delivered_tokens > 0)
    # find the emulator server behind the endpoint and kill it
    import gc

    from qlm.runtime.emulator import EmulatorServer
    for obj in gc.get_objects():
        if isinstance(obj, EmulatorServer) and obj.url == inst.endpoints["m"].url:
            server = obj
    assert server is not None
    await server.stop(force=True)
    await until(lambda: sink.of(InstanceDown) or len(sink.of(Aborted)) == 2, timeout=10)
    if not sink.of(InstanceDown):
        await inst.check_health()
    await until(lambda: sink.of(InstanceDown))
    ab = {e.request_id: e for e in sink.of(Aborted)}
    assert set(ab) == {"s", "b"}
    assert not ab["s"].retryable  # tokens already reached a streaming client
    assert ab["b"].retryable  # buffered: can be replayed elsewhere
    down = sink.of(InstanceDown)[0]
    assert all(sink.events.index(a) < sink.events.index(down) for a in ab.values())
    assert not await inst.check_health()
    await server.start()  # same port again
    assert await inst.check_health()
    assert sink.of(InstanceUp) and sink.of(InstanceUp)[0].model == "m"
    await inst.close()


def test_metrics_fallback_to_gpu_cache_usage() -> None:
    old = ('vllm:gpu_cache_usage_perc{model_name="x",engine="0"} 0.25\n'
           'vllm:num_requests_running{model_name="x",engine="0"} 3\n'
           'vllm:num_requests_running{model_name="x",engine="1"} 2\n')
    st = stats_from_metrics(old)
    assert st.kv_usage == 0.25 and st.num_running == 5  # summed over engine
    new = 'vllm:kv_cache_usage_perc{model_name="x",engine="0"} 0.5\n' + old
    assert stats_from_metrics(new).kv_usage == 0.5


async def test_abort_before_the_request_task_starts_still_reports_aborted(emulator: EmulatorFactory) -> None:
    # regression: a run task cancelled before its first step never runs its `finally`, so the
    # request stayed DISPATCHED forever (seen when an engine died right after a dispatch)
    inst, sink, _ = await make(emulator)
    inst.dispatch(req("a", out=25), priority=0)
    inst.abort("a")  # same loop iteration: the task has not started yet
    await until(lambda: sink.of(Aborted))
    assert [type(e) for e in sink.events] == [Aborted]
    assert "a" not in inst.runs
