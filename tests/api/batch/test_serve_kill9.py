"""Acceptance: ``qlm serve`` is killed with SIGKILL mid-batch and restarted on the same data dir;
the batch resumes and completes with every ``custom_id`` exactly once in its output file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from qlm.runtime.emulator.server import free_port

REPO = Path(__file__).resolve().parents[3]
N = 400
KEY = "sk-kill9"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")]


@contextmanager
def serve(config: Path, data_dir: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``qlm serve`` as a child process; yields once ``/health`` answers."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qlm", "serve", "--config", str(config), "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 45
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "qlm serve did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_sigkill_mid_batch_then_restart_completes_each_custom_id_once(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({
        "auth": {"api_keys": [KEY]},
        "emulated": {"speed": 100.0},
        "batch": {"max_concurrency": 32, "poll_interval_s": 0.1},
    }), encoding="utf-8")
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    port = free_port("127.0.0.1")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=30)
    lines = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "mistral-7b" if i % 2 else "llama-3-8b", "max_tokens": 4,
                       "messages": [{"role": "user", "content": f"question {i}"}]}} for i in range(N)]
    payload = "".join(json.dumps(x) + "\n" for x in lines).encode()

    with serve(config, data_dir, port, log) as proc:
        f = client.files.create(file=("input.jsonl", payload), purpose="batch")
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        deadline = time.monotonic() + 30
        while True:
            b = client.batches.retrieve(batch.id)
            assert b.request_counts is not None
            if b.request_counts.completed >= N // 5:
                break
            assert b.status == "in_progress" or b.status == "validating", b
            assert time.monotonic() < deadline, b
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    at_kill = b.request_counts.completed
    assert at_kill < N, "the batch finished before the kill; make it longer"

    with serve(config, data_dir, port, log):
        deadline = time.monotonic() + 40
        while True:
            b = client.batches.retrieve(batch.id)
            if b.status not in ("validating", "in_progress", "finalizing"):
                break
            assert time.monotonic() < deadline, b
            time.sleep(0.2)
        assert b.status == "completed", b
        assert b.request_counts is not None
        assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (N, N, 0)
        assert b.output_file_id is not None and b.error_file_id is None
        out = [json.loads(x) for x in client.files.content(b.output_file_id).content.decode().splitlines()]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    counts = Counter(x["custom_id"] for x in out)
    assert set(counts) == {x["custom_id"] for x in lines}
    assert max(counts.values()) == 1
    assert all(x["response"]["status_code"] == 200 and x["error"] is None for x in out)
    assert 'qlm_batch_requests{status="completed"} 400.0' in metrics
