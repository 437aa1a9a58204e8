"""Per-request token streams: how generated text reaches the API layer as it arrives."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
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
    and then reads :attr:`end`, or awaits :meth:`collect`; or, to take every chunk that is
    waiting in one go, loops on :meth:`wait` and :meth:`ready` until :attr:`end` is set
    (:meth:`interrupt` wakes it for good, e.g. when its client went away). Such a consumer may
    also set :attr:`sink` to take chunks straight from :meth:`push`, without waking up, while
    nothing is queued; what it declines is queued in order.

    ``streaming`` says whether the client sees tokens as they arrive. When it does and
    tokens were delivered (:attr:`sent`), a request whose engine dies cannot be replayed
    and fails; a buffered (non-streamed) request is replayed transparently.
    """

    def __init__(self, request_id: str, streaming: bool = True) -> None:
        self.request_id = request_id
        self.streaming = streaming
        self.delivered_tokens = 0
        self.end: StreamEnd | None = None
        self._items: deque[StreamChunk | StreamEnd] = deque()
        self._waiter: asyncio.Future[None] | None = None  # the consumer, while it waits
        self.interrupted = False
        # the consumer's direct path: called with each chunk while nothing is queued ahead of it;
        # True means it delivered the chunk (nothing is queued), False that it could not now
        self.sink: Callable[[str, int], bool] | None = None

    @property
    def sent(self) -> bool:
        """True when part of the output already reached a streaming client."""
        return self.streaming and self.delivered_tokens > 0

    @property
    def closed(self) -> bool:
        return self.end is not None

    def _put(self, item: StreamChunk | StreamEnd) -> None:
        self._items.append(item)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def push(self, text: str, tokens: int) -> None:
        if self.end is not None or tokens <= 0 and not text:
            return
        self.delivered_tokens += tokens
        if self.sink is not None and not self._items and self.sink(text, tokens):
            return
        self._put(StreamChunk(text, tokens))

    def close(self, end: StreamEnd) -> None:
        if self.end is None:
            self.end = end
            self._put(end)

    def interrupt(self) -> None:
        """Wake the consumer's :meth:`wait` now and from now on (its client went away)."""
        self.interrupted = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _park(self) -> None:
        """Sleep until the next :meth:`_put` or :meth:`interrupt`."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def wait(self) -> None:
        """Return once an item is waiting (see :meth:`ready`) or the stream was interrupted."""
        while not self._items and not self.interrupted:
            await self._park()

    async def _next(self) -> StreamChunk | StreamEnd:
        while not self._items:
            await self._park()
        return self._items.popleft()

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        while True:
            item = await self._next()
            if isinstance(item, StreamEnd):
                return
            yield item

    def ready(self) -> list[StreamChunk]:
        """The chunks already waiting, without blocking (the end stays queued): lets a
        consumer that fell behind send several chunks at once. Once they are taken, a set
        :attr:`end` means nothing more will come."""
        out: list[StreamChunk] = []
        while self._items and isinstance(self._items[0], StreamChunk):
            item = self._items.popleft()
            assert isinstance(item, StreamChunk)
            out.append(item)
        return out

    async def collect(self) -> tuple[str, StreamEnd]:
        """The whole text and the end (for non-streamed responses)."""
        parts = [c.text async for c in self]
        assert self.end is not None
        return "".join(parts), self.end
