"""A report job's work, cut into chunks of devices that any worker may run.

Planning resolves the job's device set once and writes one row per chunk; running a
chunk reads its devices and stores their report (mergeable: ``merge_reports``) in its
row. A worker that stops mid-way loses only the chunk it held, which the job engine hands
to another worker once its lease runs out; the chunk that finishes last merges every
chunk's report into the job's result, the same as one read of all the devices. Both
steps may run again for the same job or chunk and do their work once.

Every write is a conditional ``UPDATE`` whose counters add in the statement itself: the
chunks of one job run side by side (in one process or several) and each adds what it
spent, so nothing one chunk wrote is lost to another's read-then-write, on SQLite (no row
locks) as on PostgreSQL. A chunk attempt writes only while it is the chunk's latest
attempt: one taken over after its lease ran out stops at its next write.
"""

import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, StatusCode
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.devices import DeviceIdentifier
from models.reports import (
    OPEN,
    TERMINAL,
    ReportChunkState,
    ReportJob,
    ReportJobChunk,
    ReportJobError,
    ReportJobState,
)
from resolvers.budget import JOB
from resolvers.metrics import REPORT_CHUNK_SECONDS, REPORT_CHUNKS
from resolvers.reports import (
    Progress,
    ReportRequest,
    merge_reports,
    report_devices,
    report_json,
    run_report,
)
from resolvers.upstream import Cost, Upstream

PROGRESS_EVERY_S = 0.5
_tracer = trace.get_tracer(__name__)


class JobCancelled(Exception):
    """The job has ended (cancelled, or failed in another chunk), or this chunk attempt
    was taken over: its step stops quietly."""


def failure_message(error: Exception) -> str:
    """Why a job failed, as its row tells clients: the error's type only, as its message
    may carry what a client should not see."""
    return f"The report failed ({type(error).__name__})."


def worker_name() -> str:
    """Who runs a chunk, as its row records it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def step_span(
    name: str, job_id: str, linked: SpanContext | None, **attributes: str | int
) -> Iterator[Span]:
    """The span of one step of a job. Under the job's span where the step runs inside
    it (in process); else a trace of its own linked to the job's (``linked``), as a
    queue step runs long after, and elsewhere than, what enqueued it."""
    attributes = {"provgraph.report_job.id": job_id, **attributes}
    links = [Link(linked)] if linked is not None and linked.is_valid else None
    with _tracer.start_as_current_span(
        name,
        context=Context() if linked is not None else None,
        links=links,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except JobCancelled:
            # Not an error: the job ended elsewhere, or another worker took the chunk.
            span.set_attribute("provgraph.report_job.stopped", True)
            raise
        except Exception as error:
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, type(error).__name__)
            raise


@dataclass
class _Written:
    """What one chunk attempt has added to its job's counters so far."""

    attempt: int
    at: float
    calls: int = 0
    hits: int = 0
    devices: int = 0
    busy: bool = False


