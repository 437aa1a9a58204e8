"""The Files and Batches endpoints through the official ``openai`` SDK and raw HTTP: a round
trip, cancel, expiry, every kind of bad input, auth, and the batch metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import openai
import pytest

from tests.api.gateway_helpers import API_KEY, ServedGateway, gateway_config

CHAT: Final = "/v1/chat/completions"
MAX_FILE_BYTES = 32 * 1024
MAX_REQUESTS = 60


def line(i: int | str, *, model: str = "mistral-7b", url: str = CHAT, max_tokens: int = 4) -> dict[str, Any]:
    return {"custom_id": f"req-{i}", "method": "POST", "url": url,
            "body": {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": f"hi {i}"}]}}


def jsonl(items: list[Any]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    data = tmp_path_factory.mktemp("batch")
    cfg = gateway_config(batch={"data_dir": str(data), "max_file_bytes": MAX_FILE_BYTES,
                                "max_requests_per_batch": MAX_REQUESTS, "max_concurrency": 4,
                                "poll_interval_s": 0.1})
    with ServedGateway(cfg) as s:
        yield s


@pytest.fixture(scope="module")
def sdk(served: ServedGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base}/v1", api_key=API_KEY, max_retries=0, timeout=30)


def upload(sdk: openai.OpenAI, items: list[Any]) -> str:
    return sdk.files.create(file=("in.jsonl", jsonl(items)), purpose="batch").id


def wait_ended(sdk: openai.OpenAI, batch_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        b = sdk.batches.retrieve(batch_id)
        if b.status in ("completed", "expired", "cancelled", "failed"):
            return b
        assert time.monotonic() < deadline, b
        time.sleep(0.1)


def outputs(sdk: openai.OpenAI, b: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def read(fid: str | None) -> list[dict[str, Any]]:
        return [] if fid is None else [json.loads(x) for x in sdk.files.content(fid).content.decode().splitlines()]

    return read(b.output_file_id), read(b.error_file_id)


# ---- the happy path -----------------------------------------------------------------------
def test_round_trip_with_the_sdk(sdk: openai.OpenAI, served: ServedGateway) -> None:
    items = [line(i) for i in range(12)] + [line("c", url="/v1/completions")]
    items[-1]["body"] = {"model": "llama-3-8b", "prompt": "once upon", "max_tokens": 4}
    chat_items = items[:-1]
    fid = upload(sdk, chat_items)
    assert sdk.files.retrieve(fid).purpose == "batch"
    assert fid in {f.id for f in sdk.files.list()}
    b = sdk.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h", metadata={"k": "v"})
    assert b.status == "validating" and b.metadata == {"k": "v"}
    b = wait_ended(sdk, b.id)
    assert b.status == "completed" and b.request_counts is not None
    assert (b.request_counts.completed, b.request_counts.failed) == (12, 0)
    out, err = outputs(sdk, b)
    assert [x["custom_id"] for x in out] == [f"req-{i}" for i in range(12)] and err == []
    assert out[0]["response"]["body"]["object"] == "chat.completion"
    assert b.id in {x.id for x in sdk.batches.list(limit=100)}
    # completions endpoint
    cb = sdk.batches.create(input_file_id=upload(sdk, items[-1:]), endpoint="/v1/completions",
                            completion_window="1h")  # type: ignore[arg-type]  # qlm accepts any window
    cb = wait_ended(sdk, cb.id)
    assert cb.status == "completed"
    assert outputs(sdk, cb)[0][0]["response"]["body"]["object"] == "text_completion"
    # the batch ran in the class of its window, and the metrics show it
    metrics = httpx.get(f"{served.base}/metrics").text
    assert 'slo_class="batch-2"' in metrics and 'slo_class="batch-1"' in metrics
    assert 'qlm_batch_requests{status="completed"}' in metrics
    assert sdk.files.delete(fid).deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(fid)


def test_list_batches_paginates(sdk: openai.OpenAI) -> None:
    fid = upload(sdk, [line(0)])
    ids = {sdk.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h").id for _ in range(3)}
    page = sdk.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    seen = {b.id for b in sdk.batches.list(limit=2)}  # auto-pagination through ``after``
    assert ids <= seen
    for i in ids:
        wait_ended(sdk, i)


# ---- cancel and expiry --------------------------------------------------------------------
def test_cancel_keeps_results_and_lists_the_rest(sdk: openai.OpenAI) -> None:
    fid = upload(sdk, [line(i, max_tokens=1500) for i in range(40)])
    b = sdk.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h")
    c = sdk.batches.cancel(b.id)
    assert c.status in ("cancelling", "cancelled")
    b = wait_ended(sdk, b.id)
    assert b.status == "cancelled" and b.cancelled_at is not None
    out, err = outputs(sdk, b)
    assert sorted(x["custom_id"] for x in out + err) == sorted(f"req-{i}" for i in range(40))
    assert any(x["error"]["code"] == "batch_cancelled" for x in err)
    assert b.request_counts is not None and b.request_counts.failed == len(err)
    with pytest.raises(openai.ConflictError):  # a completed batch cannot be cancelled
        done = sdk.batches.create(input_file_id=upload(sdk, [line(0)]), endpoint=CHAT, completion_window="24h")
        wait_ended(sdk, done.id)
        sdk.batches.cancel(done.id)


def test_short_window_expires(sdk: openai.OpenAI) -> None:
    fid = upload(sdk, [line(i, max_tokens=1500) for i in range(40)])
    b = sdk.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="2s")  # type: ignore[arg-type]
    b = wait_ended(sdk, b.id)
    assert b.status == "expired" and b.expired_at is not None
    out, err = outputs(sdk, b)
    assert sorted(x["custom_id"] for x in out + err) == sorted(f"req-{i}" for i in range(40))
    assert any(x["error"]["code"] == "batch_expired" for x in err)


# ---- bad input ----------------------------------------------------------------------------
BAD_FILES: dict[str, tuple[list[Any], str]] = {
    "duplicate custom_id": ([line(0), line(1), line(0)], "duplicate_custom_id"),
    "unknown endpoint": ([line(0, url="/v1/embeddings")], "invalid_url"),
    "unknown model": ([line(0), line(1, model="gpt-17")], "model_not_found"),
    "malformed line": ([line(0), "{not json"], "invalid_json"),
    "missing custom_id": ([{"method": "POST", "url": CHAT, "body": {"model": "mistral-7b"}}],
                          "missing_required_parameter"),
    "streaming line": ([{**line(0), "body": {**line(0)["body"], "stream": True}}], "invalid_value"),
    "too many requests": ([line(i) for i in range(MAX_REQUESTS + 1)], "too_many_requests"),
    "empty file": ([], "empty_file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_file_is_400(sdk: openai.OpenAI, case: str) -> None:
    items, code = BAD_FILES[case]
    with pytest.raises(openai.BadRequestError) as info:
        sdk.files.create(file=("in.jsonl", jsonl(items) if items else b""), purpose="batch")
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == code, err
    assert err["type"] == "invalid_request_error"


def test_oversize_file_is_413(sdk: openai.OpenAI, served: ServedGateway) -> None:
    big = b"x" * (MAX_FILE_BYTES + 1)
    with pytest.raises(openai.APIStatusError) as info:
        sdk.files.create(file=("in.jsonl", big), purpose="batch")
    assert info.value.status_code == 413
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "file_too_large"
    r = httpx.post(f"{served.base}/v1/files", headers={"Authorization": f"Bearer {API_KEY}"},
                   files={"file": ("in.jsonl", b"x" * (4 * MAX_FILE_BYTES))}, data={"purpose": "batch"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"endpoint": "/v1/embeddings"}, "endpoint"),
    ({"completion_window": "soon"}, "completion_window"),
    ({"input_file_id": "file-nope"}, "input_file_id"),
    ({"metadata": {"k": 5}}, "metadata"),
])
def test_bad_batch_parameters_are_400(sdk: openai.OpenAI, kwargs: dict[str, Any], param: str) -> None:
    args: dict[str, Any] = {"input_file_id": upload(sdk, [line(0)]), "endpoint": CHAT, "completion_window": "24h"}
    args.update(kwargs)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.batches.create(**args)
    assert isinstance(info.value.body, dict) and param in str(info.value.body.get("param")), info.value.body


def test_completions_file_for_a_chat_batch_is_400(sdk: openai.OpenAI) -> None:
    fid = upload(sdk, [line(0, url="/v1/completions")])
    with pytest.raises(openai.BadRequestError) as info:
        sdk.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h")
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "mismatched_url"


def test_raw_http_errors(served: ServedGateway) -> None:
    h = {"Authorization": f"Bearer {API_KEY}"}
    base = served.base
    assert httpx.get(f"{base}/v1/batches").status_code == 401
    assert httpx.get(f"{base}/v1/files/file-nope", headers=h).status_code == 404
    assert httpx.get(f"{base}/v1/files/file-nope/content", headers=h).status_code == 404
    assert httpx.delete(f"{base}/v1/files/file-nope", headers=h).status_code == 404
    r = httpx.get(f"{base}/v1/batches/batch_nope", headers=h)
    assert r.status_code == 404 and r.json()["error"]["param"] == "batch_id"
    assert httpx.post(f"{base}/v1/batches/batch_nope/cancel", headers=h).status_code == 404
    assert httpx.get(f"{base}/v1/batches", params={"limit": 0}, headers=h).status_code == 400
    assert httpx.post(f"{base}/v1/batches", content=b"{", headers=h).status_code == 400
    r = httpx.post(f"{base}/v1/batches", json={"endpoint": CHAT}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"
    r = httpx.post(f"{base}/v1/files", content=b"{}", headers={**h, "content-type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(f"{base}/v1/files", files={"file": ("a.jsonl", jsonl([line(0)]))}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(f"{base}/v1/files", files={"file": ("a.jsonl", jsonl([line(0)]))},
                   data={"purpose": "fine-tune"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"


def test_batch_api_off_without_data_dir(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from qlm.api.app import create_app

    app = create_app(gateway_config())
    with TestClient(app) as client:
        r = client.get("/v1/batches", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "batch_disabled"
