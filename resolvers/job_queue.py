"""Report jobs on SAQ, a job queue on Redis that every replica's worker serves.

A job's plan and each of its chunks are queue jobs (keyed by the report job's id, so a
step enqueued twice runs once). A worker holds a step under a lease: it touches the step
(SAQ's heartbeat) every third of ``lease_s``, and every worker sweeps the queue each
``lease_s``, handing a step whose heartbeat stopped (its worker died) to the next worker
that asks. Cancelling aborts the job's steps, which SAQ stops wherever they run.

A step whose worker died on its last attempt is never run again: SAQ's sweep ends it,
and no code of ours runs to say so. Every replica therefore watches the open jobs (the
watchdog, each ``lease_s``): a job with an unfinished step that the queue no longer
holds (waiting, or held by a live worker) can no longer succeed, and ends FAILED
(``CHUNK_LOST``) instead of RUNNING for ever.

Each step is a trace of its own: the plan's ("report job") linked to the request that
started the job, each chunk's linked to the plan's, so a job's work on every replica
is found from the request.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanContext
from saq import Job, Status, Worker
from saq.queue.redis import RedisQueue
from saq.types import Context, PartialTimersDict
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.reports import (
    OPEN,
    ReportChunkState,
    ReportJob,
    ReportJobChunk,
    ReportJobError,
    ReportJobState,
)
from resolvers.job_chunks import ChunkWork, JobCancelled, step_span, worker_name
from resolvers.jobs import aware, end_job, fail_job
from resolvers.metrics import REPORT_QUEUE_DEPTH

log = logging.getLogger(__name__)
QUEUE_NAME = "provgraph-reports"
PLAN = "report_plan"
CHUNK = "report_chunk"
_WAITING = (Status.NEW, Status.QUEUED, Status.ACTIVE)
_ALIVE = (Status.NEW, Status.QUEUED, Status.ACTIVE, Status.ABORTING)
_SWEEP_WAITS = 30
"""A sweep waits a lease's thirtieth on each stuck step (``_Queue``): twenty at once stay
within the two thirds of a lease a live step's last touch may be old (it touches every
third)."""


class _Queue(RedisQueue):
    """SAQ's Redis queue, whose sweep reads every held step at once, then waits ``abort``
    seconds on each stuck one before judging the next from what it read: its default 5 s
    on a dead worker's step made a live step after it look a lease stale (the tests' lease
    is 1 s), and swept it while it ran. Every sweep here, the worker's and the watchdog's,
    waits a fraction of the lease instead."""

    def __init__(self, *args: Any, lease_s: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sweep_wait_s = lease_s / _SWEEP_WAITS

    async def sweep(self, lock: int = 60, abort: float | None = None) -> list[str]:
        return await super().sweep(lock, self._sweep_wait_s if abort is None else abort)


"""A step in these may still run; one held by a dead worker stays ACTIVE until a sweep
retries it (alive again) or ends it."""


def plan_key(job_id: str) -> str:
    return f"{job_id}.plan"


def chunk_key(job_id: str, index: int) -> str:
    return f"{job_id}.{index}"


def _carrier() -> dict[str, str]:
    """The current span's context as W3C trace headers: what a step carries to the
    worker that runs it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _linked(carrier: dict[str, str]) -> SpanContext:
    return trace.get_current_span(propagate.extract(carrier)).get_span_context()


