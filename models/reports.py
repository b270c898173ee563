"""Reports: their vocabularies, and the jobs kept in the database so that any replica can
answer for any job."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel


class ReportDimension(StrEnum):
    """What a report's rows are grouped by."""

    EVENT_TYPE = "EVENT_TYPE"
    STATUS = "STATUS"
    EVENT_BY = "EVENT_BY"
    SERVICE_PLAN = "SERVICE_PLAN"
    DEVICE = "DEVICE"


class TimeBucket(StrEnum):
    """The calendar spans a report's rows can also be cut into, in its time zone."""

    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


class ReportJobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ReportJobError(StrEnum):
    """Why a job FAILED."""

    REPORT_FAILED = "REPORT_FAILED"
    """A chunk failed on each of its attempts (``REPORT_CHUNK_ATTEMPTS``)."""
    WORKER_STOPPED = "WORKER_STOPPED"
    """The process running the job (without a job queue) stopped mid-way."""
    CHUNK_LOST = "CHUNK_LOST"
    """A chunk's last attempt ended with its worker (killed, or gone mid-chunk), so no
    worker will run it again."""


OPEN = (ReportJobState.QUEUED, ReportJobState.RUNNING)
TERMINAL = (ReportJobState.SUCCEEDED, ReportJobState.FAILED, ReportJobState.CANCELLED)


class ReportJob(SQLModel, table=True):
    __tablename__ = "report_jobs"

    id: str = Field(primary_key=True, max_length=32)
    owner: str = Field(max_length=128, index=True)
    """The subject of the principal that started it: a job belongs to its caller."""
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(default=ReportJobState.QUEUED, max_length=16)
    """A ReportJobState; stored as its text, so rows read back hold plain strings."""
    devices_done: int = 0
    devices_total: int = 0
    upstream_calls: int = 0
    cache_hits: int = 0
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = Field(default=None, max_length=1024)
    error_code: str | None = Field(default=None, max_length=32)
    """A ReportJobError, once the job has FAILED."""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """Touched with every progress step: a running job not touched for long has lost its
    worker (its process ended) and reads as failed."""
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_retried: int = 0
    chunks_reclaimed: int = 0


class ReportChunkState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    """Its last attempt failed; the job engine tries it again."""
    DONE = "DONE"


class ReportJobChunk(SQLModel, table=True):
    """A slice of a job's devices that one worker reads at a time, and once read, its
    partial result: what a worker that dies mid-job loses is its chunk in flight."""

    __tablename__ = "report_job_chunks"

    job_id: str = Field(primary_key=True, max_length=32, foreign_key="report_jobs.id")
    index: int = Field(primary_key=True)
    devices: list[list[str]] = Field(sa_column=Column(JSON, nullable=False))
    """[kind, identifier] pairs, in the job's device order."""
    state: str = Field(default=ReportChunkState.QUEUED, max_length=16)
    worker: str | None = Field(default=None, max_length=128)
    """Who ran (or runs) it: the worker's process, as ``host:pid``."""
    attempts: int = 0
    retried: int = 0
    """Attempts that failed and were tried again."""
    reclaimed: int = 0
    """Times it was taken over after its worker stopped mid-way (its lease ran out)."""
    devices_done: int = 0
    """In its current attempt."""
    partial: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """Its devices' report, in the job result's form, once done."""
    seconds: float | None = None
    """How long its finishing attempt took."""
