"""A report job's work, cut into chunks of devices that any worker may run.

Planning resolves the job's device set once and writes one row per chunk; running a
chunk reads its devices and stores their report (mergeable: ``merge_reports``) in its
row. A worker that stops mid-way loses only the chunk it held, which the job engine hands
to another worker once its lease runs out; the chunk that finishes last merges every
chunk's report into the job's result, the same as one read of all the devices. Both
steps may run again for the same job or chunk and do their work once.
"""

import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.devices import DeviceIdentifier
from models.reports import (
    TERMINAL,
    ReportChunkState,
    ReportJob,
    ReportJobChunk,
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


class JobCancelled(Exception):
    """The job was cancelled, from this replica or another."""


def worker_name() -> str:
    """Who runs a chunk, as its row records it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


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
        async with self._sessions() as session, session.begin():
            job = await _locked(session, job_id)
            if job.chunks_total:
                return job.chunks_total
            for index, chunk in enumerate(slices):
                pairs = [[d.kind, d.identifier] for d in chunk]
                session.add(ReportJobChunk(job_id=job_id, index=index, devices=pairs))
            job.state = ReportJobState.RUNNING
            job.devices_total = len(devices)
            job.chunks_total = len(slices)
            job.upstream_calls += cost.upstream_calls
            job.cache_hits += cost.cache_hits
            if not slices:
                job.state = ReportJobState.SUCCEEDED
                job.finished_at = _now()
                job.result = merge_reports([])
            job.updated_at = _now()
            session.add(job)
        return len(slices)

    async def run(self, job_id: str, index: int, worker: str, last_attempt: bool) -> None:
        """Runs chunk ``index`` unless it is done; ``JobCancelled`` once the job is.
        A failure marks the chunk to be tried again, or the job failed on its last
        attempt, and is raised for the engine to see."""
        devices = await self._claim(job_id, index, worker)
        if devices is None:
            return
        request = await self._request(job_id)
        spec = request.spec(devices)
        progress = Progress(cost=Cost(priority=JOB))
        written: dict[str, Any] = {"at": time.monotonic(), "calls": 0, "hits": 0}

        async def on_device() -> None:
            if time.monotonic() - written["at"] >= PROGRESS_EVERY_S:
                await self._progress(job_id, index, progress, written)

        started = time.monotonic()
        try:
            report = await run_report(self._upstream, spec, progress, self._concurrency, on_device)
        except JobCancelled:
            raise
        except Exception as error:
            await self._failed(job_id, index, error, last_attempt)
            raise
        seconds = time.monotonic() - started
        REPORT_CHUNK_SECONDS.observe(seconds)
        await self._finish(job_id, index, report_json(report, spec), seconds, progress, written)

    async def _request(self, job_id: str) -> ReportRequest:
        async with self._sessions() as session:
            job = await session.get(ReportJob, job_id)
        if job is None:
            raise JobCancelled(job_id)
        return ReportRequest.of_json(job.request)

    async def _claim(self, job_id: str, index: int, worker: str) -> list[DeviceIdentifier] | None:
        async with self._sessions() as session, session.begin():
            job = await _locked(session, job_id)
            if job.state == ReportJobState.CANCELLED:
                raise JobCancelled(job_id)
            chunk = await session.get(ReportJobChunk, (job_id, index), with_for_update=True)
            if chunk is None or chunk.state == ReportChunkState.DONE or job.state in TERMINAL:
                return None
            if chunk.state == ReportChunkState.RUNNING:
                # Claimed before and never finished nor failed: its worker stopped.
                chunk.reclaimed += 1
                job.chunks_reclaimed += 1
                REPORT_CHUNKS.labels("reclaimed").inc()
            chunk.state = ReportChunkState.RUNNING
            chunk.worker = worker
            chunk.attempts += 1
            chunk.devices_done = 0
            job.updated_at = _now()
            session.add_all([chunk, job])
            return [DeviceIdentifier(kind, identifier) for kind, identifier in chunk.devices]

    async def _progress(
        self, job_id: str, index: int, progress: Progress, written: dict[str, Any]
    ) -> None:
        """Writes the chunk's progress into its row and the job's; ``JobCancelled`` once
        the job is."""
        async with self._sessions() as session, session.begin():
            job = await _locked(session, job_id)
            if job.state == ReportJobState.CANCELLED:
                raise JobCancelled(job_id)
            chunk = await session.get(ReportJobChunk, (job_id, index), with_for_update=True)
            if chunk is None:
                raise JobCancelled(job_id)
            chunk.devices_done = progress.devices_done
            session.add(chunk)
            await session.flush()
            _add_cost(job, progress, written)
            job.devices_done = await _devices_done(session, job_id)
            job.updated_at = _now()
            session.add(job)
        written["at"] = time.monotonic()

    async def _finish(
        self,
        job_id: str,
        index: int,
        partial: dict[str, Any],
        seconds: float,
        progress: Progress,
        written: dict[str, Any],
    ) -> None:
        async with self._sessions() as session, session.begin():
            job = await _locked(session, job_id)
            if job.state == ReportJobState.CANCELLED:
                raise JobCancelled(job_id)
            chunk = await session.get(ReportJobChunk, (job_id, index), with_for_update=True)
            if chunk is None or chunk.state == ReportChunkState.DONE:
                return
            chunk.state = ReportChunkState.DONE
            chunk.devices_done = progress.devices_done
            chunk.partial = partial
            chunk.seconds = seconds
            session.add(chunk)
            await session.flush()
            _add_cost(job, progress, written)
            job.devices_done = await _devices_done(session, job_id)
            job.chunks_done += 1
            REPORT_CHUNKS.labels("done").inc()
            if job.chunks_done == job.chunks_total:
                job.result = merge_reports(await _partials(session, job_id))
                job.state = ReportJobState.SUCCEEDED
                job.finished_at = _now()
            job.updated_at = _now()
            session.add(job)

    async def _failed(self, job_id: str, index: int, error: Exception, last: bool) -> None:
        async with self._sessions() as session, session.begin():
            job = await _locked(session, job_id)
            chunk = await session.get(ReportJobChunk, (job_id, index), with_for_update=True)
            if chunk is None or job.state in TERMINAL:
                return
            chunk.state = ReportChunkState.RETRYING
            if last:
                job.state = ReportJobState.FAILED
                job.finished_at = _now()
                job.error = f"The report failed ({type(error).__name__})."
            else:
                chunk.retried += 1
                job.chunks_retried += 1
                REPORT_CHUNKS.labels("retried").inc()
            job.updated_at = _now()
            session.add_all([chunk, job])


async def _locked(session: AsyncSession, job_id: str) -> ReportJob:
    # The job's row is the lock every chunk's writes take, so the chunk finishing last
    # sees every other chunk done, on PostgreSQL; SQLite runs one writer at a time.
    job = await session.get(ReportJob, job_id, with_for_update=True)
    if job is None:
        raise JobCancelled(job_id)
    return job


def _add_cost(job: ReportJob, progress: Progress, written: dict[str, Any]) -> None:
    # Calls made count once, whether or not the attempt that made them finished.
    job.upstream_calls += progress.cost.upstream_calls - written["calls"]
    job.cache_hits += progress.cost.cache_hits - written["hits"]
    written["calls"] = progress.cost.upstream_calls
    written["hits"] = progress.cost.cache_hits


async def _devices_done(session: AsyncSession, job_id: str) -> int:
    found = await session.exec(
        select(func.coalesce(func.sum(ReportJobChunk.devices_done), 0)).where(
            col(ReportJobChunk.job_id) == job_id
        )
    )
    return int(found.one())


async def _partials(session: AsyncSession, job_id: str) -> Sequence[dict[str, Any]]:
    found = await session.exec(
        select(ReportJobChunk)
        .where(col(ReportJobChunk.job_id) == job_id)
        .order_by(col(ReportJobChunk.index))
    )
    return [chunk.partial or merge_reports([]) for chunk in found.all()]
