"""Storage, validation and execution of OpenAI-compatible batches (no HTTP here).

``BatchStore`` keeps files, batches and per-request results durably (SQLite in WAL mode by
default, PostgreSQL through a SQLAlchemy URL); ``parse_batch_jsonl`` validates input files;
``BatchRunner`` feeds pending requests to a caller-supplied ``submit`` and records the outcomes.
See docs/batch.md for the data model, the guarantees and how the gateway wires it.
"""

from qlm.api.batch.config import SUPPORTED_ENDPOINTS, BatchConfig
from qlm.api.batch.errors import BatchAPIError, BatchInputError, BatchNotFoundError, BatchStateError
from qlm.api.batch.records import ACTIVE_STATUSES, BatchRecord, BatchStatus, FileRecord, Page, PendingRequest
from qlm.api.batch.runner import (
    BatchRequestError,
    BatchResponse,
    BatchRunner,
    BatchWorkItem,
    SLOClassFn,
    SubmitFn,
)
from qlm.api.batch.store import (
    CODE_CANCELLED,
    CODE_EXPIRED,
    PURPOSE_BATCH,
    PURPOSE_BATCH_OUTPUT,
    BatchStore,
    new_id,
)
from qlm.api.batch.validation import BatchLine, parse_batch_jsonl, parse_completion_window, validate_metadata

__all__ = [
    "ACTIVE_STATUSES",
    "CODE_CANCELLED",
    "CODE_EXPIRED",
    "PURPOSE_BATCH",
    "PURPOSE_BATCH_OUTPUT",
    "SUPPORTED_ENDPOINTS",
    "BatchAPIError",
    "BatchConfig",
    "BatchInputError",
    "BatchLine",
    "BatchNotFoundError",
    "BatchRecord",
    "BatchRequestError",
    "BatchResponse",
    "BatchRunner",
    "BatchStateError",
    "BatchStatus",
    "BatchStore",
    "BatchWorkItem",
    "FileRecord",
    "Page",
    "PendingRequest",
    "SLOClassFn",
    "SubmitFn",
    "new_id",
    "parse_batch_jsonl",
    "parse_completion_window",
    "validate_metadata",
]
