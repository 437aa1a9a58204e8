"""Configuration of the Batch API storage layer (validated, no I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The endpoints a batch may target; a subset can be enabled in :class:`BatchConfig`.
SUPPORTED_ENDPOINTS: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions")

#: Name of the SQLite database file inside ``data_dir`` when no ``database_url`` is given.
SQLITE_FILENAME = "batch.sqlite3"


class BatchConfig(BaseModel):
    """Where batch state lives and the limits on what users may submit.

    Usage::

        BatchConfig(data_dir="/var/lib/qlm")                      # SQLite (WAL) at /var/lib/qlm/batch.sqlite3
        BatchConfig(database_url="postgresql+psycopg://u@db/qlm") # shared PostgreSQL, for several replicas

    Constructing a config touches no file; :meth:`BatchStore.open` creates the directory and the schema.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(default=Path("qlm-data/batch"), description="directory of the default SQLite database")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; overrides the SQLite file in data_dir (e.g. PostgreSQL)"
    )
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="largest accepted upload, bytes")
    max_requests_per_batch: int = Field(default=50_000, ge=1, description="most request lines in one input file")
    endpoints: tuple[str, ...] = Field(default=SUPPORTED_ENDPOINTS, description="endpoints a batch may target")
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="FULL",
        description="SQLite PRAGMA synchronous: FULL survives power loss, NORMAL only process crashes",
    )
    sqlite_busy_timeout_s: float = Field(default=30.0, gt=0, description="how long a writer waits for the lock")

    @field_validator("endpoints")
    @classmethod
    def _known_endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one endpoint must be enabled")
        unknown = [e for e in value if e not in SUPPORTED_ENDPOINTS]
        if unknown:
            raise ValueError(f"unsupported endpoint {unknown[0]!r}; supported: {', '.join(SUPPORTED_ENDPOINTS)}")
        if len(set(value)) != len(value):
            raise ValueError("endpoints must not repeat")
        return value

    @field_validator("database_url")
    @classmethod
    def _url_shape(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"database_url must be a SQLAlchemy URL like 'postgresql+psycopg://...', got {value!r}")
        return value

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file used when ``database_url`` is unset, else ``None``."""
        return None if self.database_url is not None else self.data_dir / SQLITE_FILENAME

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL the store connects to."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{self.data_dir / SQLITE_FILENAME}"
