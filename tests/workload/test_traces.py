"""Trace readers (Azure CSV, Mooncake JSONL) and their errors."""

import json
from pathlib import Path

import pytest

from qlm.errors import ConfigError
from qlm.workload.scenario import load_scenario
from qlm.workload.traces import read_trace, trace_requests

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "azure2023_conv.csv"


def test_azure_csv(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
    )
    rows = read_trace(p)
    assert [r[1:] for r in rows] == [(374, 44), (396, 109)]
    # 50.995169 - 46.68059 = 4.314579 s apart (7-digit fractions truncated to 6)
    assert rows[1][0] - rows[0][0] == pytest.approx(4.314579, abs=1e-6)
    reqs = trace_requests(p, load_scenario("small"), seed=0, load=2.0)
    assert reqs[0].request.arrival_s == 0.0
    assert reqs[1].request.arrival_s == pytest.approx(4.314579 / 2, abs=1e-6)  # --load 2 halves gaps
    assert (reqs[1].request.prompt_tokens, reqs[1].output_tokens) == (396, 109)


def test_mooncake_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps({"timestamp": t, "input_length": 10, "output_length": 3, "hash_ids": []})
                           for t in (0, 3000, 6000)))
    rows = read_trace(p)
    assert [r[0] for r in rows] == [0.0, 3.0, 6.0]  # milliseconds -> seconds


@pytest.mark.parametrize(
    "text, match",
    [
        ("TIMESTAMP,ContextTokens\n1,2\n", "header: missing column"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,abc\n", "line 2: GeneratedTokens: not an integer"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,2,3\n", "line 2: TIMESTAMP: not a timestamp"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,-5,3\n", "ContextTokens: must be >= 0"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "trace has no rows"),
    ],
)
def test_bad_azure_rows(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as exc:
        read_trace(p)
    assert str(exc.value).startswith(str(p)) and "\n" not in str(exc.value)


def test_bad_mooncake_and_format(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"timestamp": 1, "input_length": 2}\n')
    with pytest.raises(ConfigError, match="line 1: output_length: missing field"):
        read_trace(p)
    q = tmp_path / "t.parquet"
    q.write_text("x")
    with pytest.raises(ConfigError, match="unknown trace format"):
        read_trace(q)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")
def test_shared_azure_trace_reads() -> None:
    rows = read_trace(SHARED)
    assert len(rows) == 19_366
