"""Report jobs: kept in the database, run by a job runner, through one interface.

A job's state, progress and result live in the ``report_jobs`` table, so any replica can
answer for any job, after any restart. A job runs in chunks of devices
(``resolvers/job_chunks.py``): its plan resolves the device set (a whole-account job
reads the device list then, so its ``devices_total`` is 0 until it has) and cuts it, then
each chunk is reported over and its counts stored; the last chunk merges them.

Who runs the steps is the runner's business. The embedded default (``InProcessRunner``)
runs them in the process that started the job: a job whose process ended mid-way stops
being touched and reads as FAILED once ``stale_after`` has passed. With a queue
configured, ``resolvers/job_queue.py`` hands every step to the job engine, which any
replica's worker claims. Cancelling marks the row and tells the runner, which stops the
job's steps wherever they run; a step that misses the word sees the mark at its next
write and stops.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, StatusCode
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import QueryableAttribute, defer
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.reports import OPEN, TERMINAL, ReportJob, ReportJobError, ReportJobState
from resolvers.job_chunks import (
    ChunkWork,
    JobCancelled,
    failure_message,
    step_span,
    worker_name,
)
from resolvers.metrics import REPORT_QUEUE_DEPTH
from resolvers.reports import ReportRequest

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)


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


class JobRunner(Protocol):
    """Runs jobs' steps: the same ``ChunkWork`` wherever they run."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, job_id: str) -> None:
        """Runs the job, from its plan to its last chunk."""

    async def cancel(self, job_id: str, chunks: int) -> None:
        """Stops the job's steps that run or wait, wherever they are."""

    def lost(self, job: ReportJob) -> bool:
        """Whether an open job can no longer end: it reads as FAILED."""


class ReportJobs:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        runner: JobRunner,
        poll_s: float = 0.25,
        max_per_owner: int = 4,
    ) -> None:
        self._sessions = sessions
        self._runner = runner
        self._poll_s = poll_s
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
            return sum(not self._runner.lost(job) for job in found.all())

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
        await self._runner.submit(job.id)
        return job

    async def open(self) -> None:
        """Starts the runner: with a queue, this process's worker, if it runs one."""
        await self._runner.start()

    async def stop(self) -> None:
        await self._runner.stop()

    async def get(self, job_id: str, owner: str, *, request: bool = True) -> ReportJob | None:
        """The job, if it exists and belongs to ``owner``; its ``request`` left unread
        unless asked for: it lists every device, and progress is polled."""
        query = select(ReportJob).where(col(ReportJob.id) == job_id)
        if not request:
            # SQLModel types a column as its value; the mapped class has the attribute.
            query = query.options(defer(cast(QueryableAttribute[Any], ReportJob.request)))
        async with self._sessions() as session:
            job = (await session.exec(query)).first()
        if job is None or job.owner != owner:
            return None
        if job.state in OPEN and self._runner.lost(job):
            job.state = ReportJobState.FAILED
            job.error = "The process running this job has stopped."
            job.error_code = ReportJobError.WORKER_STOPPED
        return job

    async def cancel(self, job_id: str, owner: str) -> ReportJob | None:
        job = await self.get(job_id, owner, request=False)
        if job is None or job.state in TERMINAL:
            return job
        async with self._sessions() as session, session.begin():
            row = await session.get(ReportJob, job_id, with_for_update=True)
            if row is None or row.state in TERMINAL:
                return await self.get(job_id, owner, request=False)
            row.state = ReportJobState.CANCELLED
            row.finished_at = row.updated_at = _now()
            session.add(row)
            chunks = row.chunks_total
        await self._runner.cancel(job_id, chunks)
        return await self.get(job_id, owner, request=False)

    async def watch(self, job_id: str, owner: str) -> AsyncIterator[ReportJob]:
        """The job each time its progress or state changes, until it ends."""
        seen = None
        while True:
            job = await self.get(job_id, owner, request=False)
            if job is None:
                return
            now = (
                job.state,
                job.devices_done,
                job.devices_total,
                job.upstream_calls,
                job.cache_hits,
                job.chunks_done,
                job.chunks_retried,
                job.chunks_reclaimed,
            )
            if now != seen:
                seen = now
                yield job
            if job.state in TERMINAL:
                return
            await asyncio.sleep(self._poll_s)


