"""Per-request token streams: how generated text reaches the API layer as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """New text of a request (``tokens`` generated tokens; engines may batch several)."""

    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a request ended. ``state`` is the ``RequestState`` name in lower case
    (``finished``, ``rejected``, ``failed``); ``reason`` the finish or failure reason."""

    state: str
    reason: str | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def ok(self) -> bool:
        return self.state == "finished"


class RequestStream:
    """Tokens of one request, in order, across engine runs (an evicted request resumes where
    it stopped), then one :class:`StreamEnd`.

    Producers (the instance drivers and the runtime loop) call :meth:`push` and
    :meth:`close` on the event loop; one consumer iterates (``async for chunk in stream``)
    and then reads :attr:`end`, or awaits :meth:`collect`.

    ``streaming`` says whether the client sees tokens as they arrive. When it does and
    tokens were delivered (:attr:`sent`), a request whose engine dies cannot be replayed
    and fails; a buffered (non-streamed) request is replayed transparently.
    """

    def __init__(self, request_id: str, streaming: bool = True) -> None:
        self.request_id = request_id
        self.streaming = streaming
        self.delivered_tokens = 0
        self.end: StreamEnd | None = None
        self._q: asyncio.Queue[StreamChunk | StreamEnd] = asyncio.Queue()

    @property
    def sent(self) -> bool:
        """True when part of the output already reached a streaming client."""
        return self.streaming and self.delivered_tokens > 0

    @property
    def closed(self) -> bool:
        return self.end is not None

    def push(self, text: str, tokens: int) -> None:
        if self.end is not None or tokens <= 0 and not text:
            return
        self.delivered_tokens += tokens
        self._q.put_nowait(StreamChunk(text, tokens))

    def close(self, end: StreamEnd) -> None:
        if self.end is None:
            self.end = end
            self._q.put_nowait(end)

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        while True:
            item = await self._q.get()
            if isinstance(item, StreamEnd):
                return
            yield item

    async def collect(self) -> tuple[str, StreamEnd]:
        """The whole text and the end (for non-streamed responses)."""
        parts = [c.text async for c in self]
        assert self.end is not None
        return "".join(parts), self.end