class ServiceWorker(Worker[Context]):
    """A worker inside the service process: the server handles the signals (uvicorn
    stops, then the services close and stop the worker), not the worker."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.SIGNALS = []


class QueueRunner:
    def __init__(
        self,
        url: str,
        sessions: async_sessionmaker[AsyncSession],
        work: ChunkWork,
        *,
        attempts: int,
        lease_s: int,
        worker_concurrency: int,
        run_worker: bool,
        worker_class: type[Worker[Context]] = ServiceWorker,
    ) -> None:
        self.queue = _Queue.from_url(url, name=QUEUE_NAME, lease_s=lease_s)
        self._sessions = sessions
        self._work = work
        self._attempts = attempts
        self._lease_s = lease_s
        self._worker_id = worker_name()
        self.worker: Worker[Context] | None = None
        if run_worker:
            timers: PartialTimersDict = {
                "schedule": 1,
                "worker_info": 10,
                "sweep": lease_s,
                "abort": 1,
            }
            self.worker = worker_class(
                self.queue,
                [(PLAN, self._plan), (CHUNK, self._chunk)],
                id=self._worker_id,
                concurrency=worker_concurrency,
                timers=timers,
            )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.queue.connect()
        if self.worker is not None:
            self._tasks.append(asyncio.create_task(self.worker.start()))
        self._tasks.append(asyncio.create_task(self._watchdog()))

    async def stop(self) -> None:
        if self.worker is not None:
            # A step in flight is left to its lease: another worker takes it over.
            await self.worker.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.queue.disconnect()

    async def submit(self, job_id: str) -> None:
        await self._enqueue(PLAN, plan_key(job_id), job_id=job_id, trace=_carrier())
        REPORT_QUEUE_DEPTH.set(await self.queue.count("queued"))

    async def cancel(self, job_id: str, chunks: int) -> None:
        keys = [plan_key(job_id), *(chunk_key(job_id, index) for index in range(chunks))]
        for step in await self.queue.jobs(keys):
            if step is not None and step.status in _WAITING:
                await self.queue.abort(step, "cancelled")

    def lost(self, job: ReportJob) -> bool:
        # The watchdog ends a job that can no longer end: its row says so.
        return False

    async def _enqueue(self, function: str, key: str, **arguments: Any) -> None:
        await self.queue.enqueue(
            function,
            key=key,
            timeout=0,  # a chunk takes as long as its devices do; the lease bounds a dead one
            heartbeat=self._lease_s,
            retries=self._attempts,
            **arguments,
        )

    async def _plan(self, context: Context, *, job_id: str, trace: dict[str, str]) -> None:
        async def plan() -> None:
            with step_span("report job", job_id, _linked(trace)):
                chunks = await self._work.plan(job_id)
                # The chunks link to this span: the job's, wherever they run. Enqueued
                # side by side: the first workers start while the rest are enqueued.
                carrier = _carrier()
                await asyncio.gather(
                    *(
                        self._enqueue(
                            CHUNK,
                            chunk_key(job_id, index),
                            job_id=job_id,
                            index=index,
                            trace=carrier,
                        )
                        for index in range(chunks or 0)
                    )
                )
                REPORT_QUEUE_DEPTH.set(await self.queue.count("queued"))

        await self._leased(context, job_id, plan)

    async def _chunk(
        self, context: Context, *, job_id: str, index: int, trace: dict[str, str]
    ) -> None:
        step: Job = context["job"]
        last = not step.retryable

        async def run() -> None:
            attributes: dict[str, str | int] = {
                "provgraph.report_job.chunk": index,
                "provgraph.worker": self._worker_id,
            }
            with step_span("report job chunk", job_id, _linked(trace), **attributes):
                await self._work.run(job_id, index, self._worker_id, last)

        await self._leased(context, job_id, run)

    async def _leased(
        self, context: Context, job_id: str, step: Callable[[], Awaitable[None]]
    ) -> None:
        """Runs ``step`` while touching its queue job, so its lease lasts as long as the
        worker does; a step of a job that has ended ends quietly."""
        job: Job = context["job"]
        beating = asyncio.create_task(self._heartbeat(job))
        try:
            await step()
        except JobCancelled:
            return
        except Exception as error:
            if not job.retryable:
                await fail_job(self._sessions, job_id, error)
            raise
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    async def _heartbeat(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            await job.update()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s)
            try:
                await self.watch()
            except Exception:
                log.exception("report job watchdog")

    async def watch(self) -> list[str]:
        """Ends the open jobs that can no longer succeed (FAILED, ``CHUNK_LOST``); their
        ids."""
        REPORT_QUEUE_DEPTH.set(await self.queue.count("queued"))
        # A step held by a dead worker ends its lease here, even with no worker alive in
        # this replica: retried if attempts are left (alive again), else ended.
        await self.queue.sweep(lock=self._lease_s)
        quiet = datetime.now(UTC) - timedelta(seconds=self._lease_s)
        async with self._sessions() as session:
            found = await session.exec(select(ReportJob).where(col(ReportJob.state).in_(OPEN)))
            candidates = [job.id for job in found.all() if aware(job.updated_at) < quiet]
        ended = []
        for job_id in candidates:
            lost = await self._lost_step(job_id)
            if lost is None:
                continue
            message = (
                f"The job's {lost} was lost: the worker running its last attempt stopped, "
                "so no worker will run it again (REPORT_CHUNK_ATTEMPTS)."
            )
            log.warning("report job %s: %s", job_id, message)
            await end_job(
                self._sessions, job_id, ReportJobState.FAILED, message, ReportJobError.CHUNK_LOST
            )
            # Its other chunks, waiting or held, would only find it ended: stop them now.
            async with self._sessions() as session:
                job = await session.get(ReportJob, job_id)
            await self.cancel(job_id, job.chunks_total if job is not None else 0)
            ended.append(job_id)
        return ended

    async def _lost_step(self, job_id: str) -> str | None:
        """The job's unfinished step (``plan``, ``chunk N``) that the queue no longer
        holds alive, so that it will never run again; None while every one may."""
        keys = await self._unfinished(job_id)
        plan, *steps = await self.queue.jobs([plan_key(job_id), *keys.values()])
        if plan is not None and plan.status in _ALIVE:
            return None  # a plan run again enqueues the chunks it had not
        dead = {
            name
            for (name, key), step in zip(keys.items(), steps, strict=True)
            if step is None or step.status not in _ALIVE
        }
        if not dead:
            return None
        # A step ends in the queue after its row says it is done: one still unfinished
        # now, its step ended before, stays so.
        again = await self._unfinished(job_id)
        lost = [name for name in again if name in dead]
        return lost[0] if lost else None

    async def _unfinished(self, job_id: str) -> dict[str, str]:
        """The job's steps not done yet, by name, with their queue keys."""
        async with self._sessions() as session:
            job = await session.get(ReportJob, job_id)
            if job is None or job.state not in OPEN:
                return {}
            if not job.chunks_total:
                return {"plan": plan_key(job_id)}
            found = await session.exec(
                select(ReportJobChunk.index).where(
                    col(ReportJobChunk.job_id) == job_id,
                    col(ReportJobChunk.state) != ReportChunkState.DONE,
                )
            )
            return {f"chunk {index}": chunk_key(job_id, index) for index in found.all()}
