"""SSE parsing of engine streams: data payloads across network reads."""

import pytest

from qlm.runtime.vllm.sse import DataLines, parse_sse_data


def test_data_payloads_across_reads() -> None:
    # one event split over two reads, a keep-alive comment, two events in one read, [DONE]
    # without its final newline: the first read completes no line, [DONE] comes with flush()
    reads = (b'data: {"a": ', b'1}\n\n: keep-alive\n\n', b'data: {"b": 2}\n\ndata:{"c":3}\n\n', b"data: [DONE]")
    lines = DataLines()
    got = [lines.feed(r) for r in reads]
    assert got == [[], [b'{"a": 1}'], [b'{"b": 2}', b'{"c":3}'], []]
    assert lines.flush() == [b"[DONE]"]
    assert lines.flush() == []
    assert parse_sse_data(got[2][1]) == {"c": 3}


def test_bad_payloads_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_sse_data(b"{oops")
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_sse_data(b"[1, 2]")
