"""A real crash: a runner process is killed with SIGKILL mid-batch, then another resumes its batch."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from qlm.api.batch import BatchConfig, BatchResponse, BatchRunner, BatchStatus, BatchStore, BatchWorkItem, schema
from tests.api.batch.helpers import T0, Clock, make_batch, read_jsonl

REPO = Path(__file__).resolve().parents[3]

CHILD = """
import asyncio, os, signal, sys
from qlm.api.batch import BatchConfig, BatchResponse, BatchRunner, BatchStore

data_dir, kill_after = sys.argv[1], int(sys.argv[2])
store = BatchStore(BatchConfig(data_dir=data_dir), now=lambda: {t}).open()
submitted = 0

async def submit(item):
    global submitted
    submitted += 1
    if submitted == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)  # other requests' results may be mid-commit
    await asyncio.sleep(0)
    return BatchResponse(200, {{"by": "child", "custom_id": item.custom_id}})

runner = BatchRunner(store, submit, slo_class_for=lambda s: "batch", max_concurrency=8, poll_interval_s=0.01)
asyncio.run(runner.run_until_idle())
"""

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


@pytest.mark.parametrize("kill_after", [1, 23])
async def test_sigkill_mid_batch_then_resume(tmp_path: Path, kill_after: int) -> None:
    config = BatchConfig(data_dir=tmp_path / "data")
    clock = Clock(T0)
    with BatchStore(config, now=clock) as store:
        batch_id = make_batch(store, 40)

    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(t=T0 + 5), str(config.data_dir), str(kill_after)],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]

    with BatchStore(config, now=clock) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            recorded = conn.execute(
                select(func.count()).select_from(schema.results).where(schema.results.c.batch_id == batch_id)
            ).scalar_one()
        before = store.get_batch(batch_id)
        assert before.status is BatchStatus.IN_PROGRESS
        assert before.completed == recorded < 40  # counters agree with the committed results
        pending = {p.custom_id for p in store.pending_requests(batch_id)}
        assert len(pending) == 40 - recorded

        resubmitted: list[str] = []

        async def submit(item: BatchWorkItem) -> BatchResponse:
            resubmitted.append(item.custom_id)
            return BatchResponse(200, {"by": "parent", "custom_id": item.custom_id})

        await BatchRunner(store, submit, slo_class_for=lambda s: "batch", poll_interval_s=0.01).run_until_idle()
        assert sorted(resubmitted) == sorted(pending)
        after = store.get_batch(batch_id)
        assert after.status is BatchStatus.COMPLETED and (after.completed, after.failed) == (40, 0)
        assert after.output_file_id is not None and after.error_file_id is None
        out = read_jsonl(store.file_content(after.output_file_id))
        assert [x["custom_id"] for x in out] == [f"req-{i}" for i in range(40)]
        by = {x["custom_id"]: x["response"]["body"]["by"] for x in out}
        assert {c for c, who in by.items() if who == "parent"} == pending
