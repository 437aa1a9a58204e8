"""BatchRunner: feeding, bounded concurrency, outcomes, cancel, expiry, crash-resume and retries."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from qlm.api.batch import (
    BatchConfig,
    BatchRequestError,
    BatchResponse,
    BatchRunner,
    BatchStatus,
    BatchStore,
    BatchWorkItem,
)
from tests.api.batch.helpers import Clock, make_batch, read_jsonl


def slo_for(window_s: float) -> str:
    return "batch-1" if window_s <= 3600 else "batch-2"


async def until(cond: Callable[[], bool], tries: int = 2000) -> None:
    """Yield to the loop (and the store's worker threads) until ``cond()`` holds."""
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never held")


class FakeQueue:
    """A ``submit`` whose requests finish at once, or wait for ``release(custom_id)`` when held."""

    def __init__(self, hold: set[str] | None = None) -> None:
        self.hold = set(hold or ())
        self.calls: list[BatchWorkItem] = []
        self.running = 0
        self.peak = 0
        self.cancelled: list[str] = []
        self._gates: dict[str, asyncio.Event] = {}

    def release(self, custom_id: str) -> None:
        self._gates.setdefault(custom_id, asyncio.Event()).set()

    async def __call__(self, item: BatchWorkItem) -> BatchResponse:
        self.calls.append(item)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0)
            if item.custom_id in self.hold:
                await self._gates.setdefault(item.custom_id, asyncio.Event()).wait()
            body = {"object": "chat.completion", "model": item.model, "echo": item.custom_id}
            return BatchResponse(200, body, request_id=f"q-{item.custom_id}")
        except asyncio.CancelledError:
            self.cancelled.append(item.custom_id)
            raise
        finally:
            self.running -= 1


def output_ids(store: BatchStore, batch_id: str) -> tuple[list[str], list[str]]:
    b = store.get_batch(batch_id)
    assert b.output_file_id is not None
    out = [x["custom_id"] for x in read_jsonl(store.file_content(b.output_file_id))]
    err = [] if b.error_file_id is None else [x["custom_id"] for x in read_jsonl(store.file_content(b.error_file_id))]
    return out, err


async def test_runs_every_request_once_with_bounded_concurrency(store: BatchStore, clock: Clock) -> None:
    batch_id = make_batch(store, 10, window="1h")
    queue = FakeQueue()
    runner = BatchRunner(store, queue, slo_class_for=slo_for, max_concurrency=3, poll_interval_s=0.01, fetch_size=4)
    await runner.run_until_idle()
    b = store.get_batch(batch_id)
    assert b.status is BatchStatus.COMPLETED and (b.completed, b.failed) == (10, 0)
    assert queue.peak <= 3
    assert sorted(Counter(i.custom_id for i in queue.calls).values()) == [1] * 10
    assert {(i.slo_class, i.deadline, i.url) for i in queue.calls} == {("batch-1", clock.t + 3600, b.endpoint)}
    out, err = output_ids(store, batch_id)
    assert out == [f"req-{i}" for i in range(10)] and err == []
    assert b.output_file_id is not None
    first = read_jsonl(store.file_content(b.output_file_id))[0]
    assert first["response"]["request_id"] == "q-req-0" and first["response"]["body"]["echo"] == "req-0"


async def test_outcomes_of_submit_are_recorded(store: BatchStore) -> None:
    batch_id = make_batch(store, 5)

    async def submit(item: BatchWorkItem) -> BatchResponse:
        match item.custom_id:
            case "req-0":
                return BatchResponse(200, {"ok": True})
            case "req-1":
                return BatchResponse(400, {"error": {"message": "bad prompt", "code": "invalid_prompt"}})
            case "req-2":
                raise BatchRequestError("rejected", "admission control refused the request")
            case "req-3":
                return BatchResponse(200, {"not json": object()})
        raise RuntimeError("engine exploded\nwith a traceback")

    await BatchRunner(store, submit, slo_class_for=slo_for, poll_interval_s=0.01).run_until_idle()
    b = store.get_batch(batch_id)
    assert b.status is BatchStatus.COMPLETED and (b.completed, b.failed) == (1, 4)
    assert b.error_file_id is not None
    errors = {x["custom_id"]: x["error"] for x in read_jsonl(store.file_content(b.error_file_id))}
    assert errors == {
        "req-1": {"code": "invalid_prompt", "message": "bad prompt"},
        "req-2": {"code": "rejected", "message": "admission control refused the request"},
        "req-3": {"code": "invalid_response", "message": "TypeError: Object of type object is not JSON serializable"},
        "req-4": {"code": "internal_error", "message": "RuntimeError: engine exploded"},
    }


