"""Report jobs, kept in the database so that any replica can answer for any job."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class ReportJob(SQLModel, table=True):
    __tablename__ = "report_jobs"

    id: str = Field(primary_key=True, max_length=32)
    owner: str = Field(max_length=128, index=True)
    """The subject of the principal that started it: a job belongs to its caller."""
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(default="QUEUED", max_length=16)
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
