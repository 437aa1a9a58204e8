"""What the store returns: files, batches, pages and pending requests, with their OpenAI JSON shapes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar


class BatchStatus(enum.StrEnum):
    """A batch's status, as OpenAI names them.

    ``validating -> in_progress -> finalizing -> completed`` is the normal path; ``cancelling ->
    cancelled`` and ``expired`` end a batch early with its results so far; ``failed`` means it
    never ran. The last four and ``completed`` are terminal.
    """

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})

#: Statuses a runner must carry on with after a restart.
ACTIVE_STATUSES: tuple[BatchStatus, ...] = (
    BatchStatus.VALIDATING,
    BatchStatus.IN_PROGRESS,
    BatchStatus.FINALIZING,
    BatchStatus.CANCELLING,
)


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A stored file (without its content). Times are Unix seconds as floats."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI ``File`` object (``openai.types.FileObject``)."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch with its counts. Times are Unix seconds as floats; ``None`` until the state is reached."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    window_s: float
    status: BatchStatus
    created_at: float
    expires_at: float
    total: int
    completed: int
    failed: int
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None

    @property
    def pending(self) -> int:
        """Requests with no recorded result yet."""
        return self.total - self.completed - self.failed

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI ``Batch`` object (``openai.types.Batch``); times as integer seconds."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": list(self.errors)},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": _ts(self.in_progress_at),
            "expires_at": _ts(self.expires_at),
            "finalizing_at": _ts(self.finalizing_at),
            "completed_at": _ts(self.completed_at),
            "failed_at": _ts(self.failed_at),
            "expired_at": _ts(self.expired_at),
            "cancelling_at": _ts(self.cancelling_at),
            "cancelled_at": _ts(self.cancelled_at),
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": None if self.metadata is None else dict(self.metadata),
        }


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request of a batch that has no recorded result yet; what a runner submits."""

    batch_id: str
    custom_id: str
    line: int
    url: str
    body: dict[str, Any]


class _HasToDict(Protocol):
    @property
    def id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=_HasToDict)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a cursor-paginated list; pass ``last_id`` as ``after`` to get the next one."""

    data: tuple[T, ...]
    has_more: bool

    @property
    def first_id(self) -> str | None:
        return self.data[0].id if self.data else None

    @property
    def last_id(self) -> str | None:
        return self.data[-1].id if self.data else None

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's list envelope: ``object``, ``data``, ``first_id``, ``last_id``, ``has_more``."""
        return {
            "object": "list",
            "data": [item.to_dict() for item in self.data],
            "first_id": self.first_id,
            "last_id": self.last_id,
            "has_more": self.has_more,
        }
