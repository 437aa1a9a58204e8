"""Tables of the batch store (portable SQLAlchemy Core: SQLite and PostgreSQL).

    qlm_batch_files           one row per file (uploads and generated outputs)
    qlm_batch_file_contents   the bytes of each file, 1:1 with qlm_batch_files
    qlm_batch_batches         one row per batch, with its status, timestamps and counters
    qlm_batch_requests        the validated input lines of each batch, PK (batch_id, custom_id)
    qlm_batch_results         at most one result per request, PK (batch_id, custom_id)

A request is *pending* when it has no row in ``qlm_batch_results``. Times are Unix seconds
(double precision); the JSON of request bodies and responses is stored as text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

files = Table(
    "qlm_batch_files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("filename", String(512), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", Double, nullable=False),
    Index("ix_qlm_batch_files_created", "created_at", "id"),
)

file_contents = Table(
    "qlm_batch_file_contents",
    metadata,
    Column("file_id", String(64), ForeignKey("qlm_batch_files.id", ondelete="CASCADE"), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

batches = Table(
    "qlm_batch_batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),  # no FK: the input file may be deleted
    Column("completion_window", String(32), nullable=False),
    Column("window_s", Double, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("in_progress_at", Double),
    Column("finalizing_at", Double),
    Column("completed_at", Double),
    Column("failed_at", Double),
    Column("expired_at", Double),
    Column("cancelling_at", Double),
    Column("cancelled_at", Double),
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("errors_json", Text),
    Column("metadata_json", Text),
    Column("total", Integer, nullable=False),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Index("ix_qlm_batch_batches_created", "created_at", "id"),
    Index("ix_qlm_batch_batches_status", "status", "expires_at"),
)

requests = Table(
    "qlm_batch_requests",
    metadata,
    Column("batch_id", String(64), ForeignKey("qlm_batch_batches.id", ondelete="CASCADE"), primary_key=True),
    Column("custom_id", String(512), primary_key=True),
    Column("line", Integer, nullable=False),
    Column("url", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Index("ix_qlm_batch_requests_line", "batch_id", "line"),
)

results = Table(
    "qlm_batch_results",
    metadata,
    Column("batch_id", String(64), ForeignKey("qlm_batch_batches.id", ondelete="CASCADE"), primary_key=True),
    Column("custom_id", String(512), primary_key=True),
    Column("id", String(64), nullable=False),  # "batch_req_...", the output line's id
    Column("line", Integer, nullable=False),  # input line, so outputs keep input order
    Column("ok", Boolean, nullable=False),  # True: 2xx response (output file); False: error file
    Column("status_code", Integer),
    Column("request_id", Text),
    Column("body", Text),  # JSON of the response body, if there was a response
    Column("error_code", Text),
    Column("error_message", Text),
    Column("recorded_at", Double, nullable=False),
    Index("ix_qlm_batch_results_line", "batch_id", "line"),
)