async def test_earliest_deadline_batch_gets_scarce_slots(store: BatchStore, clock: Clock) -> None:
    late = make_batch(store, 3, window="24h")
    clock.advance(1)
    soon = make_batch(store, 3, window="30m")
    queue = FakeQueue(hold={"req-0", "req-1", "req-2"})  # every request waits until released
    runner = BatchRunner(store, queue, slo_class_for=slo_for, max_concurrency=2, poll_interval_s=0.01)
    await runner.step()
    await until(lambda: queue.running == 2)
    assert [(i.batch_id, i.custom_id, i.slo_class) for i in queue.calls] == [
        (soon, "req-0", "batch-1"),
        (soon, "req-1", "batch-1"),
    ]
    for i in range(3):
        queue.release(f"req-{i}")
    await runner.run_until_idle()
    assert Counter(i.batch_id for i in queue.calls) == {soon: 3, late: 3}
    assert {i.slo_class for i in queue.calls if i.batch_id == late} == {"batch-2"}


async def test_cancel_waits_for_in_flight_requests(store: BatchStore) -> None:
    batch_id = make_batch(store, 5)
    queue = FakeQueue(hold={"req-0", "req-1"})
    runner = BatchRunner(store, queue, slo_class_for=slo_for, max_concurrency=2, poll_interval_s=0.01)
    await runner.step()
    await until(lambda: queue.running == 2)
    store.cancel_batch(batch_id)
    await runner.step()
    assert store.get_batch(batch_id).status is BatchStatus.CANCELLING  # two requests still in flight
    queue.release("req-0")
    queue.release("req-1")
    await runner.run_until_idle()
    b = store.get_batch(batch_id)
    assert b.status is BatchStatus.CANCELLED and (b.completed, b.failed) == (2, 3)
    assert [i.custom_id for i in queue.calls] == ["req-0", "req-1"] and queue.cancelled == []
    assert output_ids(store, batch_id) == (["req-0", "req-1"], ["req-2", "req-3", "req-4"])


async def test_expiry_cancels_in_flight_and_keeps_partial_results(store: BatchStore, clock: Clock) -> None:
    batch_id = make_batch(store, 4, window="1h")
    queue = FakeQueue(hold={"req-2", "req-3"})
    runner = BatchRunner(store, queue, slo_class_for=slo_for, max_concurrency=4, poll_interval_s=0.01)
    await runner.step()
    await until(lambda: store.get_batch(batch_id).completed == 2 and queue.running == 2)
    clock.advance(3600)
    await runner.step()
    await until(lambda: runner.in_flight == 0 and len(queue.cancelled) == 2)
    assert sorted(queue.cancelled) == ["req-2", "req-3"]
    b = store.get_batch(batch_id)
    assert b.status is BatchStatus.EXPIRED and b.expired_at == clock.t
    assert output_ids(store, batch_id) == (["req-0", "req-1"], ["req-2", "req-3"])
    await runner.run_until_idle()