class InProcessRunner:
    """The embedded default: a job runs in a task of the process that started it.

    Its chunks overlap: a chunk reads its devices side by side, and once its last device
    has started (fewer and fewer readers busy, a long history perhaps for seconds) the
    next chunk starts, ``chunks_at_once`` chunks starting devices at a time and at most
    ``open_chunks`` open. One after another, each chunk's last slow devices and its
    writes left the upstream budget idle: a single process was slower than before chunks.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        work: ChunkWork,
        attempts: int,
        chunks_at_once: int,
        open_chunks: int,
        stale_after: timedelta = timedelta(minutes=2),
    ) -> None:
        self._sessions = sessions
        self._work = work
        self._attempts = attempts
        self._chunks_at_once = chunks_at_once
        self._open_chunks = max(open_chunks, chunks_at_once)
        self._stale_after = stale_after
        self._running: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        """Ends this process's running jobs."""
        for task in self._running.values():
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(self, job_id: str) -> None:
        started_by = trace.get_current_span().get_span_context()
        self._running[job_id] = asyncio.create_task(self._run(job_id, started_by))
        REPORT_QUEUE_DEPTH.set(len(self._running))

    async def cancel(self, job_id: str, chunks: int) -> None:
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def lost(self, job: ReportJob) -> bool:
        stale = _now() - aware(job.updated_at) > self._stale_after
        return job.id not in self._running and stale

    async def _run(self, job_id: str, started_by: SpanContext) -> None:
        # The job outlives the request that started it: a trace of its own, linked to the
        # span that started it, not one more part of a trace that has ended.
        with _tracer.start_as_current_span(
            "report job",
            context=Context(),
            links=[Link(started_by)] if started_by.is_valid else None,
            attributes={"provgraph.report_job.id": job_id},
        ):
            try:
                await self._chunks(job_id)
            except (JobCancelled, asyncio.CancelledError):
                with contextlib.suppress(Exception):
                    await end_job(self._sessions, job_id, ReportJobState.CANCELLED)
            except Exception as error:
                log.exception("report job %s failed", job_id)
                trace.get_current_span().set_status(StatusCode.ERROR, type(error).__name__)
                with contextlib.suppress(Exception):
                    await fail_job(self._sessions, job_id, error)
            finally:
                self._running.pop(job_id, None)
                REPORT_QUEUE_DEPTH.set(len(self._running))

    async def _chunks(self, job_id: str) -> None:
        with step_span("report job plan", job_id, None):
            chunks = await self._work.plan(job_id)
        worker = worker_name()
        starting = asyncio.Semaphore(self._chunks_at_once)
        open_ = asyncio.Semaphore(self._open_chunks)

        async def chunk(index: int) -> None:
            started_all = False

            def last_started() -> None:
                nonlocal started_all
                if not started_all:
                    started_all = True
                    starting.release()

            try:
                await self._chunk(job_id, index, worker, last_started)
            finally:
                last_started()
                open_.release()

        try:
            # A chunk that fails for good, or a cancel, ends the group and the others.
            async with asyncio.TaskGroup() as group:
                for index in range(chunks or 0):
                    await open_.acquire()
                    await starting.acquire()
                    group.create_task(chunk(index))
        except* JobCancelled:
            raise JobCancelled(job_id) from None
        except* Exception as failed:
            raise failed.exceptions[0] from None

    async def _chunk(
        self, job_id: str, index: int, worker: str, last_started: Callable[[], None]
    ) -> None:
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            with step_span(
                "report job chunk", job_id, None, **{"provgraph.report_job.chunk": index}
            ):
                try:
                    await self._work.run(job_id, index, worker, last, last_started)
                    return
                except JobCancelled:
                    raise
                except Exception:
                    if last:
                        raise  # the chunk marked the job failed
                    log.warning("report job %s chunk %d failed; trying again", job_id, index)


async def end_job(
    sessions: async_sessionmaker[AsyncSession],
    job_id: str,
    state: ReportJobState,
    error: str | None = None,
    code: ReportJobError | None = None,
) -> None:
    """Ends the job in ``state`` unless it has ended already."""
    async with sessions() as session, session.begin():
        job = await session.get(ReportJob, job_id, with_for_update=True)
        if job is None or job.state in TERMINAL:
            return
        job.state = state
        job.error = error
        job.error_code = code
        job.finished_at = job.updated_at = _now()
        session.add(job)


async def fail_job(
    sessions: async_sessionmaker[AsyncSession], job_id: str, error: Exception
) -> None:
    """Ends the job FAILED by ``error``."""
    await end_job(
        sessions,
        job_id,
        ReportJobState.FAILED,
        failure_message(error),
        ReportJobError.REPORT_FAILED,
    )


def aware(moment: datetime) -> datetime:
    """``moment`` in UTC, as it was stored."""
    # SQLite hands back naive datetimes for what was stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
