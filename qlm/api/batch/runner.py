"""The batch runner: feeds pending batch requests to the global queue and records their results.

The runner holds no state that matters across restarts: everything it needs is in the store, so
starting a runner on the same store after a crash resumes every accepted batch. Its loop, run by
:meth:`BatchRunner.step`:

1. expire overdue batches (``store.expire_overdue``) and cancel their in-flight requests;
2. for each active batch, earliest deadline first:
   ``validating`` -> start it; ``in_progress`` -> submit pending requests while fewer than
   ``max_concurrency`` are in flight, and finalise it once every request has a result;
   ``cancelling`` -> submit nothing more, and finish the cancel once its in-flight requests end;
   ``finalizing`` -> finalise it (a crash interrupted finalisation).

Each submitted request's outcome is committed with ``store.record_result`` or
``store.record_error`` before it counts; a request whose outcome could not be recorded stays
pending and is submitted again later. Store calls run in worker threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from qlm.api.batch.records import BatchRecord, BatchStatus, PendingRequest
from qlm.api.batch.store import BatchStore

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class BatchWorkItem:
    """One request handed to ``submit``: what to call, and the SLO it runs under.

    ``deadline`` is the batch's ``expires_at`` (Unix seconds): the request is worthless after it.
    """

    batch_id: str
    custom_id: str
    url: str
    body: dict[str, Any]
    slo_class: str
    deadline: float

    @property
    def model(self) -> str:
        return str(self.body["model"])


@dataclass(frozen=True, slots=True)
class BatchResponse:
    """What ``submit`` returns: the HTTP status and JSON body the endpoint answered with."""

    status_code: int
    body: Any
    request_id: str | None = None


class BatchRequestError(Exception):
    """Raised by ``submit`` for a request that failed without a response; recorded with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


#: ``submit(item)``: run one request through the global queue. May raise :class:`BatchRequestError`
#: (recorded as that error) or any other exception (recorded as ``internal_error``); being
#: cancelled means the runner gave up on it (shutdown, expiry), and nothing is recorded.
SubmitFn = Callable[[BatchWorkItem], Awaitable[BatchResponse]]
#: Maps a completion window in seconds to the name of the SLO class batch requests run under.
SLOClassFn = Callable[[float], str]