async def test_crash_mid_batch_then_resume(config: BatchConfig, clock: Clock) -> None:
    """Dispose of the engine mid-batch (no finalisation), reopen the file, resume: each custom_id once."""
    first = BatchStore(config, now=clock).open()
    batch_id = make_batch(first, 20)
    held = {f"req-{i}" for i in range(8, 20)}
    queue1 = FakeQueue(hold=held)
    runner1 = BatchRunner(first, queue1, slo_class_for=slo_for, max_concurrency=6, poll_interval_s=0.01)
    for _ in range(15000):  # step until the 8 free requests are recorded and 6 held ones are in flight
        # both counts: the runner counts a submit when it schedules it, the queue when it starts
        if first.get_batch(batch_id).completed == 8 and runner1.in_flight == 6 and queue1.running == 6:
            break
        await runner1.step()
        await asyncio.sleep(0.002)
    assert first.get_batch(batch_id).completed == 8 and queue1.running == 6
    first.close()  # "crash": the engine goes away with requests in flight and nothing finalised
    await runner1.aclose()  # the old process's tasks die without recording anything

    with BatchStore(config, now=clock) as second:
        (resumed,) = second.resumable_batches()
        assert (resumed.id, resumed.status, resumed.completed) == (batch_id, BatchStatus.IN_PROGRESS, 8)
        assert {p.custom_id for p in second.pending_requests(batch_id)} == held
        queue2 = FakeQueue()
        await BatchRunner(second, queue2, slo_class_for=slo_for, poll_interval_s=0.01).run_until_idle()
        assert {i.custom_id for i in queue2.calls} == held  # only the unfinished ones ran again
        b = second.get_batch(batch_id)
        assert b.status is BatchStatus.COMPLETED and (b.completed, b.failed) == (20, 0)
        out, err = output_ids(second, batch_id)
        assert out == [f"req-{i}" for i in range(20)] and err == []


async def test_unrecorded_outcome_is_submitted_again(store: BatchStore, monkeypatch: pytest.MonkeyPatch) -> None:
    batch_id = make_batch(store, 3)
    real = store.record_result
    failures = {"req-1": 1}

    def flaky(batch_id: str, custom_id: str, *args: object, **kwargs: object) -> bool:
        if failures.get(custom_id):
            failures[custom_id] -= 1
            raise OSError("disk full")
        return real(batch_id, custom_id, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "record_result", flaky)
    queue = FakeQueue()
    await BatchRunner(store, queue, slo_class_for=slo_for, poll_interval_s=0.01).run_until_idle()
    assert Counter(i.custom_id for i in queue.calls) == {"req-0": 1, "req-1": 2, "req-2": 1}
    assert output_ids(store, batch_id) == (["req-0", "req-1", "req-2"], [])


async def test_bad_slo_mapping_fails_the_batch(store: BatchStore) -> None:
    batch_id = make_batch(store, 2)

    def no_class(window_s: float) -> str:
        raise ValueError(f"no SLO class for a {window_s:.0f} s window")

    queue = FakeQueue()
    await BatchRunner(store, queue, slo_class_for=no_class, poll_interval_s=0.01).run_until_idle()
    b = store.get_batch(batch_id)
    assert b.status is BatchStatus.FAILED and queue.calls == []
    assert b.errors == [
        {
            "code": "no_slo_class",
            "message": "ValueError: no SLO class for a 86400 s window",
            "param": None,
            "line": None,
        }
    ]


async def test_stop_leaves_in_flight_requests_pending(store: BatchStore) -> None:
    batch_id = make_batch(store, 3)
    queue = FakeQueue(hold={"req-0", "req-1", "req-2"})
    runner = BatchRunner(store, queue, slo_class_for=slo_for, poll_interval_s=0.01)
    task = asyncio.create_task(runner.run())
    await until(lambda: queue.running == 3)
    runner.request_stop()
    await task
    assert sorted(queue.cancelled) == ["req-0", "req-1", "req-2"]
    assert len(store.pending_requests(batch_id)) == 3
    assert store.get_batch(batch_id).status is BatchStatus.IN_PROGRESS


def test_runner_rejects_bad_knobs(store: BatchStore, tmp_path: Path) -> None:
    for kwargs in ({"max_concurrency": 0}, {"poll_interval_s": 0}, {"fetch_size": 0}):
        with pytest.raises(ValueError):
            BatchRunner(store, FakeQueue(), slo_class_for=slo_for, **kwargs)  # type: ignore[arg-type]
