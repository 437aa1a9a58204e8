"""SSE framing of the emulator cross-checked against an independent vLLM look-alike, the
PyPI package xpyd-sim (skipped when it is not installed)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from qlm.runtime.emulator import free_port
from qlm.runtime.vllm.sse import DONE, chunk_kind, parse_sse
from tests.runtime.conftest import EmulatorFactory
from tests.runtime.test_emulator import collapse

XPYD = shutil.which("xpyd-sim")
pytestmark = pytest.mark.skipif(XPYD is None, reason="xpyd-sim is not installed")


@pytest.fixture
async def xpyd() -> AsyncIterator[str]:
    assert XPYD is not None
    port = free_port()
    proc = subprocess.Popen(
        [XPYD, "serve", "--port", str(port), "--host", "127.0.0.1", "--model", "m",
         "--prefill-delay-ms", "1", "--decode-delay-per-token-ms", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as c:
            for _ in range(300):
                try:
                    if (await c.get(url + "/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("xpyd-sim did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)




async def events(url: str, path: str, body: dict[str, Any]) -> list[dict[str, Any] | str]:
    async with httpx.AsyncClient(base_url=url) as c, \
            c.stream("POST", path, json=body, headers={"X-Request-Id": "x1"}) as resp:
        assert resp.status_code == 200
        return parse_sse([line async for line in resp.aiter_lines()])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_same_sse_structure(xpyd: str, emulator: EmulatorFactory, path: str) -> None:
    ours = await emulator()
    body: dict[str, Any] = {"model": "m", "max_tokens": 6, "stream": True, "ignore_eos": True,
                            "stream_options": {"include_usage": True}}
    if "chat" in path:
        body["messages"] = [{"role": "user", "content": "hello"}]
    else:
        body["prompt"] = "hello"
    a = await events(ours.url, path, body)
    b = await events(xpyd, path, body)
    assert collapse([chunk_kind(e) for e in a]) == collapse([chunk_kind(e) for e in b])
    assert a[-1] == b[-1] == DONE
    for ev_a, ev_b in zip(a[:-1], b[:-1], strict=False):
        assert isinstance(ev_a, dict) and isinstance(ev_b, dict)
        assert ev_a["object"] == ev_b["object"]
        assert ev_a["id"].split("-")[0] == ev_b["id"].split("-")[0]  # chatcmpl / cmpl
    ua, ub = a[-2], b[-2]
    assert isinstance(ua, dict) and isinstance(ub, dict)
    assert ua["choices"] == ub["choices"] == []
    assert set(ua["usage"]) <= set(ub["usage"]) | {"prompt_tokens_details"}
    assert ua["usage"]["completion_tokens"] == ub["usage"]["completion_tokens"] == 6