@dataclass
class _Active:
    """The runner's in-memory view of one batch it is feeding."""

    slo_class: str
    deadline: float
    cursor: int = 0  # last input line fetched from the store
    exhausted: bool = False  # no pending request beyond ``cursor``
    buffer: deque[PendingRequest] = field(default_factory=deque)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class BatchRunner:
    """Runs the batches of one store through ``submit``.

    Usage (in the gateway's lifespan)::

        runner = BatchRunner(store, submit, slo_class_for=lambda s: "batch-1" if s <= 3600 else "batch-2")
        task = asyncio.create_task(runner.run())
        ...
        runner.request_stop(); await task     # in-flight requests are cancelled and stay pending

    Only one runner should drive a database at a time: two would submit the same pending
    requests twice (the store still keeps one result per request).
    """

    def __init__(
        self,
        store: BatchStore,
        submit: SubmitFn,
        *,
        slo_class_for: SLOClassFn,
        now: Callable[[], float] | None = None,
        max_concurrency: int = 64,
        poll_interval_s: float = 1.0,
        fetch_size: int = 256,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        if fetch_size < 1:
            raise ValueError(f"fetch_size must be >= 1, got {fetch_size}")
        self.store = store
        self._submit = submit
        self._slo_class_for = slo_class_for
        self._now = now if now is not None else store.clock
        self._max = max_concurrency
        self._poll = poll_interval_s
        self._fetch = fetch_size
        self._active: dict[str, _Active] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every request task, including those of dropped batches
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet recorded."""
        return sum(len(a.tasks) for a in self._active.values())

    async def _call(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # [START loop]
    async def run(self) -> None:
        """Step until :meth:`request_stop`; then cancel in-flight requests (they stay pending)."""
        try:
            while not self._stopping:
                self._wake.clear()
                await self.step()
                await self._sleep()
        finally:
            await self.aclose()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after its current step."""
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Run the next step now (a batch was created or cancelled) rather than after the poll interval."""
        self._wake.set()

    async def run_until_idle(self) -> None:
        """Step until no batch is active and nothing is in flight (every batch ended)."""
        while True:
            self._wake.clear()
            await self.step()
            if self.in_flight == 0 and not await self._call(self.store.resumable_batches):
                return
            await self._sleep()

    async def aclose(self) -> None:
        """Cancel every in-flight request and wait for the tasks to end; nothing is recorded for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._active.clear()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll)

    async def step(self) -> None:
        """One pass: expire, start, feed, cancel and finalise, as described in the module docstring."""
        for batch in await self._call(self.store.expire_overdue, self._now()):
            self._drop(batch.id)
        batches = await self._call(self.store.resumable_batches)
        live = {b.id for b in batches}
        for batch_id in [i for i in self._active if i not in live]:  # ended elsewhere (another caller)
            self._drop(batch_id)
        to_feed = [b for b in [await self._settle(b) for b in batches] if b is not None]
        for batch in to_feed:  # earliest deadline first: scarce slots go to the most urgent batch
            await self._feed(batch)

    # [END loop]

    async def _settle(self, batch: BatchRecord) -> BatchRecord | None:
        """Carry out the batch's pending transition; return it if it is in progress (to be fed)."""
        if batch.status is BatchStatus.VALIDATING:
            batch = await self._call(self.store.start_batch, batch.id)
        if batch.status is BatchStatus.FINALIZING:
            await self._call(self.store.finalize, batch.id)
            self._drop(batch.id)
        elif batch.status is BatchStatus.CANCELLING:
            active = self._active.get(batch.id)
            if active is not None:
                active.buffer.clear()
            if active is None or not active.tasks:
                await self._call(self.store.finish_cancel, batch.id)
                self._drop(batch.id)
        elif batch.status is BatchStatus.IN_PROGRESS:
            return batch
        return None

    async def _feed(self, batch: BatchRecord) -> None:
        """Submit pending requests of an in-progress batch while there is capacity; finalise when done."""
        active = self._active.get(batch.id)
        if active is None:
            try:
                slo_class = self._slo_class_for(batch.window_s)
            except Exception as exc:  # a bad mapping fails the batch rather than the runner
                await self._call(self.store.fail_batch, batch.id, code="no_slo_class", message=_one_line(exc))
                return
            active = self._active[batch.id] = _Active(slo_class=slo_class, deadline=batch.expires_at)
        if self._now() >= batch.expires_at:
            return  # the next step's expire_overdue ends it
        while self.in_flight < self._max:
            if not active.buffer:
                if active.exhausted:
                    break
                fetched = await self._call(
                    self.store.pending_requests, batch.id, after_line=active.cursor, limit=self._fetch
                )
                if not fetched:
                    active.exhausted = True
                    break
                active.cursor = fetched[-1].line
                active.buffer.extend(r for r in fetched if r.custom_id not in active.tasks)
                continue
            self._launch(active, active.buffer.popleft())
        if active.exhausted and not active.buffer and not active.tasks:
            if await self._call(self.store.finalize, batch.id) is None:
                # Some request has no result although none is in flight (its outcome could not be
                # recorded): scan the batch again from the start.
                active.cursor, active.exhausted = 0, False
            else:
                self._drop(batch.id)

    def _launch(self, active: _Active, request: PendingRequest) -> None:
        item = BatchWorkItem(
            batch_id=request.batch_id,
            custom_id=request.custom_id,
            url=request.url,
            body=request.body,
            slo_class=active.slo_class,
            deadline=active.deadline,
        )
        task = asyncio.create_task(self._run_one(item), name=f"batch:{item.batch_id}:{item.custom_id}")
        active.tasks[item.custom_id] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(active, item.custom_id, t))

    def _done(self, active: _Active, custom_id: str, task: asyncio.Task[None]) -> None:
        active.tasks.pop(custom_id, None)
        self._tasks.discard(task)
        self._wake.set()

    async def _run_one(self, item: BatchWorkItem) -> None:
        """Submit one request and commit its outcome; a failure to commit leaves it pending."""
        store = self.store
        try:
            try:
                response = await self._submit(item)
            except BatchRequestError as exc:
                await self._call(store.record_error, item.batch_id, item.custom_id, code=exc.code, message=exc.message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("batch %s request %s failed: %s", item.batch_id, item.custom_id, _one_line(exc))
                await self._call(
                    store.record_error, item.batch_id, item.custom_id, code="internal_error", message=_one_line(exc)
                )
            else:
                try:
                    await self._call(
                        store.record_result,
                        item.batch_id,
                        item.custom_id,
                        response.status_code,
                        response.body,
                        request_id=response.request_id,
                    )
                except (TypeError, ValueError) as exc:  # a body that is not JSON: an error, not a retry
                    await self._call(
                        store.record_error,
                        item.batch_id,
                        item.custom_id,
                        code="invalid_response",
                        message=_one_line(exc),
                        status_code=response.status_code,
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s request %s: could not record the outcome", item.batch_id, item.custom_id)

    def _drop(self, batch_id: str) -> None:
        """Forget a batch, cancelling its in-flight requests (their outcomes are no longer wanted)."""
        active = self._active.pop(batch_id, None)
        if active is not None:
            for task in active.tasks.values():
                task.cancel()


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
