"""The SSE response's direct writes: a send that must wait (the client's socket is full)
keeps every chunk, in order, ahead of the end."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from qlm.api.app import _Framer, _SSEResponse
from qlm.api.gateway import Admitted
from qlm.domain.request import Request
from qlm.runtime.vllm.stream import RequestStream, StreamEnd


def _texts(bodies: list[bytes]) -> list[str]:
    """The text of every content chunk in the bytes sent, in order; "[DONE]" for the end."""
    out = []
    for event in b"".join(bodies).split(b"\n\n"):
        if not event.startswith(b"data: "):
            continue
        if event == b"data: [DONE]":
            out.append("[DONE]")
            continue
        choices = orjson.loads(event[6:])["choices"]
        if choices and choices[0]["text"]:
            out.append(choices[0]["text"])
    return out


async def test_a_send_that_waits_keeps_the_order() -> None:
    stream = RequestStream("r")
    adm = Admitted("cmpl-r", Request("r", "m", "interactive", 0.0, 4), stream, "interactive", "interactive",
                   None, None)
    gate = asyncio.get_running_loop().create_future()
    bodies: list[bytes] = []
    calls = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal calls
        if message["type"] != "http.response.body":
            return
        calls += 1
        if calls == 2:  # the second chunk finds the socket full: its write waits for the gate
            await gate
        bodies.append(message["body"])

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never goes away
        return {}

    outcomes: list[str] = []
    resp = _SSEResponse(adm, _Framer(adm, "m", chat=False, include_usage=False), {}, outcomes.append)
    task = asyncio.ensure_future(resp({"type": "http"}, receive, send))
    await asyncio.sleep(0)  # headers sent, the response waits for chunks
    stream.push("a", 1)  # written at once, from push itself
    assert _texts(bodies) == ["a"]
    stream.push("b", 1)  # its write has to wait
    stream.push("c", 1)  # queued behind it
    stream.push("d", 1)
    await asyncio.sleep(0.01)
    assert _texts(bodies) == ["a"]
    gate.set_result(None)
    stream.close(StreamEnd("finished", "length", 4, 4))
    await asyncio.wait_for(task, 5)
    assert _texts(bodies) == ["a", "b", "c", "d", "[DONE]"] and outcomes == ["finished"]
