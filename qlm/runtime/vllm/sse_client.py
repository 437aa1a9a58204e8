"""The engines' token streams: an HTTP/1.1 client for one kind of call, a POST whose response
is a server-sent event stream, built for the per-token path.

A general client (aiohttp, httpx) hands each network read to a task through a buffer, a
future and an async iterator: a task step and a future per read, which at hundreds of open
streams was most of the gateway's CPU. Here each connection is an ``asyncio.Protocol``
whose bytes are parsed by httptools (C, the parser uvicorn uses) inside ``data_received``,
and the ``data:`` payloads a read completes are handed to the caller's callback there and
then, on the same loop callback. Only this call goes through it; health checks, sleep and
wake, metrics and warm-ups stay on httpx.

Contract of :meth:`SSEClient.post`:

- ``on_events(payloads)`` gets the payloads of the ``data:`` lines (after ``data:``,
  whitespace stripped; ``b"[DONE]"`` included; comments, blank lines and other fields
  skipped) of every read that completes at least one line, in order, only for a 200
  response. It returns True to stop: the connection is closed (the engine aborts the
  request) and ``post`` returns. An exception it raises closes the connection and is
  raised by ``post``.
- ``post`` returns ``(status, body)`` at the end of the response (``body`` is empty for a
  200 response), or ``(200, b"")`` after a stop. It raises ``ConnectionError`` (an
  ``OSError``) when the connection fails or closes before the response ends, and
  ``TimeoutError`` when connecting takes longer than ``connect_timeout_s``.
- Cancelling the awaiting task closes the connection: the engine sees the client go
  away and frees the request (vLLM aborts on disconnect).
- Connections whose response ended cleanly are kept for the next call to the same host
  (keep-alive); a kept connection that fails before any byte of its response arrives
  (the server closed it while idle) is retried once on a new one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import httptools

from qlm.runtime.vllm.sse import DataLines

EventCallback = Callable[[list[bytes]], bool | None]

_Key = tuple[str, str, int]  # scheme, host, port


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one response in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.done: asyncio.Future[tuple[int, bytes]] | None = None
        self.on_events: EventCallback | None = None
        self.status = 0
        self.received = False  # a byte of the current response arrived
        self.reusable = False
        self._lines = DataLines()
        self._body: list[bytes] = []

    # ---- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.done is None or self.done.done():
            self.close()  # bytes with no request in flight: the connection is unusable
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # on_events raised
            self._fail(exc.__context__ if isinstance(exc.__context__, Exception) else exc)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response from the engine: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reusable = False
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(
                f"the engine closed the connection before the response ended ({exc or 'EOF'})"))

    # ---- httptools callbacks ------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.done is None or self.done.done():
            return
        if self.status != 200:
            self._body.append(body)
            return
        payloads = self._lines.feed(body)
        if payloads and self._deliver(payloads):
            self.close()
            self.done.set_result((200, b""))

    def on_message_complete(self) -> None:
        if self.done is None or self.done.done():
            return
        last = self._lines.flush() if self.status == 200 else []
        if last and self._deliver(last):
            self.close()
            self.done.set_result((200, b""))
            return
        self.reusable = self.parser.should_keep_alive() and not self.lost
        self.done.set_result((self.status, b"".join(self._body)))

    # ---- helpers ------------------------------------------------------------------------
    def _deliver(self, payloads: list[bytes]) -> bool:
        assert self.on_events is not None
        return bool(self.on_events(payloads))

    def _fail(self, exc: BaseException) -> None:
        self.close()
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    def start(self, request: bytes, on_events: EventCallback) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.on_events = on_events
        self.status, self.received, self.reusable, self._lines, self._body = 0, False, False, DataLines(), []
        self.transport.write(request)
        return self.done

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.lost:
            self.transport.close()


class SSEClient:
    """Streamed POSTs to engines, with per-host keep-alive (see the module docstring)."""

    def __init__(self, connect_timeout_s: float = 5.0, max_idle_per_host: int = 1024) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[_Key, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self.closed = False

    async def post(self, url: str, body: bytes, headers: dict[str, str], on_events: EventCallback
                   ) -> tuple[int, bytes]:
        if self.closed:
            raise ConnectionError("the engine stream client is closed")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"engine URL must be http(s)://host[:port]/path, got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key: _Key = (parts.scheme, parts.hostname, port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
                "Accept: text/event-stream", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        while True:
            conn, reused = await self._acquire(key)
            try:
                status, text = await conn.start(request, on_events)
            except ConnectionError:
                if reused and not conn.received:  # closed by the server while idle: once more, fresh
                    continue
                raise
            except BaseException:  # cancelled, or on_events raised: the engine must see us go
                conn.close()
                raise
            self._release(key, conn)
            return status, text

    async def _acquire(self, key: _Key) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn, True
        scheme, host, port = key
        ctx: ssl.SSLContext | None = None
        if scheme == "https":
            ctx = self._ssl = self._ssl or ssl.create_default_context()
        loop = asyncio.get_running_loop()
        transport, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, host, port, ssl=ctx), self.connect_timeout_s)
        conn.transport = cast(asyncio.Transport, transport)  # uvloop calls connection_made later
        return conn, False

    def _release(self, key: _Key, conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if conn.reusable and not self.closed and len(idle) < self.max_idle_per_host:
            conn.done = None
            idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close the kept connections; later posts fail."""
        self.closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def __repr__(self) -> str:
        return f"SSEClient(idle={self.idle_connections()})"


__all__ = ["EventCallback", "SSEClient"]
