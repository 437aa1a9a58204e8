"""Input-file validation: each rule rejects with the right line number, parameter and code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qlm.api.batch import BatchInputError, parse_batch_jsonl, parse_completion_window, validate_metadata
from tests.api.batch.helpers import CHAT, COMPLETIONS, MODELS, jsonl, line


def parse(data: bytes, *, endpoint: str | None = CHAT, max_requests: int = 100) -> list[Any]:
    return parse_batch_jsonl(data, endpoint=endpoint, known_models=MODELS, max_requests=max_requests)


def with_bad(bad: Any, at: int = 3) -> bytes:
    """Three valid lines with ``bad`` in 1-based position ``at``."""
    items: list[Any] = [line(i) for i in range(3)]
    items.insert(at - 1, bad)
    return jsonl(items)


def test_valid_file_keeps_order_and_line_numbers() -> None:
    data = jsonl([line(0), "", "   ", line(1, model="m2")])  # blank lines are skipped but counted
    out = parse(data)
    assert [(x.line, x.custom_id, x.model) for x in out] == [(1, "req-0", "m"), (4, "req-1", "m2")]
    assert out[0].body["messages"][0]["content"] == "hi 0"


def test_crlf_and_bom_are_accepted() -> None:
    data = b"\xef\xbb\xbf" + json.dumps(line(0)).encode() + b"\r\n" + json.dumps(line(1)).encode() + b"\r\n"
    assert [x.custom_id for x in parse(data)] == ["req-0", "req-1"]


def test_upload_time_accepts_either_supported_endpoint() -> None:
    data = jsonl([line(0, url=CHAT), line(1, url=COMPLETIONS)])
    assert len(parse(data, endpoint=None)) == 2


def _without(key: str) -> dict[str, Any]:
    d = line("x")
    del d[key]
    return d


def _body(**body: Any) -> dict[str, Any]:
    d = line("x")
    d["body"] = body
    return d


BAD_LINES = [
    # (bad line, expected param, expected code, fragment of the message)
    ("{not json", None, "invalid_json", "invalid JSON"),
    ("[1, 2]", None, "invalid_json", "expected a JSON object, got list"),
    ('{"custom_id": "a", "x": NaN}', None, "invalid_json", "NaN"),
    (_without("custom_id"), "custom_id", "missing_required_parameter", "missing required field 'custom_id'"),
    (_without("method"), "method", "missing_required_parameter", "'method'"),
    (_without("url"), "url", "missing_required_parameter", "'url'"),
    (_without("body"), "body", "missing_required_parameter", "'body'"),
    ({**line("x"), "custom_id": ""}, "custom_id", "invalid_value", "non-empty string"),
    ({**line("x"), "custom_id": 7}, "custom_id", "invalid_value", "non-empty string"),
    ({**line("x"), "custom_id": "c" * 513}, "custom_id", "invalid_value", "longer than 512"),
    ({**line("x"), "method": "GET"}, "method", "invalid_value", "method must be 'POST', got 'GET'"),
    ({**line("x"), "method": "post"}, "method", "invalid_value", "method must be 'POST'"),
    ({**line("x"), "url": "/v1/embeddings"}, "url", "invalid_url", "url '/v1/embeddings' is not supported"),
    ({**line("x"), "url": COMPLETIONS}, "url", "mismatched_url", "does not match the batch endpoint"),
    ({**line("x"), "body": "text"}, "body", "invalid_value", "body must be a JSON object, got str"),
    ({**line("x"), "body": None}, "body", "invalid_value", "body must be a JSON object"),
    (_body(messages=[]), "body.model", "missing_required_parameter", "body is missing 'model'"),
    (_body(model=""), "body.model", "invalid_value", "body.model must be a non-empty string"),
    (_body(model="gpt-9"), "body.model", "model_not_found", "unknown model 'gpt-9'"),
    (_body(model="m", stream=True), "body.stream", "invalid_value", "stream must not be true"),
]


@pytest.mark.parametrize(("bad", "param", "code", "fragment"), BAD_LINES)
def test_bad_line_is_rejected_with_its_line_number(bad: Any, param: str | None, code: str, fragment: str) -> None:
    with pytest.raises(BatchInputError) as info:
        parse(with_bad(bad, at=3))
    err = info.value
    assert err.line == 3
    assert err.param == param
    assert err.code == code
    assert fragment in str(err)
    assert str(err).startswith("line 3: ")
    assert "\n" not in str(err)


def test_duplicate_custom_id_names_both_lines() -> None:
    data = jsonl([line(1), line(2), line(3), line(4), line(5), line(6), line(3)])
    with pytest.raises(BatchInputError) as info:
        parse(data)
    assert str(info.value) == "line 7: duplicate custom_id 'req-3' (first on line 3)"
    assert info.value.code == "duplicate_custom_id"


def test_first_error_in_file_order_wins() -> None:
    data = jsonl([line(0), {**line(1), "method": "GET"}, "{broken"])
    with pytest.raises(BatchInputError, match=r"^line 2: method"):
        parse(data)


def test_invalid_utf8_names_the_line() -> None:
    data = jsonl([line(0), line(1)]) + b'{"custom_id": "\xff"}\n'
    with pytest.raises(BatchInputError) as info:
        parse(data)
    assert (info.value.line, info.value.code) == (3, "invalid_encoding")


def test_unknown_models_pass_when_no_model_set_is_given() -> None:
    data = jsonl([line(0, model="anything")])
    assert len(parse_batch_jsonl(data, endpoint=CHAT, known_models=None, max_requests=10)) == 1


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_empty_file_is_rejected(data: bytes) -> None:
    with pytest.raises(BatchInputError, match="no requests") as info:
        parse(data)
    assert info.value.line is None


def test_request_limit_names_the_first_line_over_it() -> None:
    parse(jsonl([line(i) for i in range(3)]), max_requests=3)
    with pytest.raises(BatchInputError) as info:
        parse(jsonl([line(0), "", line(1), line(2), line(3)]), max_requests=3)
    assert str(info.value) == "line 5: more than 3 requests in the file"
    assert info.value.code == "too_many_requests"


def test_error_serialises_to_openai_shapes() -> None:
    err = BatchInputError("unknown model 'x'", 4, "body.model", code="model_not_found")
    assert err.to_openai_error() == {
        "message": "line 4: unknown model 'x'",
        "type": "invalid_request_error",
        "param": "body.model",
        "code": "model_not_found",
        "line": 4,
    }
    assert err.to_batch_error() == {
        "code": "model_not_found",
        "message": "unknown model 'x'",
        "param": "body.model",
        "line": 4,
    }
    assert err.http_status == 400


@pytest.mark.parametrize(
    ("window", "seconds"),
    [
        ("24h", 86_400),
        ("1h", 3_600),
        ("30m", 1_800),
        ("45s", 45),
        ("1h30m", 5_400),
        ("2h0m10s", 7_210),
        (" 24h ", 86_400),
    ],
)
def test_completion_window_parses(window: str, seconds: float) -> None:
    assert parse_completion_window(window) == seconds


@pytest.mark.parametrize("window", ["", "24", "h", "0h", "0m0s", "1.5h", "-1h", "1d", "30m1h", "1h1h", "24 h"])
def test_bad_completion_window_is_rejected(window: str) -> None:
    with pytest.raises(BatchInputError) as info:
        parse_completion_window(window)
    assert info.value.param == "completion_window"


def test_metadata_limits() -> None:
    assert validate_metadata(None) is None
    assert validate_metadata({"team": "a"}) == {"team": "a"}
    for bad in ({str(i): "v" for i in range(17)}, {"k": 1}, {"k" * 65: "v"}, {"k": "v" * 513}):
        with pytest.raises(BatchInputError) as info:
            validate_metadata(bad)
        assert info.value.param == "metadata"
