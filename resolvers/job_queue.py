"""Report jobs on SAQ, a job queue on Redis that every replica's worker serves.

A job's plan and each of its chunks are queue jobs (keyed by the report job's id, so a
step enqueued twice runs once). A worker holds a step under a lease: it touches the step
(SAQ's heartbeat) every third of ``lease_s``, and every worker sweeps the queue each
``lease_s``, handing a step whose heartbeat stopped (its worker died) to the next worker
that asks. Cancelling aborts the job's steps, which SAQ stops wherever they run.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from saq import Job, Queue, Status, Worker
from saq.types import Context, PartialTimersDict
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from models.reports import ReportJob, ReportJobState
from resolvers.job_chunks import ChunkWork, JobCancelled, worker_name
from resolvers.jobs import end_job
from resolvers.metrics import REPORT_QUEUE_DEPTH

log = logging.getLogger(__name__)
QUEUE_NAME = "provgraph-reports"
PLAN = "report_plan"
CHUNK = "report_chunk"
_WAITING = (Status.NEW, Status.QUEUED, Status.ACTIVE)


def plan_key(job_id: str) -> str:
    return f"{job_id}.plan"


def chunk_key(job_id: str, index: int) -> str:
    return f"{job_id}.{index}"


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
        self.queue = Queue.from_url(url, name=QUEUE_NAME)
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
        self._working: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.queue.connect()
        if self.worker is not None:
            self._working = asyncio.create_task(self.worker.start())

    async def stop(self) -> None:
        if self.worker is not None:
            # A step in flight is left to its lease: another worker takes it over.
            await self.worker.stop()
        if self._working is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._working
        await self.queue.disconnect()

    async def submit(self, job_id: str) -> None:
        await self._enqueue(PLAN, plan_key(job_id), job_id=job_id)

    async def cancel(self, job_id: str, chunks: int) -> None:
        keys = [plan_key(job_id), *(chunk_key(job_id, index) for index in range(chunks))]
        for step in await self.queue.jobs(keys):
            if step is not None and step.status in _WAITING:
                await self.queue.abort(step, "cancelled")

    def lost(self, job: ReportJob) -> bool:
        # The queue keeps a job's steps until some worker runs them, however long.
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
        REPORT_QUEUE_DEPTH.set(await self.queue.count("queued"))

    async def _plan(self, context: Context, *, job_id: str) -> None:
        async def plan() -> None:
            chunks = await self._work.plan(job_id)
            for index in range(chunks or 0):
                await self._enqueue(CHUNK, chunk_key(job_id, index), job_id=job_id, index=index)

        await self._leased(context, job_id, plan)

    async def _chunk(self, context: Context, *, job_id: str, index: int) -> None:
        step: Job = context["job"]
        last = not step.retryable

        async def run() -> None:
            await self._work.run(job_id, index, self._worker_id, last)

        await self._leased(context, job_id, run)

    async def _leased(
        self, context: Context, job_id: str, step: Callable[[], Awaitable[None]]
    ) -> None:
        """Runs ``step`` while touching its queue job, so its lease lasts as long as the
        worker does; a step of a cancelled job ends quietly."""
        job: Job = context["job"]
        beating = asyncio.create_task(self._heartbeat(job))
        try:
            await step()
        except JobCancelled:
            return
        except Exception as error:
            if not job.retryable:
                message = f"The report failed ({type(error).__name__})."
                await end_job(self._sessions, job_id, ReportJobState.FAILED, message)
            raise
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    async def _heartbeat(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            await job.update()
            REPORT_QUEUE_DEPTH.set(await self.queue.count("queued"))
