"""SSE parsing of engine streams: data payloads across network reads."""

from collections.abc import AsyncIterator

import pytest

from qlm.runtime.vllm.sse import parse_sse_data, sse_data


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def test_data_payloads_across_reads() -> None:
    # one event split over two reads, a keep-alive comment, two events in one read, [DONE]
    # without its final newline: three yields (the first read completes no line)
    reads = (b'data: {"a": ', b'1}\n\n: keep-alive\n\n', b'data: {"b": 2}\n\ndata:{"c":3}\n\n', b"data: [DONE]")
    got = [batch async for batch in sse_data(_chunks(*reads))]
    assert got == [[b'{"a": 1}'], [b'{"b": 2}', b'{"c":3}'], [b"[DONE]"]]
    assert parse_sse_data(got[1][1]) == {"c": 3}


def test_bad_payloads_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_sse_data(b"{oops")
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_sse_data(b"[1, 2]")
