"""Report jobs: run in the process that started them, kept in the database.

A job's state, progress and result live in the ``report_jobs`` table, so any replica can
answer for any job, after any restart. The process that started a job runs it and writes
its progress as devices finish; a job whose process ended mid-way stops being touched and
reads as FAILED once ``stale_after`` has passed. Cancelling marks the row; the runner,
wherever it is, sees the mark at its next step and stops.

A job runs in two steps: it resolves its device set (a whole-account job reads the
device list then, so its ``devices_total`` is 0 until it has), then reports over it.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, StatusCode
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.reports import OPEN, TERMINAL, ReportJob, ReportJobState
from resolvers.reports import Progress, ReportRequest, report_devices, report_json, run_report
from resolvers.upstream import Upstream

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
PROGRESS_EVERY_S = 0.5


class JobCancelled(Exception):
    """The job was cancelled from another replica."""


class TooManyJobs(Exception):
    """The owner has as many jobs queued or running as it may."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"At most {limit} report jobs may be queued or running for one credential: "
            "wait for one to end, or cancel one."
        )
        self.limit = limit


def _now() -> datetime:
    return datetime.now(UTC)


class ReportJobs:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        upstream: Upstream,
        concurrency: int,
        stale_after: timedelta = timedelta(minutes=2),
        poll_s: float = 0.25,
        max_per_owner: int = 4,
    ) -> None:
        self._sessions = sessions
        self._upstream = upstream
        self._concurrency = concurrency
        self._stale_after = stale_after
        self._poll_s = poll_s
        self._running: dict[str, asyncio.Task[None]] = {}
        self._max_per_owner = max_per_owner
        # Counting and adding in one step, in this process; replicas may each add one
        # past the limit at the same moment.
        self._starting = asyncio.Lock()

    async def start(self, owner: str, request: ReportRequest) -> ReportJob:
        """A new job of ``owner``'s; ``TooManyJobs`` when it has its fill running."""
        async with self._starting:
            if await self._open_jobs(owner) >= self._max_per_owner:
                raise TooManyJobs(self._max_per_owner)
            return await self._start(owner, request)

    async def _open_jobs(self, owner: str) -> int:
        async with self._sessions() as session:
            found = await session.exec(
                select(ReportJob).where(
                    col(ReportJob.owner) == owner, col(ReportJob.state).in_(OPEN)
                )
            )
            return sum(not self._stale(job) for job in found.all())

    def _stale(self, job: ReportJob) -> bool:
        """Queued or running in a process that has stopped."""
        stale = _now() - _aware(job.updated_at) > self._stale_after
        return job.id not in self._running and stale

    async def _start(self, owner: str, request: ReportRequest) -> ReportJob:
        now = _now()
        job = ReportJob(
            id=uuid.uuid4().hex,
            owner=owner,
            request=request.json(),
            state=ReportJobState.QUEUED,
            devices_total=len(request.devices) if request.devices is not None else 0,
            created_at=now,
            updated_at=now,
        )
        async with self._sessions() as session, session.begin():
            session.add(job)
        started_by = trace.get_current_span().get_span_context()
        self._running[job.id] = asyncio.create_task(self._run(job.id, request, started_by))
        return job

    async def stop(self) -> None:
        """Ends this process's running jobs: they read as FAILED once they go stale."""
        for task in self._running.values():
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _update(self, job_id: str, **values: Any) -> ReportJob | None:
        async with self._sessions() as session, session.begin():
            job = await session.get(ReportJob, job_id, with_for_update=True)
            if job is None:
                return None
            cancelled = ReportJobState.CANCELLED
            if job.state == cancelled and values.get("state") != cancelled:
                raise JobCancelled(job_id)
            for name, value in values.items():
                setattr(job, name, value)
            job.updated_at = _now()
            session.add(job)
            return job

    async def _run(self, job_id: str, request: ReportRequest, started_by: SpanContext) -> None:
        # The job outlives the request that started it: a trace of its own, linked to the
        # span that started it, not one more part of a trace that has ended.
        with _tracer.start_as_current_span(
            "report job",
            context=Context(),
            links=[Link(started_by)] if started_by.is_valid else None,
            attributes={"provgraph.report_job.id": job_id},
        ):
            await self._report(job_id, request)

    async def _report(self, job_id: str, request: ReportRequest) -> None:
        progress = Progress()
        written = 0.0

        async def on_device() -> None:
            nonlocal written
            if time.monotonic() - written >= PROGRESS_EVERY_S:
                written = time.monotonic()
                await self._write_progress(job_id, progress)

        try:
            await self._update(job_id, state=ReportJobState.RUNNING)
            devices = await report_devices(self._upstream, progress.cost, request)
            progress.devices_total = len(devices)
            await self._write_progress(job_id, progress)
            spec = request.spec(devices)
            report = await run_report(self._upstream, spec, progress, self._concurrency, on_device)
            await self._write_progress(job_id, progress)
            await self._update(
                job_id,
                state=ReportJobState.SUCCEEDED,
                finished_at=_now(),
                result=report_json(report, spec),
            )
        except (JobCancelled, asyncio.CancelledError):
            with contextlib.suppress(Exception):
                await self._update(job_id, state=ReportJobState.CANCELLED, finished_at=_now())
        except Exception as error:
            log.exception("report job %s failed", job_id)
            trace.get_current_span().set_status(StatusCode.ERROR, type(error).__name__)
            with contextlib.suppress(Exception):
                await self._update(
                    job_id,
                    state=ReportJobState.FAILED,
                    finished_at=_now(),
                    error=f"The report failed ({type(error).__name__}).",
                )
        finally:
            self._running.pop(job_id, None)

    async def _write_progress(self, job_id: str, progress: Progress) -> None:
        await self._update(
            job_id,
            devices_done=progress.devices_done,
            devices_total=progress.devices_total,
            upstream_calls=progress.cost.upstream_calls,
            cache_hits=progress.cost.cache_hits,
        )

    async def get(self, job_id: str, owner: str) -> ReportJob | None:
        """The job, if it exists and belongs to ``owner``."""
        async with self._sessions() as session:
            job = await session.get(ReportJob, job_id)
        if job is None or job.owner != owner:
            return None
        if job.state in OPEN and self._stale(job):
            job.state = ReportJobState.FAILED
            job.error = "The process running this job has stopped."
        return job

    async def cancel(self, job_id: str, owner: str) -> ReportJob | None:
        job = await self.get(job_id, owner)
        if job is None or job.state in TERMINAL:
            return job
        await self._update(job_id, state=ReportJobState.CANCELLED, finished_at=_now())
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return await self.get(job_id, owner)

    async def watch(self, job_id: str, owner: str) -> AsyncIterator[ReportJob]:
        """The job each time its progress or state changes, until it ends."""
        seen = None
        while True:
            job = await self.get(job_id, owner)
            if job is None:
                return
            now = (
                job.state,
                job.devices_done,
                job.devices_total,
                job.upstream_calls,
                job.cache_hits,
            )
            if now != seen:
                seen = now
                yield job
            if job.state in TERMINAL:
                return
            await asyncio.sleep(self._poll_s)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