class ChunkWork:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        upstream: Upstream,
        concurrency: int,
        chunk_devices: int,
    ) -> None:
        self._sessions = sessions
        self._upstream = upstream
        self._concurrency = concurrency
        self._chunk_devices = chunk_devices

    async def plan(self, job_id: str) -> int | None:
        """The job's chunks, written once (a plan run again finds them); None when the
        job has ended, or is gone."""
        async with self._sessions() as session:
            job = await session.get(ReportJob, job_id)
        if job is None or job.state in TERMINAL:
            return None
        if job.chunks_total:
            return job.chunks_total
        request = ReportRequest.of_json(job.request)
        # A job's reads wait behind interactive ones for the upstream budget.
        cost = Cost(priority=JOB)
        devices = list(dict.fromkeys(await report_devices(self._upstream, cost, request)))
        size = self._chunk_devices
        slices = [devices[start : start + size] for start in range(0, len(devices), size)]
        now = _now()
        async with self._sessions() as session, session.begin():
            values: dict[str, Any] = {
                "state": ReportJobState.RUNNING,
                "devices_total": len(devices),
                "chunks_total": len(slices),
                "upstream_calls": col(ReportJob.upstream_calls) + cost.upstream_calls,
                "cache_hits": col(ReportJob.cache_hits) + cost.cache_hits,
                "updated_at": now,
            }
            if not slices:
                values |= {
                    "state": ReportJobState.SUCCEEDED,
                    "finished_at": now,
                    "result": merge_reports([]),
                }
            planned = await session.exec(
                update(ReportJob)
                .where(
                    col(ReportJob.id) == job_id,
                    col(ReportJob.state).in_(OPEN),
                    col(ReportJob.chunks_total) == 0,
                )
                .values(values)
                .returning(col(ReportJob.id))
            )
            if planned.first() is None:  # planned meanwhile, or ended
                return None
            for index, chunk in enumerate(slices):
                pairs = [[d.kind, d.identifier] for d in chunk]
                session.add(ReportJobChunk(job_id=job_id, index=index, devices=pairs))
        return len(slices)

    async def run(
        self,
        job_id: str,
        index: int,
        worker: str,
        last_attempt: bool,
        on_last_started: Callable[[], None] | None = None,
    ) -> None:
        """Runs chunk ``index`` unless it is done; ``JobCancelled`` once the job has
        ended or this attempt was taken over. A failure marks the chunk to be tried
        again, or the job failed on its last attempt, and is raised for the engine to
        see. ``on_last_started``: as ``run_report`` has it."""
        claimed = await self._claim(job_id, index, worker)
        if claimed is None:
            return
        request, devices, attempt = claimed
        spec = request.spec(devices)
        progress = Progress(cost=Cost(priority=JOB))
        written = _Written(attempt, time.monotonic())

        async def on_device() -> None:
            # One write at a time per chunk, from whichever reader passes by first.
            if written.busy or time.monotonic() - written.at < PROGRESS_EVERY_S:
                return
            written.busy = True
            try:
                await self._progress(job_id, index, progress, written)
            finally:
                written.busy = False
                written.at = time.monotonic()

        started = time.monotonic()
        try:
            report = await run_report(
                self._upstream, spec, progress, self._concurrency, on_device, on_last_started
            )
        except JobCancelled:
            raise
        except Exception as error:
            await self._failed(job_id, index, error, attempt, last_attempt)
            raise
        seconds = time.monotonic() - started
        REPORT_CHUNK_SECONDS.observe(seconds)
        partial = report_json(report, spec, ordered=False)
        await self._finish(job_id, index, partial, seconds, progress, written)

    async def _claim(
        self, job_id: str, index: int, worker: str
    ) -> tuple[ReportRequest, list[DeviceIdentifier], int] | None:
        """The chunk's request, devices and attempt number, now that this worker holds
        it; None when it is done or another attempt took it meanwhile."""
        async with self._sessions() as session:
            job = await session.get(ReportJob, job_id)
            chunk = await session.get(ReportJobChunk, (job_id, index))
        if job is None or job.state == ReportJobState.CANCELLED:
            raise JobCancelled(job_id)
        if chunk is None or chunk.state == ReportChunkState.DONE or job.state in TERMINAL:
            return None
        # Claimed before and neither finished nor failed: its worker stopped.
        reclaimed = chunk.state == ReportChunkState.RUNNING
        async with self._sessions() as session, session.begin():
            taken = await session.exec(
                update(ReportJobChunk)
                .where(
                    col(ReportJobChunk.job_id) == job_id,
                    col(ReportJobChunk.index) == index,
                    col(ReportJobChunk.attempts) == chunk.attempts,
                )
                .values(
                    state=ReportChunkState.RUNNING,
                    worker=worker,
                    attempts=chunk.attempts + 1,
                    devices_done=0,
                    reclaimed=col(ReportJobChunk.reclaimed) + int(reclaimed),
                )
                .returning(col(ReportJobChunk.index))
            )
            if taken.first() is None:
                return None
            # The stopped attempt's devices are read again: they count once.
            await self._add(
                session,
                job_id,
                devices_done=-chunk.devices_done,
                chunks_reclaimed=int(reclaimed),
            )
        if reclaimed:
            REPORT_CHUNKS.labels("reclaimed").inc()
        devices = [DeviceIdentifier(kind, identifier) for kind, identifier in chunk.devices]
        return ReportRequest.of_json(job.request), devices, chunk.attempts + 1

    async def _progress(
        self, job_id: str, index: int, progress: Progress, written: _Written
    ) -> None:
        """Adds the chunk's progress to its job; ``JobCancelled`` once the job has
        ended or the attempt was taken over."""
        calls, hits, devices = (
            progress.cost.upstream_calls,
            progress.cost.cache_hits,
            progress.devices_done,
        )
        async with self._sessions() as session, session.begin():
            await self._own(session, job_id, index, written.attempt, devices_done=devices)
            await self._add(
                session,
                job_id,
                upstream_calls=calls - written.calls,
                cache_hits=hits - written.hits,
                devices_done=devices - written.devices,
            )
        written.calls, written.hits, written.devices = calls, hits, devices

    async def _finish(
        self,
        job_id: str,
        index: int,
        partial: dict[str, Any],
        seconds: float,
        progress: Progress,
        written: _Written,
    ) -> None:
        async with self._sessions() as session, session.begin():
            await self._own(
                session,
                job_id,
                index,
                written.attempt,
                state=ReportChunkState.DONE,
                devices_done=progress.devices_done,
                partial=partial,
                seconds=seconds,
            )
            # The job row's lock (PostgreSQL) or the database's (SQLite), taken by this
            # update, orders the chunks finishing together: the one counting the last
            # sees every other's report stored.
            done, total = await self._add(
                session,
                job_id,
                upstream_calls=progress.cost.upstream_calls - written.calls,
                cache_hits=progress.cost.cache_hits - written.hits,
                devices_done=progress.devices_done - written.devices,
                chunks_done=1,
            )
            if done == total:
                result = merge_reports(await _partials(session, job_id))
                await session.exec(
                    update(ReportJob)
                    .where(col(ReportJob.id) == job_id)
                    .values(state=ReportJobState.SUCCEEDED, finished_at=_now(), result=result)
                )
        REPORT_CHUNKS.labels("done").inc()

    async def _failed(
        self, job_id: str, index: int, error: Exception, attempt: int, last: bool
    ) -> None:
        async with self._sessions() as session, session.begin():
            try:
                await self._own(
                    session,
                    job_id,
                    index,
                    attempt,
                    state=ReportChunkState.RETRYING,
                    retried=col(ReportJobChunk.retried) + int(not last),
                )
                await self._add(session, job_id, chunks_retried=int(not last))
            except JobCancelled:
                return
            if last:
                await session.exec(
                    update(ReportJob)
                    .where(col(ReportJob.id) == job_id)
                    .values(
                        state=ReportJobState.FAILED,
                        finished_at=_now(),
                        error=failure_message(error),
                        error_code=ReportJobError.REPORT_FAILED,
                    )
                )
        if not last:
            REPORT_CHUNKS.labels("retried").inc()

    async def _own(
        self, session: AsyncSession, job_id: str, index: int, attempt: int, **values: Any
    ) -> None:
        """Writes ``values`` into the chunk while ``attempt`` is its latest and it is
        not done; else ``JobCancelled``."""
        owned = await session.exec(
            update(ReportJobChunk)
            .where(
                col(ReportJobChunk.job_id) == job_id,
                col(ReportJobChunk.index) == index,
                col(ReportJobChunk.attempts) == attempt,
                col(ReportJobChunk.state) != ReportChunkState.DONE,
            )
            .values(values)
            .returning(col(ReportJobChunk.index))
        )
        if owned.first() is None:
            raise JobCancelled(job_id)

    async def _add(self, session: AsyncSession, job_id: str, **counts: int) -> tuple[int, int]:
        """Adds ``counts`` to the running job's counters; its chunks done and total
        after, or ``JobCancelled`` when it is no longer running."""
        values: dict[str, Any] = {
            name: getattr(ReportJob, name) + count for name, count in counts.items()
        }
        added = await session.exec(
            update(ReportJob)
            .where(col(ReportJob.id) == job_id, col(ReportJob.state) == ReportJobState.RUNNING)
            .values(values | {"updated_at": _now()})
            .returning(col(ReportJob.chunks_done), col(ReportJob.chunks_total))
        )
        row = added.first()
        if row is None:
            raise JobCancelled(job_id)
        return int(row[0]), int(row[1])


async def _partials(session: AsyncSession, job_id: str) -> Sequence[dict[str, Any]]:
    found = await session.exec(
        select(ReportJobChunk)
        .where(col(ReportJobChunk.job_id) == job_id)
        .order_by(col(ReportJobChunk.index))
    )
    return [chunk.partial or merge_reports([]) for chunk in found.all()]
