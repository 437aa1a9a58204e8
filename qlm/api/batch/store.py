"""Durable storage of batch files, batches and per-request results (SQLAlchemy Core).

Contract
--------
* Every method runs in its own connection and transaction and commits before returning, so the
  store may be called from a thread pool. Nothing is cached in memory: two stores over the same
  database (two replicas on PostgreSQL, or a store reopened after a crash) see the same state.
* A result counts once it is committed: :meth:`BatchStore.record_result` and
  :meth:`BatchStore.record_error` update the batch's counters in the same transaction as the
  result row. A request is *pending* while it has no result row; ``(batch_id, custom_id)`` is the
  primary key of results, so a request has at most one result and recording it again is a no-op.
* Status changes are compare-and-set updates on the batch row (``UPDATE ... WHERE status IN``),
  so concurrent callers cannot both win a transition, and results arriving after a batch ended
  are refused.
* When a batch ends (completed, expired or cancelled) the store writes its output file (every
  2xx result) and, if any request failed or never ran, its error file; every ``custom_id`` of
  the input appears in exactly one of the two, in input order.
* File contents are stored in the database (``qlm_batch_file_contents``), not in the data dir:
  the database is then the only state to back up or share between replicas.
* Time comes from the injected ``now`` (Unix seconds); nothing reads the clock directly.

SQLite runs in WAL mode with ``synchronous=FULL`` by default; write transactions start with
``BEGIN IMMEDIATE`` so that concurrent writers queue on the lock instead of failing mid-way.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Row, and_, create_engine, event, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from qlm.api.batch import schema
from qlm.api.batch.config import BatchConfig
from qlm.api.batch.errors import BatchInputError, BatchNotFoundError, BatchStateError
from qlm.api.batch.records import ACTIVE_STATUSES, BatchRecord, BatchStatus, FileRecord, Page, PendingRequest
from qlm.api.batch.validation import parse_batch_jsonl, parse_completion_window, validate_metadata

#: ``purpose`` of user uploads and of the files the store generates.
PURPOSE_BATCH = "batch"
PURPOSE_BATCH_OUTPUT = "batch_output"

#: Error codes the store writes into error files for requests that never ran.
CODE_EXPIRED = "batch_expired"
CODE_CANCELLED = "batch_cancelled"

_WRITE_OPTION = "qlm_batch_write"
_RECORDABLE = (BatchStatus.IN_PROGRESS.value, BatchStatus.CANCELLING.value)
_EXPIRABLE = (BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value)
_CANCELLABLE = (BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value)

FILE_LIST_MAX = 10_000
BATCH_LIST_MAX = 100


def new_id(prefix: str) -> str:
    """A random id: ``prefix`` followed by 24 hex digits (``file-``, ``batch_``, ``batch_req_``)."""
    return prefix + secrets.token_hex(12)


class _Refused(Exception):
    """Internal: rolls back a result transaction (result already present, or batch not accepting results)."""


class BatchStore:
    """Files, batches and results over one SQLAlchemy engine.

    Usage::

        store = BatchStore(config, now=time.time).open()   # creates the directory and the tables
        f = store.create_file(data, filename="in.jsonl", known_models={"llama"})
        b = store.create_batch(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        ...
        store.close()

    The constructor does no I/O; :meth:`open` creates the engine. Methods raise ``RuntimeError``
    before :meth:`open` or after :meth:`close`.
    """

    def __init__(
        self,
        config: BatchConfig,
        *,
        now: Callable[[], float] = time.time,
        id_factory: Callable[[str], str] = new_id,
    ) -> None:
        self.config = config
        self._now = now
        self._new_id = id_factory
        self._engine: Engine | None = None

    # [START lifecycle]
    def open(self) -> BatchStore:
        """Create the engine (and, for SQLite, the data dir), and the tables if missing. Returns ``self``."""
        if self._engine is not None:
            return self
        url = self.config.resolved_database_url()
        path = self.config.sqlite_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine, self.config)
        schema.metadata.create_all(engine)
        self._engine = engine
        return self

    def close(self) -> None:
        """Dispose of the engine; committed state stays in the database. Safe to call twice."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> BatchStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def clock(self) -> Callable[[], float]:
        """The store's clock (Unix seconds); runners default to it."""
        return self._now

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("BatchStore is not open; call open() first")
        return self._engine

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    # [END lifecycle]

    # [START files]
    def create_file(
        self,
        content: bytes,
        *,
        filename: str,
        purpose: str = PURPOSE_BATCH,
        known_models: Collection[str] | None = None,
    ) -> FileRecord:
        """Store an uploaded file after validating it as batch input (``purpose="batch"`` only).

        Raises
        ------
        BatchInputError
            Wrong purpose, empty filename, larger than ``max_file_bytes``, or an invalid line
            (checked against every supported endpoint; the batch's own endpoint is checked at
            batch creation).
        """
        if purpose != PURPOSE_BATCH:
            raise BatchInputError(
                f"purpose must be {PURPOSE_BATCH!r}, got {purpose!r}", None, "purpose", code="invalid_value"
            )
        if not filename:
            raise BatchInputError("filename must not be empty", None, "filename", code="invalid_value")
        self._check_size(len(content))
        parse_batch_jsonl(
            content,
            endpoint=None,
            known_models=known_models,
            max_requests=self.config.max_requests_per_batch,
            supported_endpoints=self.config.endpoints,
        )
        with self._write() as conn:
            return self._insert_file(conn, content, filename=filename, purpose=purpose)

    def _check_size(self, size: int) -> None:
        limit = self.config.max_file_bytes
        if size > limit:
            raise BatchInputError(
                f"file is {size} bytes, larger than the limit of {limit} bytes", None, "file", code="file_too_large"
            )

    def _insert_file(self, conn: Connection, content: bytes, *, filename: str, purpose: str) -> FileRecord:
        record = FileRecord(
            id=self._new_id("file-"), filename=filename, purpose=purpose, bytes=len(content), created_at=self._now()
        )
        conn.execute(
            insert(schema.files).values(
                id=record.id,
                filename=record.filename,
                purpose=record.purpose,
                bytes=record.bytes,
                created_at=record.created_at,
            )
        )
        conn.execute(insert(schema.file_contents).values(file_id=record.id, data=content))
        return record

    def get_file(self, file_id: str) -> FileRecord:
        """The file's record. Raises :class:`BatchNotFoundError`."""
        with self._read() as conn:
            row = conn.execute(select(schema.files).where(schema.files.c.id == file_id)).first()
        if row is None:
            raise BatchNotFoundError("file", file_id)
        return _file_record(row)

    def file_content(self, file_id: str) -> bytes:
        """The file's bytes, exactly as stored. Raises :class:`BatchNotFoundError`."""
        with self._read() as conn:
            data = conn.execute(
                select(schema.file_contents.c.data).where(schema.file_contents.c.file_id == file_id)
            ).scalar_one_or_none()
        if data is None:
            raise BatchNotFoundError("file", file_id)
        return bytes(data)

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a file and its content; returns OpenAI's ``FileDeleted`` object.

        Batches keep their own copy of their requests, so deleting an input file does not affect a
        running batch; a batch whose output file was deleted keeps the dangling ``output_file_id``.
        """
        with self._write() as conn:
            conn.execute(schema.file_contents.delete().where(schema.file_contents.c.file_id == file_id))
            deleted = conn.execute(schema.files.delete().where(schema.files.c.id == file_id)).rowcount
        if not deleted:
            raise BatchNotFoundError("file", file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def list_files(
        self,
        *,
        after: str | None = None,
        limit: int = FILE_LIST_MAX,
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> Page[FileRecord]:
        """Files by ``created_at`` (then id), ``limit`` in 1..10000, after the file ``after``."""
        _check_limit(limit, FILE_LIST_MAX)
        if order not in ("asc", "desc"):
            raise BatchInputError(f"order must be 'asc' or 'desc', got {order!r}", None, "order", code="invalid_value")
        t = schema.files
        cond = [] if purpose is None else [t.c.purpose == purpose]
        with self._read() as conn:
            rows = _page_rows(conn, t, cond, after=after, limit=limit, descending=order == "desc", kind="file")
        return Page(data=tuple(_file_record(r) for r in rows[:limit]), has_more=len(rows) > limit)

    # [END files]

    # [START batches]
    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, Any] | None = None,
        known_models: Collection[str] | None = None,
    ) -> BatchRecord:
        """Validate the input file against ``endpoint`` and record the batch and its requests.

        The batch starts ``validating`` (accepted and durable, no runner has picked it up yet);
        ``expires_at = created_at + completion window``.

        Raises
        ------
        BatchInputError
            Unsupported endpoint, bad completion window or metadata, missing or non-batch input
            file (``param="input_file_id"``), or an invalid line.
        """
        if endpoint not in self.config.endpoints:
            raise BatchInputError(
                f"endpoint {endpoint!r} is not supported; expected one of {', '.join(self.config.endpoints)}",
                None,
                "endpoint",
                code="invalid_value",
            )
        window_s = parse_completion_window(completion_window)
        meta = validate_metadata(metadata)
        try:
            source = self.get_file(input_file_id)
        except BatchNotFoundError:
            raise BatchInputError(
                f"no file with id {input_file_id!r}", None, "input_file_id", code="invalid_file"
            ) from None
        if source.purpose != PURPOSE_BATCH:
            raise BatchInputError(
                f"file {input_file_id!r} has purpose {source.purpose!r}, expected {PURPOSE_BATCH!r}",
                None,
                "input_file_id",
                code="invalid_file",
            )
        content = self.file_content(input_file_id)
        self._check_size(len(content))
        lines = parse_batch_jsonl(
            content,
            endpoint=endpoint,
            known_models=known_models,
            max_requests=self.config.max_requests_per_batch,
            supported_endpoints=self.config.endpoints,
        )
        created = self._now()
        batch_id = self._new_id("batch_")
        with self._write() as conn:
            conn.execute(
                insert(schema.batches).values(
                    id=batch_id,
                    endpoint=endpoint,
                    input_file_id=input_file_id,
                    completion_window=completion_window,
                    window_s=window_s,
                    status=BatchStatus.VALIDATING.value,
                    created_at=created,
                    expires_at=created + window_s,
                    metadata_json=None if meta is None else json.dumps(meta),
                    total=len(lines),
                    completed=0,
                    failed=0,
                )
            )
            conn.execute(
                insert(schema.requests),
                [
                    {
                        "batch_id": batch_id,
                        "custom_id": ln.custom_id,
                        "line": ln.line,
                        "url": ln.url,
                        "body": json.dumps(ln.body, ensure_ascii=False),
                    }
                    for ln in lines
                ],
            )
            return self._batch(conn, batch_id)

    def get_batch(self, batch_id: str) -> BatchRecord:
        """The batch with its counts. Raises :class:`BatchNotFoundError`."""
        with self._read() as conn:
            return self._batch(conn, batch_id)

    def _batch(self, conn: Connection, batch_id: str) -> BatchRecord:
        row = conn.execute(select(schema.batches).where(schema.batches.c.id == batch_id)).first()
        if row is None:
            raise BatchNotFoundError("batch", batch_id)
        return _batch_record(row)

    def list_batches(self, *, after: str | None = None, limit: int = 20) -> Page[BatchRecord]:
        """Batches newest first (``created_at``, then id), ``limit`` in 1..100, after the batch ``after``."""
        _check_limit(limit, BATCH_LIST_MAX)
        with self._read() as conn:
            rows = _page_rows(conn, schema.batches, [], after=after, limit=limit, descending=True, kind="batch")
        return Page(data=tuple(_batch_record(r) for r in rows[:limit]), has_more=len(rows) > limit)

    def start_batch(self, batch_id: str) -> BatchRecord:
        """``validating -> in_progress`` (sets ``in_progress_at``); in any other status, returns the batch unchanged."""
        with self._write() as conn:
            self._transition(
                conn, batch_id, (BatchStatus.VALIDATING.value,), BatchStatus.IN_PROGRESS, in_progress_at=self._now()
            )
            return self._batch(conn, batch_id)

    def cancel_batch(self, batch_id: str) -> BatchRecord:
        """``validating|in_progress -> cancelling`` (sets ``cancelling_at``).

        Idempotent on a batch already cancelling or cancelled. The runner moves it to ``cancelled``
        once its in-flight requests end (:meth:`finish_cancel`); results recorded so far are kept.

        Raises
        ------
        BatchNotFoundError, BatchStateError
            The batch is finalizing or has ended otherwise.
        """
        with self._write() as conn:
            if self._transition(conn, batch_id, _CANCELLABLE, BatchStatus.CANCELLING, cancelling_at=self._now()):
                return self._batch(conn, batch_id)
            batch = self._batch(conn, batch_id)
        if batch.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            return batch
        raise BatchStateError(f"batch {batch_id} is {batch.status.value} and cannot be cancelled")

    def fail_batch(self, batch_id: str, *, code: str, message: str) -> BatchRecord:
        """Mark a non-terminal batch ``failed`` with one error (no output files). Returns the batch."""
        errors = [{"code": code, "message": message, "param": None, "line": None}]
        with self._write() as conn:
            self._transition(
                conn,
                batch_id,
                tuple(s.value for s in ACTIVE_STATUSES),
                BatchStatus.FAILED,
                failed_at=self._now(),
                errors_json=json.dumps(errors),
            )
            return self._batch(conn, batch_id)

    def resumable_batches(self) -> list[BatchRecord]:
        """Batches a runner must carry on with (validating, in_progress, finalizing, cancelling), by deadline."""
        b = schema.batches
        with self._read() as conn:
            rows = conn.execute(
                select(b)
                .where(b.c.status.in_([s.value for s in ACTIVE_STATUSES]))
                .order_by(b.c.expires_at, b.c.created_at, b.c.id)
            ).all()
        return [_batch_record(r) for r in rows]

    def request_totals(self) -> dict[str, dict[str, int]]:
        """Per batch status: ``{"batches", "total", "completed", "failed"}`` summed over its batches (metrics)."""
        b = schema.batches
        with self._read() as conn:
            rows = conn.execute(
                select(b.c.status, func.count(), func.sum(b.c.total), func.sum(b.c.completed), func.sum(b.c.failed))
                .group_by(b.c.status)
            ).all()
        return {
            str(r[0]): {"batches": int(r[1]), "total": int(r[2] or 0), "completed": int(r[3] or 0),
                        "failed": int(r[4] or 0)}
            for r in rows
        }

    def _transition(
        self, conn: Connection, batch_id: str, from_: tuple[str, ...], to: BatchStatus, **values: Any
    ) -> bool:
        """Compare-and-set the status; True if this call made the change."""
        b = schema.batches
        res = conn.execute(update(b).where(b.c.id == batch_id, b.c.status.in_(from_)).values(status=to.value, **values))
        return res.rowcount == 1

    # [END batches]

    # [START results]
    def record_result(
        self,
        batch_id: str,
        custom_id: str,
        status_code: int,
        body: Any,
        *,
        request_id: str | None = None,
    ) -> bool:
        """Durably record the response to one request; True if this call recorded it.

        A 2xx ``status_code`` counts as completed (output file); any other as failed (error file,
        with ``error.code``/``error.message`` taken from an OpenAI-style ``body["error"]`` when present).
        Returns False, changing nothing, when the request already has a result (the first one
        wins) or the batch no longer accepts results (it is not in_progress or cancelling).

        Raises
        ------
        BatchNotFoundError
            No such batch, or no request ``custom_id`` in it.
        TypeError, ValueError
            ``body`` cannot be encoded as JSON (nothing is recorded).
        """
        ok = 200 <= status_code < 300
        code: str | None = None
        message: str | None = None
        if not ok:
            code, message = _error_from_body(status_code, body)
        return self._record(
            batch_id,
            custom_id,
            ok=ok,
            status_code=status_code,
            request_id=request_id,
            body=json.dumps(body, ensure_ascii=False),
            error_code=code,
            error_message=message,
        )

    def record_error(
        self, batch_id: str, custom_id: str, *, code: str, message: str, status_code: int | None = None
    ) -> bool:
        """Durably record that a request failed without a response body (error file, ``response: null``
        unless ``status_code`` is given). Same return value and errors as :meth:`record_result`."""
        return self._record(
            batch_id,
            custom_id,
            ok=False,
            status_code=status_code,
            request_id=None,
            body=None,
            error_code=code,
            error_message=message,
        )

    def _record(
        self,
        batch_id: str,
        custom_id: str,
        *,
        ok: bool,
        status_code: int | None,
        request_id: str | None,
        body: str | None,
        error_code: str | None,
        error_message: str | None,
    ) -> bool:
        b, r, x = schema.batches, schema.requests, schema.results
        counter = b.c.completed if ok else b.c.failed
        try:
            with self._write() as conn:
                line = conn.execute(
                    select(r.c.line).where(r.c.batch_id == batch_id, r.c.custom_id == custom_id)
                ).scalar_one_or_none()
                if line is None:
                    self._batch(conn, batch_id)  # raises if the batch itself is unknown
                    raise BatchNotFoundError("request", f"{batch_id}/{custom_id}")
                # Bump the counter first: on PostgreSQL this locks the batch row, serialising
                # recorders of one batch against each other and against finalisation.
                bumped = conn.execute(
                    update(b).where(b.c.id == batch_id, b.c.status.in_(_RECORDABLE)).values({counter.key: counter + 1})
                ).rowcount
                if not bumped:
                    raise _Refused
                exists = conn.execute(
                    select(x.c.id).where(x.c.batch_id == batch_id, x.c.custom_id == custom_id)
                ).first()
                if exists is not None:
                    raise _Refused
                conn.execute(
                    insert(x).values(
                        batch_id=batch_id,
                        custom_id=custom_id,
                        id=self._new_id("batch_req_"),
                        line=line,
                        ok=ok,
                        status_code=status_code,
                        request_id=request_id,
                        body=body,
                        error_code=error_code,
                        error_message=error_message,
                        recorded_at=self._now(),
                    )
                )
        except (_Refused, IntegrityError):
            return False
        return True

    def pending_requests(self, batch_id: str, *, after_line: int = 0, limit: int | None = None) -> list[PendingRequest]:
        """Requests of the batch with no recorded result, in input order, from line ``after_line + 1``.

        After a restart, ``pending_requests(batch_id)`` is exactly the work left to do.
        """
        r, x = schema.requests, schema.results
        query = (
            select(r.c.custom_id, r.c.line, r.c.url, r.c.body)
            .select_from(r.outerjoin(x, and_(x.c.batch_id == r.c.batch_id, x.c.custom_id == r.c.custom_id)))
            .where(r.c.batch_id == batch_id, r.c.line > after_line, x.c.custom_id.is_(None))
            .order_by(r.c.line)
        )
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            PendingRequest(
                batch_id=batch_id, custom_id=row.custom_id, line=row.line, url=row.url, body=json.loads(row.body)
            )
            for row in rows
        ]

    # [END results]

    # [START finalisation]
    def finalize(self, batch_id: str) -> BatchRecord | None:
        """Finish a batch whose every request has a result: ``in_progress -> finalizing -> completed``.

        Writes the output and error files in the same transaction as the ``completed`` status, so a
        crash leaves the batch ``finalizing`` (listed by :meth:`resumable_batches`) and calling this
        again completes it. Returns the completed batch, or ``None`` if the batch is not in
        progress with all results recorded (nothing changes then).
        """
        now = self._now()
        b = schema.batches
        with self._write() as conn:
            conn.execute(
                update(b)
                .where(
                    b.c.id == batch_id,
                    b.c.status == BatchStatus.IN_PROGRESS.value,
                    b.c.completed + b.c.failed == b.c.total,
                )
                .values(status=BatchStatus.FINALIZING.value, finalizing_at=now)
            )
            if self._batch(conn, batch_id).status != BatchStatus.FINALIZING:
                return None
        with self._write() as conn:
            if self._transition(
                conn, batch_id, (BatchStatus.FINALIZING.value,), BatchStatus.COMPLETED, completed_at=self._now()
            ):
                self._close_out(conn, batch_id)
            return self._batch(conn, batch_id)

    def finish_cancel(self, batch_id: str) -> BatchRecord:
        """``cancelling -> cancelled``: requests without a result go to the error file as
        ``batch_cancelled``; results so far are kept. Call once no request of the batch is in flight.

        Idempotent on a cancelled batch; raises :class:`BatchStateError` in any other status.
        """
        with self._write() as conn:
            if self._transition(
                conn, batch_id, (BatchStatus.CANCELLING.value,), BatchStatus.CANCELLED, cancelled_at=self._now()
            ):
                self._close_out(
                    conn, batch_id, code=CODE_CANCELLED, message="the batch was cancelled before this request ran"
                )
            batch = self._batch(conn, batch_id)
        if batch.status != BatchStatus.CANCELLED:
            raise BatchStateError(f"batch {batch_id} is {batch.status.value}, not cancelling")
        return batch

    def expire_overdue(self, now: float | None = None) -> list[BatchRecord]:
        """Expire every validating or in-progress batch whose ``expires_at <= now`` (default: the store's clock).

        Each expired batch keeps its results: the output file holds the completed requests and the
        error file lists every other one, unfinished ones with code ``batch_expired``. Results that
        arrive later are refused. Returns the batches this call expired.
        """
        t = self._now() if now is None else now
        b = schema.batches
        with self._read() as conn:
            ids = (
                conn.execute(
                    select(b.c.id)
                    .where(b.c.status.in_(_EXPIRABLE), b.c.expires_at <= t)
                    .order_by(b.c.expires_at, b.c.id)
                )
                .scalars()
                .all()
            )
        expired: list[BatchRecord] = []
        for batch_id in ids:
            with self._write() as conn:
                won = conn.execute(
                    update(b)
                    .where(b.c.id == batch_id, b.c.status.in_(_EXPIRABLE), b.c.expires_at <= t)
                    .values(status=BatchStatus.EXPIRED.value, expired_at=t)
                ).rowcount
                if won:
                    self._close_out(
                        conn,
                        batch_id,
                        code=CODE_EXPIRED,
                        message="the batch's completion window ended before this request ran",
                    )
                    expired.append(self._batch(conn, batch_id))
        return expired

    def _close_out(self, conn: Connection, batch_id: str, *, code: str = "", message: str = "") -> None:
        """Mark every pending request failed with ``code``, then write the output and error files.

        Called in the transaction that moved the batch to its terminal status; after it, every
        request has exactly one result row and the batch has its file ids.
        """
        r, x, b = schema.requests, schema.results, schema.batches
        pending = conn.execute(
            select(r.c.custom_id, r.c.line)
            .select_from(r.outerjoin(x, and_(x.c.batch_id == r.c.batch_id, x.c.custom_id == r.c.custom_id)))
            .where(r.c.batch_id == batch_id, x.c.custom_id.is_(None))
        ).all()
        if pending:
            now = self._now()
            conn.execute(
                insert(x),
                [
                    {
                        "batch_id": batch_id,
                        "custom_id": p.custom_id,
                        "id": self._new_id("batch_req_"),
                        "line": p.line,
                        "ok": False,
                        "status_code": None,
                        "request_id": None,
                        "body": None,
                        "error_code": code,
                        "error_message": message,
                        "recorded_at": now,
                    }
                    for p in pending
                ],
            )
            conn.execute(update(b).where(b.c.id == batch_id).values(failed=b.c.failed + len(pending)))
        out: list[bytes] = []
        err: list[bytes] = []
        for row in conn.execute(select(x).where(x.c.batch_id == batch_id).order_by(x.c.line)):
            (out if row.ok else err).append(json.dumps(_output_line(row), ensure_ascii=False).encode() + b"\n")
        output = self._insert_file(
            conn, b"".join(out), filename=f"{batch_id}_output.jsonl", purpose=PURPOSE_BATCH_OUTPUT
        )
        error_id = None
        if err:
            error_id = self._insert_file(
                conn, b"".join(err), filename=f"{batch_id}_error.jsonl", purpose=PURPOSE_BATCH_OUTPUT
            ).id
        conn.execute(update(b).where(b.c.id == batch_id).values(output_file_id=output.id, error_file_id=error_id))

    # [END finalisation]


# [START helpers]
def _configure_sqlite(engine: Engine, config: BatchConfig) -> None:
    """WAL, the configured ``synchronous``, a busy timeout, foreign keys, and ``BEGIN IMMEDIATE`` for writes."""
    busy_ms = int(config.sqlite_busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={config.sqlite_synchronous}")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "BEGIN")


def _check_limit(limit: int, most: int) -> None:
    if not 1 <= limit <= most:
        raise BatchInputError(f"limit must be between 1 and {most}, got {limit}", None, "limit", code="invalid_value")


def _page_rows(
    conn: Connection, table: Any, cond: list[Any], *, after: str | None, limit: int, descending: bool, kind: str
) -> list[Row[Any]]:
    """Up to ``limit + 1`` rows ordered by ``(created_at, id)``, strictly after the row ``after``."""
    created, ident = table.c.created_at, table.c.id
    if after is not None:
        anchor = conn.execute(select(created).where(ident == after)).scalar_one_or_none()
        if anchor is None:
            raise BatchNotFoundError(kind, after)
        if descending:
            cond = [*cond, or_(created < anchor, and_(created == anchor, ident < after))]
        else:
            cond = [*cond, or_(created > anchor, and_(created == anchor, ident > after))]
    order = (created.desc(), ident.desc()) if descending else (created.asc(), ident.asc())
    return list(conn.execute(select(table).where(*cond).order_by(*order).limit(limit + 1)).all())


def _file_record(row: Row[Any]) -> FileRecord:
    return FileRecord(id=row.id, filename=row.filename, purpose=row.purpose, bytes=row.bytes, created_at=row.created_at)


def _batch_record(row: Row[Any]) -> BatchRecord:
    return BatchRecord(
        id=row.id,
        endpoint=row.endpoint,
        input_file_id=row.input_file_id,
        completion_window=row.completion_window,
        window_s=row.window_s,
        status=BatchStatus(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        total=row.total,
        completed=row.completed,
        failed=row.failed,
        in_progress_at=row.in_progress_at,
        finalizing_at=row.finalizing_at,
        completed_at=row.completed_at,
        failed_at=row.failed_at,
        expired_at=row.expired_at,
        cancelling_at=row.cancelling_at,
        cancelled_at=row.cancelled_at,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        errors=None if row.errors_json is None else json.loads(row.errors_json),
        metadata=None if row.metadata_json is None else json.loads(row.metadata_json),
    )


def _error_from_body(status_code: int, body: Any) -> tuple[str, str]:
    """``(code, message)`` of a non-2xx response, from an OpenAI-style ``{"error": {...}}`` body if present."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")
        message = err.get("message")
        return (str(code) if code else f"http_{status_code}", str(message) if message else f"HTTP {status_code}")
    return f"http_{status_code}", f"the request failed with HTTP status {status_code}"


def _output_line(row: Row[Any]) -> dict[str, Any]:
    """One line of an output or error file, in OpenAI's batch output format."""
    response = None
    if row.status_code is not None:
        response = {
            "status_code": row.status_code,
            "request_id": row.request_id,
            "body": None if row.body is None else json.loads(row.body),
        }
    error = None if row.ok else {"code": row.error_code, "message": row.error_message}
    return {"id": row.id, "custom_id": row.custom_id, "response": response, "error": error}


# [END helpers]
