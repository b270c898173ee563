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
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """Touched with every progress step: a running job not touched for long has lost its
    worker (its process ended) and reads as failed."""
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
