"""BatchStore: files, batches, results, finalisation, cancel, expiry, pagination and limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types import Batch, FileDeleted, FileObject
from sqlalchemy import func, select

from qlm.api.batch import (
    BatchConfig,
    BatchInputError,
    BatchNotFoundError,
    BatchStateError,
    BatchStatus,
    BatchStore,
    schema,
)
from tests.api.batch.helpers import CHAT, COMPLETIONS, MODELS, Clock, jsonl, line, make_batch, read_jsonl, requests_file

# [START files]


def test_file_round_trip_matches_openai_shapes(store: BatchStore, clock: Clock) -> None:
    data = requests_file(3)
    f = store.create_file(data, filename="in.jsonl", known_models=MODELS)
    obj = FileObject.model_validate(f.to_dict())
    assert (obj.id[:5], len(obj.id), obj.object, obj.bytes, obj.created_at, obj.filename, obj.purpose) == (
        "file-",
        5 + 24,
        "file",
        len(data),
        int(clock.t),
        "in.jsonl",
        "batch",
    )
    assert store.get_file(f.id) == f
    assert store.file_content(f.id) == data
    deleted = FileDeleted.model_validate(store.delete_file(f.id))
    assert (deleted.id, deleted.deleted) == (f.id, True)
    for call in (store.get_file, store.file_content, store.delete_file):
        with pytest.raises(BatchNotFoundError) as info:
            call(f.id)
        assert info.value.http_status == 404


def test_upload_is_validated(store: BatchStore) -> None:
    with pytest.raises(BatchInputError, match=r"^line 2: unknown model 'nope'$"):
        store.create_file(jsonl([line(0), line(1, model="nope")]), filename="in.jsonl", known_models=MODELS)
    with pytest.raises(BatchInputError) as info:
        store.create_file(requests_file(1), filename="in.jsonl", purpose="fine-tune")
    assert info.value.param == "purpose"
    with pytest.raises(BatchInputError):
        store.create_file(requests_file(1), filename="")
    assert store.list_files().data == ()  # nothing was stored


def test_limits_file_size_and_request_count(tmp_path: Path, clock: Clock) -> None:
    data = requests_file(3)
    cfg = BatchConfig(data_dir=tmp_path, max_file_bytes=len(data) - 1, max_requests_per_batch=2)
    with BatchStore(cfg, now=clock) as store:
        with pytest.raises(BatchInputError) as info:
            store.create_file(data, filename="in.jsonl")
        assert (info.value.code, info.value.param) == ("file_too_large", "file")
        assert f"larger than the limit of {len(data) - 1} bytes" in str(info.value)
    cfg = BatchConfig(data_dir=tmp_path, max_file_bytes=len(data), max_requests_per_batch=2)
    with BatchStore(cfg, now=clock) as store, pytest.raises(BatchInputError, match=r"^line 3: more than 2 requests"):
        store.create_file(data, filename="in.jsonl")


def test_list_files_pages_and_filters(store: BatchStore, clock: Clock) -> None:
    ids = []
    for _ in range(5):
        ids.append(store.create_file(requests_file(1), filename="in.jsonl").id)
        clock.advance(1)
    page = store.list_files(limit=2)  # newest first by default
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more
    page = store.list_files(limit=2, after=page.last_id)
    assert [f.id for f in page.data] == ids[::-1][2:4] and page.has_more
    page = store.list_files(limit=2, after=page.last_id)
    assert [f.id for f in page.data] == ids[:1] and not page.has_more
    assert [f.id for f in store.list_files(order="asc").data] == ids
    assert store.list_files(purpose="batch_output").data == ()
    with pytest.raises(BatchInputError):
        store.list_files(limit=0)
    with pytest.raises(BatchNotFoundError):
        store.list_files(after="file-missing")


# [END files]
# [START batches]


def test_create_batch_matches_openai_shape(store: BatchStore, clock: Clock) -> None:
    f = store.create_file(requests_file(4), filename="in.jsonl", known_models=MODELS)
    b = store.create_batch(
        input_file_id=f.id, endpoint=CHAT, completion_window="24h", metadata={"team": "x"}, known_models=MODELS
    )
    obj = Batch.model_validate(b.to_dict())
    assert obj.id.startswith("batch_") and len(obj.id) == 6 + 24
    assert (obj.object, obj.status, obj.endpoint, obj.input_file_id, obj.completion_window) == (
        "batch",
        "validating",
        CHAT,
        f.id,
        "24h",
    )
    assert (obj.created_at, obj.expires_at) == (int(clock.t), int(clock.t) + 86_400)
    assert obj.request_counts is not None
    assert (obj.request_counts.total, obj.request_counts.completed, obj.request_counts.failed) == (4, 0, 0)
    assert obj.metadata == {"team": "x"}
    assert store.get_batch(b.id) == b
    assert [p.custom_id for p in store.pending_requests(b.id)] == ["req-0", "req-1", "req-2", "req-3"]


def test_create_batch_rejects_bad_parameters(store: BatchStore) -> None:
    f = store.create_file(jsonl([line(0, url=CHAT), line(1, url=COMPLETIONS)]), filename="in.jsonl")
    cases = [
        (dict(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"), "endpoint"),
        (dict(input_file_id=f.id, endpoint=CHAT, completion_window="1 day"), "completion_window"),
        (dict(input_file_id="file-nope", endpoint=CHAT, completion_window="24h"), "input_file_id"),
        (dict(input_file_id=f.id, endpoint=CHAT, completion_window="24h", metadata={"k": 1}), "metadata"),
    ]
    for kwargs, param in cases:
        with pytest.raises(BatchInputError) as info:
            store.create_batch(**kwargs)  # type: ignore[arg-type]
        assert info.value.param == param
    with pytest.raises(BatchInputError, match=r"^line 2: url '/v1/completions' does not match"):
        store.create_batch(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    with pytest.raises(BatchInputError, match=r"^line 1: unknown model 'm'"):
        store.create_batch(input_file_id=f.id, endpoint=CHAT, completion_window="24h", known_models={"other"})
    assert store.list_batches().data == ()


def test_output_file_cannot_be_batch_input(store: BatchStore) -> None:
    batch_id = make_batch(store, 1)
    store.start_batch(batch_id)
    store.record_result(batch_id, "req-0", 200, {"ok": True})
    done = store.finalize(batch_id)
    assert done is not None and done.output_file_id is not None
    with pytest.raises(BatchInputError, match="purpose 'batch_output'"):
        store.create_batch(input_file_id=done.output_file_id, endpoint=CHAT, completion_window="24h")


def test_list_batches_pagination(store: BatchStore, clock: Clock) -> None:
    ids = []
    for _ in range(5):
        ids.append(make_batch(store, 1))
        clock.advance(1)
    newest_first = ids[::-1]
    seen: list[str] = []
    after = None
    while True:
        page = store.list_batches(limit=2, after=after)
        seen += [b.id for b in page.data]
        body = page.to_dict()
        assert body["object"] == "list" and body["first_id"] == page.data[0].id and body["last_id"] == page.data[-1].id
        if not page.has_more:
            break
        after = page.last_id
    assert seen == newest_first
    assert store.list_batches().to_dict()["has_more"] is False
    for bad in (0, 101):
        with pytest.raises(BatchInputError):
            store.list_batches(limit=bad)


def test_pagination_is_total_when_timestamps_tie(store: BatchStore) -> None:
    ids = {make_batch(store, 1) for _ in range(4)}  # the clock does not move: ties broken by id
    first = store.list_batches(limit=3)
    rest = store.list_batches(limit=3, after=first.last_id)
    assert {b.id for b in first.data} | {b.id for b in rest.data} == ids
    assert len(first.data) + len(rest.data) == 4 and not rest.has_more


# [END batches]
# [START results]


def test_record_result_is_idempotent(store: BatchStore) -> None:
    batch_id = make_batch(store, 2)
    assert not store.record_result(batch_id, "req-0", 200, {"n": 1})  # still validating: refused
    store.start_batch(batch_id)
    assert store.record_result(batch_id, "req-0", 200, {"n": 1}, request_id="r1")
    assert not store.record_result(batch_id, "req-0", 200, {"n": 2})
    assert not store.record_error(batch_id, "req-0", code="x", message="y")
    b = store.get_batch(batch_id)
    assert (b.completed, b.failed, b.pending) == (1, 0, 1)
    assert [p.custom_id for p in store.pending_requests(batch_id)] == ["req-1"]
    with pytest.raises(BatchNotFoundError):
        store.record_result(batch_id, "req-9", 200, {})
    with pytest.raises(BatchNotFoundError):
        store.record_result("batch_missing", "req-0", 200, {})


def test_finalize_writes_each_custom_id_exactly_once(store: BatchStore) -> None:
    batch_id = make_batch(store, 6)
    store.start_batch(batch_id)
    assert store.finalize(batch_id) is None  # not every request has a result
    for i in (5, 3, 1, 0):
        store.record_result(batch_id, f"req-{i}", 200, {"i": i}, request_id=f"q{i}")
    store.record_result(batch_id, "req-2", 429, {"error": {"message": "slow down", "code": "rate_limited"}})
    store.record_error(batch_id, "req-4", code="engine_down", message="no engine")
    done = store.finalize(batch_id)
    assert done is not None
    obj = Batch.model_validate(done.to_dict())
    assert obj.status == "completed" and obj.finalizing_at is not None and obj.completed_at is not None
    assert obj.request_counts is not None and (obj.request_counts.completed, obj.request_counts.failed) == (4, 2)
    assert done.output_file_id is not None and done.error_file_id is not None
    out = read_jsonl(store.file_content(done.output_file_id))
    err = read_jsonl(store.file_content(done.error_file_id))
    assert [x["custom_id"] for x in out] == ["req-0", "req-1", "req-3", "req-5"]  # input order
    assert out[0]["response"] == {"status_code": 200, "request_id": "q0", "body": {"i": 0}}
    assert out[0]["error"] is None and out[0]["id"].startswith("batch_req_")
    assert err == [
        {
            "id": err[0]["id"],
            "custom_id": "req-2",
            "response": {
                "status_code": 429,
                "request_id": None,
                "body": {"error": {"message": "slow down", "code": "rate_limited"}},
            },
            "error": {"code": "rate_limited", "message": "slow down"},
        },
        {
            "id": err[1]["id"],
            "custom_id": "req-4",
            "response": None,
            "error": {"code": "engine_down", "message": "no engine"},
        },
    ]
    assert len({x["id"] for x in out + err}) == 6
    out_file = FileObject.model_validate(store.get_file(done.output_file_id).to_dict())
    assert out_file.purpose == "batch_output" and out_file.filename == f"{batch_id}_output.jsonl"
    # finalising again changes nothing; results after the end are refused
    assert store.finalize(batch_id) is None
    assert not store.record_result(batch_id, "req-2", 200, {})
    assert store.get_batch(batch_id) == done


def test_all_successes_have_no_error_file(store: BatchStore) -> None:
    batch_id = make_batch(store, 2)
    store.start_batch(batch_id)
    for i in range(2):
        store.record_result(batch_id, f"req-{i}", 200, {})
    done = store.finalize(batch_id)
    assert done is not None and done.error_file_id is None and done.output_file_id is not None


def test_crash_during_finalisation_is_resumable(store: BatchStore) -> None:
    from sqlalchemy import update

    batch_id = make_batch(store, 2)
    store.start_batch(batch_id)
    for i in range(2):
        store.record_result(batch_id, f"req-{i}", 200, {})
    with store.engine.begin() as conn:  # as if the process died between the two finalisation commits
        conn.execute(update(schema.batches).values(status="finalizing"))
    assert [b.id for b in store.resumable_batches()] == [batch_id]
    done = store.finalize(batch_id)
    assert done is not None and done.status is BatchStatus.COMPLETED


# [END results]
# [START cancel and expiry]


def test_cancel_keeps_results_so_far(store: BatchStore, clock: Clock) -> None:
    batch_id = make_batch(store, 4)
    store.start_batch(batch_id)
    store.record_result(batch_id, "req-0", 200, {"i": 0})
    clock.advance(10)
    b = store.cancel_batch(batch_id)
    assert b.status is BatchStatus.CANCELLING and b.cancelling_at == clock.t
    assert store.cancel_batch(batch_id).status is BatchStatus.CANCELLING  # idempotent
    assert store.record_result(batch_id, "req-1", 200, {"i": 1})  # an in-flight one ends
    assert store.finalize(batch_id) is None  # cancelling, not in progress
    done = store.finish_cancel(batch_id)
    obj = Batch.model_validate(done.to_dict())
    assert obj.status == "cancelled" and obj.cancelled_at == int(clock.t)
    assert obj.request_counts is not None and (obj.request_counts.completed, obj.request_counts.failed) == (2, 2)
    assert done.output_file_id and done.error_file_id
    assert [x["custom_id"] for x in read_jsonl(store.file_content(done.output_file_id))] == ["req-0", "req-1"]
    err = read_jsonl(store.file_content(done.error_file_id))
    assert [(x["custom_id"], x["error"]["code"]) for x in err] == [
        ("req-2", "batch_cancelled"),
        ("req-3", "batch_cancelled"),
    ]
    assert store.finish_cancel(batch_id) == done  # idempotent
    assert store.cancel_batch(batch_id) == done


def test_cancel_of_ended_batch_is_a_state_error(store: BatchStore) -> None:
    batch_id = make_batch(store, 1)
    store.start_batch(batch_id)
    store.record_result(batch_id, "req-0", 200, {})
    store.finalize(batch_id)
    with pytest.raises(BatchStateError) as info:
        store.cancel_batch(batch_id)
    assert info.value.http_status == 409 and "completed" in str(info.value)
    with pytest.raises(BatchNotFoundError):
        store.cancel_batch("batch_missing")
    other = make_batch(store, 1)
    with pytest.raises(BatchStateError, match="not cancelling"):
        store.finish_cancel(other)


def test_expiry_keeps_partial_results(store: BatchStore, clock: Clock) -> None:
    keep = make_batch(store, 3, window="2h")
    batch_id = make_batch(store, 3, window="1h")
    store.start_batch(batch_id)
    store.record_result(batch_id, "req-1", 200, {"i": 1})
    clock.advance(3599)
    assert store.expire_overdue() == []
    clock.advance(1)
    (expired,) = store.expire_overdue()
    assert expired.id == batch_id and expired.status is BatchStatus.EXPIRED and expired.expired_at == clock.t
    assert Batch.model_validate(expired.to_dict()).status == "expired"
    assert (expired.completed, expired.failed, expired.pending) == (1, 2, 0)
    assert expired.output_file_id and expired.error_file_id
    assert [x["custom_id"] for x in read_jsonl(store.file_content(expired.output_file_id))] == ["req-1"]
    err = read_jsonl(store.file_content(expired.error_file_id))
    assert [(x["custom_id"], x["response"], x["error"]["code"]) for x in err] == [
        ("req-0", None, "batch_expired"),
        ("req-2", None, "batch_expired"),
    ]
    assert not store.record_result(batch_id, "req-0", 200, {})  # too late
    assert store.expire_overdue() == []
    assert store.get_batch(keep).status is BatchStatus.VALIDATING  # its window is 2h


def test_fail_batch(store: BatchStore) -> None:
    batch_id = make_batch(store, 1)
    b = store.fail_batch(batch_id, code="no_slo_class", message="no class for 24h")
    obj = Batch.model_validate(b.to_dict())
    assert obj.status == "failed" and obj.failed_at is not None
    assert obj.errors is not None and obj.errors.data is not None and obj.errors.data[0].code == "no_slo_class"
    assert store.resumable_batches() == []


# [END cancel and expiry]
# [START durability]


def test_state_survives_reopen_and_sqlite_uses_wal(config: BatchConfig, clock: Clock) -> None:
    with BatchStore(config, now=clock) as store:
        batch_id = make_batch(store, 3)
        store.start_batch(batch_id)
        store.record_result(batch_id, "req-1", 200, {"i": 1})
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert config.sqlite_path is not None and config.sqlite_path.exists()
    with BatchStore(config, now=clock) as store:
        assert [b.id for b in store.resumable_batches()] == [batch_id]
        assert [p.custom_id for p in store.pending_requests(batch_id)] == ["req-0", "req-2"]
        assert [p.custom_id for p in store.pending_requests(batch_id, after_line=1, limit=1)] == ["req-2"]
        with store.engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(schema.results)).scalar()
        assert n == 1


def test_store_requires_open(config: BatchConfig) -> None:
    store = BatchStore(config)
    assert not config.data_dir.exists()  # the constructor does no I/O
    with pytest.raises(RuntimeError, match="not open"):
        store.get_batch("batch_x")
    store.open()
    store.close()
    store.close()
    with pytest.raises(RuntimeError):
        store.list_batches()


def test_config_validation(tmp_path: Path) -> None:
    assert BatchConfig(data_dir=tmp_path).resolved_database_url() == f"sqlite:///{tmp_path / 'batch.sqlite3'}"
    pg = BatchConfig(database_url="postgresql+psycopg://u@db/qlm")
    assert pg.sqlite_path is None and pg.resolved_database_url() == "postgresql+psycopg://u@db/qlm"
    for bad in (
        {"endpoints": ()},
        {"endpoints": ("/v1/embeddings",)},
        {"endpoints": (CHAT, CHAT)},
        {"database_url": "batch.db"},
        {"max_file_bytes": 0},
        {"max_requests_per_batch": 0},
        {"unknown": 1},
    ):
        with pytest.raises(ValueError):
            BatchConfig.model_validate(bad)


# [END durability]


def test_concurrent_recorders_from_threads_count_each_request_once(store: BatchStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    batch_id = make_batch(store, 20)
    store.start_batch(batch_id)
    jobs = [(f"req-{i % 20}", k) for i in range(20) for k in range(3)]  # every request recorded three times
    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(lambda job: store.record_result(batch_id, job[0], 200, {"k": job[1]}), jobs))
    assert sum(won) == 20
    b = store.get_batch(batch_id)
    assert (b.completed, b.failed, b.pending) == (20, 0, 0)
    assert store.pending_requests(batch_id) == []
