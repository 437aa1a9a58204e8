"""The engines' token-stream client against hand-written HTTP servers (raw bytes on loopback):
payloads per read, statuses, stops, cancellation, keep-alive and its retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from qlm.runtime.vllm.sse_client import SSEClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server; counts connections and records the request heads it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.disconnected = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(h.split(b":")[1] for h in head.split(b"\r\n")
                                  if h.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                self.heads.append(head)
                await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.disconnected.set()
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/completions"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def make(handler: Handler) -> Server:
        s = Server(handler)
        s.server = await asyncio.start_server(s._serve, "127.0.0.1", 0)
        servers.append(s)
        return s

    yield make
    for s in servers:
        assert s.server is not None
        s.server.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def three_events(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    # event 1 split over two HTTP chunks, a keep-alive comment, events 2 and [DONE] in one chunk
    for part in (sse_head() + chunk(b'data: {"a"'), chunk(b': 1}\n\n: ping\n\n'),
                 chunk(b'data: {"b": 2}\n\ndata: [DONE]\n\n') + b"0\r\n\r\n"):
        w.write(part)
        await w.drain()
        await asyncio.sleep(0.01)  # separate network reads


async def test_payloads_per_read_in_order_and_the_connection_is_kept(serve) -> None:
    server = await serve(three_events)
    client = SSEClient()
    got: list[list[bytes]] = []
    status, body = await client.post(server.url, b'{"x": 1}', {"X-Request-Id": "r1"}, got.append)
    assert (status, body) == (200, b"")
    # the first read completes no line: 2 callbacks, not 3
    assert got == [[b'{"a": 1}'], [b'{"b": 2}', b"[DONE]"]]
    assert b"POST /v1/completions HTTP/1.1" in server.heads[0] and b"X-Request-Id: r1" in server.heads[0]
    # a second call reuses the connection
    await client.post(server.url, b"{}", {}, got.append)
    assert server.connections == 1 and len(server.heads) == 2
    assert client.idle_connections() == 1
    client.close()


async def test_an_error_status_returns_its_body_and_a_content_length_body_streams(serve) -> None:
    async def busy(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")

    async def plain(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # no chunked encoding and no final newline: the last line still counts
        body = b"data: {}\n\ndata: [DONE]"
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    client = SSEClient()
    got: list[list[bytes]] = []
    assert await client.post((await serve(busy)).url, b"{}", {}, got.append) == (503, b"busy")
    assert got == []
    assert await client.post((await serve(plain)).url, b"{}", {}, got.append) == (200, b"")
    assert [p for batch in got for p in batch] == [b"{}", b"[DONE]"]
    client.close()


async def test_stop_and_cancel_close_the_connection(serve) -> None:
    async def endless(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(sse_head())
        while True:
            w.write(chunk(b"data: {}\n\n"))
            await w.drain()
            await asyncio.sleep(0.005)

    server = await serve(endless)
    client = SSEClient()
    seen: list[bytes] = []

    def stop_after_three(batch: list[bytes]) -> bool:
        seen.extend(batch)
        return len(seen) >= 3

    assert await client.post(server.url, b"{}", {}, stop_after_three) == (200, b"")
    await asyncio.wait_for(server.disconnected.wait(), 5)
    assert len(seen) == 3 and client.idle_connections() == 0

    server2 = await serve(endless)
    task = asyncio.create_task(client.post(server2.url, b"{}", {}, lambda _b: None))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server2.disconnected.wait(), 5)  # the engine sees the client go
    client.close()


async def test_callback_errors_and_broken_responses_raise(serve) -> None:
    def bad(_batch: list[bytes]) -> bool:
        raise ValueError("not JSON")

    client = SSEClient()
    with pytest.raises(ValueError, match="not JSON"):
        await client.post((await serve(three_events)).url, b"{}", {}, bad)

    async def cut(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(sse_head() + chunk(b"data: {}\n\n"))
        await w.drain()
        w.close()  # dies mid-stream

    with pytest.raises(ConnectionError, match="before the response ended"):
        await client.post((await serve(cut)).url, b"{}", {}, lambda _b: None)

    async def garbage(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"NOT HTTP AT ALL\r\n\r\n")

    with pytest.raises(ConnectionError, match="malformed HTTP"):
        await client.post((await serve(garbage)).url, b"{}", {}, lambda _b: None)

    server = await serve(three_events)
    url = server.url
    assert server.server is not None
    server.server.close()
    await server.server.wait_closed()
    with pytest.raises(OSError):  # refused
        await client.post(url, b"{}", {}, lambda _b: None)
    with pytest.raises(ValueError, match="http"):
        await client.post("ftp://x/y", b"{}", {}, lambda _b: None)
    client.close()
    with pytest.raises(ConnectionError, match="closed"):
        await client.post(url, b"{}", {}, lambda _b: None)


async def test_a_kept_connection_the_server_closed_is_retried_on_a_new_one(serve) -> None:
    async def once(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # answers, keeps the connection alive by the headers, then drops it (idle timeout)
        await three_events(_r, w)
        raise ConnectionResetError

    server = await serve(once)
    client = SSEClient()
    got: list[list[bytes]] = []
    await client.post(server.url, b"{}", {}, got.append)
    await asyncio.sleep(0.05)
    assert (await client.post(server.url, b"{}", {}, got.append)) == (200, b"")
    assert server.connections == 2 and len(got) == 4
    client.close()
