"""Report jobs shared by service processes through the job queue (SAQ on Redis), with
their chunks in PostgreSQL: both replicas work, one killed mid-chunk loses only that
chunk, cancelling stops both, and the result is the report computed in one request."""

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from gql import Client, GraphQLRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from saq import Job, Queue, Status
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from support import (
    POSTGRES_URL,
    RANGE,
    REDIS_URL,
    WAIT_S,
    Api,
    SimulatorSeat,
    auth_environment,
    document,
    fresh_postgres,
    ident,
    require_service,
    simulator_seat,
)

from graph.relay import parse_global_id
from models.reports import ReportChunkState, ReportJobChunk
from resolvers.database import create_engine
from resolvers.job_queue import QUEUE_NAME, chunk_key
from soap.simulator.background import Served, serving_process

REPORT = document("FleetReport")
RESULT = """
  totalEvents devicesScanned
  failures { device { kind identifier } code message }
  rows {
    key { eventType status eventBy servicePlan device { kind identifier } bucketStart }
    count firstOccurredAt lastOccurredAt
  }
"""
START = """
mutation Start($input: ProvisioningReportInput!) {
  startProvisioningReport(input: $input) { job { id } userErrors { code message } }
}
"""
JOB = f"""
query Job($id: ID!) {{
  provisioningReportJob(id: $id) {{
    state
    progress {{ devicesDone devicesTotal chunksTotal chunksDone chunksRetried chunksReclaimed }}
    result {{ {RESULT} }}
    error errorCode
  }}
}}
"""
CANCEL = """
mutation Cancel($id: ID!) { cancelProvisioningReport(id: $id) { state } }
"""
PROGRESS = """
subscription Progress($jobId: ID!) { provisioningReportProgress(jobId: $jobId) { state } }
"""
DEVICES = 6
INPUT = {"groupBy": ["EVENT_TYPE", "STATUS"], **RANGE}


@pytest.fixture
async def shared() -> dict[str, str]:
    """PostgreSQL at the newest schema and an empty queue on Redis."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    await fresh_postgres()
    connection = aioredis.from_url(REDIS_URL)
    await connection.flushdb()
    await connection.aclose()
    return {"DATABASE_URL": POSTGRES_URL, "REPORT_QUEUE_URL": REDIS_URL}


@pytest.fixture
def seat() -> Iterator[SimulatorSeat]:
    with simulator_seat() as served:
        yield served
        served.gate.open()


def replicas(
    seat: SimulatorSeat, shared: dict[str, str], count: int, **settings: str
) -> Iterator[list[Served]]:
    """Service processes on one database and queue, each working one chunk of one device
    at a time: a replica holds at most one upstream call."""
    environment = {
        **auth_environment(),
        **shared,
        "UWS_BASE_URL": seat.url,
        "UWS_USERNAME": "demo",
        "UWS_PASSWORD": "demo",
        "REPORT_CHUNK_DEVICES": "1",
        "REPORT_WORKER_CHUNKS": "1",
        "REPORT_CHUNK_LEASE_S": "1",
        **settings,
    }
    with ExitStack() as stack:
        yield [
            stack.enter_context(serving_process("server.app:create_app", environment))
            for _ in range(count)
        ]


@pytest.fixture
def two(seat: SimulatorSeat, shared: dict[str, str]) -> Iterator[list[Served]]:
    yield from replicas(seat, shared, 2)


def worker(served: Served) -> str:
    return f"{socket.gethostname()}:{served.pid}"


async def start(api: Api, seat: SimulatorSeat, headers: dict[str, str] | None = None) -> str:
    devices = [d for d in seat.simulator.fleet.devices if d.profile.name == "ordinary"]
    variables = {"input": {"devices": [ident(d) for d in devices[:DEVICES]], **INPUT}}
    answer = await api.query(START, variables, headers=headers)
    started = answer["data"]["startProvisioningReport"]
    assert started["userErrors"] == []
    job_id: str = started["job"]["id"]
    return job_id


async def ended(api: Api, job_id: str) -> dict[str, Any]:
    """The job once it has ended, as its progress subscription saw it end."""
    async with asyncio.timeout(4 * WAIT_S), Client(transport=api.websocket()) as session:
        async for _ in session.subscribe(
            GraphQLRequest(PROGRESS, variable_values={"jobId": job_id})
        ):
            pass
    job: dict[str, Any] = (await api.query(JOB, {"id": job_id}))["data"]["provisioningReportJob"]
    return job


async def one_request(api: Api, seat: SimulatorSeat) -> dict[str, Any]:
    """The same report, computed in one request by one process."""
    devices = [d for d in seat.simulator.fleet.devices if d.profile.name == "ordinary"]
    variables = {"input": {"devices": [ident(d) for d in devices[:DEVICES]], **INPUT}}
    report: dict[str, Any] = (await api.query(REPORT, variables))["data"]["provisioningReport"]
    return report


async def metric_samples(api: Api) -> dict[str, list[Sample]]:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        response = await http.get(f"{api.base_url}/metrics", headers=api.headers)
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(response.text):
        for each in family.samples:
            samples.setdefault(each.name, []).append(each)
    return samples


def sample(samples: dict[str, list[Sample]], name: str, labels: dict[str, str]) -> float:
    return sum(s.value for s in samples.get(name, []) if labels.items() <= s.labels.items())


async def chunks(job_id: str) -> list[ReportJobChunk]:
    raw = parse_global_id(job_id)[1][0]
    engine = create_engine(POSTGRES_URL)
    try:
        async with AsyncSession(engine) as session:
            found = await session.exec(
                select(ReportJobChunk)
                .where(col(ReportJobChunk.job_id) == raw)
                .order_by(col(ReportJobChunk.index))
            )
            return list(found.all())
    finally:
        await engine.dispose()


async def stopped(step: Job) -> None:
    """Waits, at most WAIT_S, for ``step`` to end in the queue. SAQ's
    ``refresh(until_complete=...)`` reads the step, then listens for its next status: an
    end that comes between the two is never heard, and the wait runs out. So this listens
    a second at a time, reading the step again each time."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not step.completed and asyncio.get_running_loop().time() < deadline:
        try:
            await step.refresh(until_complete=1)
        except TimeoutError:
            await step.refresh()


async def both_working(job_id: str) -> set[str]:
    """The workers, once two replicas each hold a chunk they claimed: with the gate shut
    no chunk can end, so both are mid-chunk. Woken by the queue's notices (a held chunk's
    heartbeat sends one), not by a timer."""
    raw = parse_global_id(job_id)[1][0]
    workers: set[str] = set()

    async def working(key: str, status: Status) -> bool:
        rows = await chunks(job_id)
        running = {r.worker for r in rows if r.state == ReportChunkState.RUNNING and r.worker}
        workers.update(running)
        return len(running) >= 2

    queue = Queue.from_url(REDIS_URL, name=QUEUE_NAME)
    await queue.connect()
    try:
        keys = [chunk_key(raw, index) for index in range(DEVICES)]
        await queue.listen(keys, working, timeout=WAIT_S)
    finally:
        await queue.disconnect()
    assert len(workers) == 2, workers
    return workers


async def test_a_job_is_shared_by_two_replicas_and_equals_one_process(
    seat: SimulatorSeat, two: list[Served]
):
    one, other = (Api(s.url, seat.simulator) for s in two)
    seat.gate.shut()
    job_id = await start(one, seat)
    assert await both_working(job_id) == {worker(s) for s in two}
    seat.gate.open()
    job = await ended(other, job_id)
    assert job["state"] == "SUCCEEDED"
    assert job["progress"] == {
        "devicesDone": DEVICES,
        "devicesTotal": DEVICES,
        "chunksTotal": DEVICES,
        "chunksDone": DEVICES,
        "chunksRetried": 0,
        "chunksReclaimed": 0,
    }
    rows = await chunks(job_id)
    assert {row.worker for row in rows} == {worker(s) for s in two}
    assert all(row.state == ReportChunkState.DONE for row in rows)
    assert job["result"] == await one_request(one, seat)
    devices = [d for d in seat.simulator.fleet.devices if d.profile.name == "ordinary"]
    truth = sum(len(seat.simulator.fleet.history(d)) for d in devices[:DEVICES])
    assert job["result"]["totalEvents"] == truth
    # What each replica did shows in its metrics; together, the whole job.
    samples = [await metric_samples(api) for api in (one, other)]
    for name, labels in [
        ("provgraph_report_chunks_total", {"event": "done"}),
        ("provgraph_report_chunk_seconds_count", {}),
    ]:
        assert all(sample(s, name, labels) > 0 for s in samples)
        assert sum(sample(s, name, labels) for s in samples) == DEVICES
    waits = "provgraph_upstream_budget_wait_seconds_count"
    assert sum(sample(s, waits, {"priority": "job"}) for s in samples) >= DEVICES
    assert all("provgraph_report_queue_depth" in s for s in samples)


async def killed_mid_job(seat: SimulatorSeat, pair: list[Served]) -> tuple[str, Api]:
    """Starts a job on the first replica of ``pair`` with the upstream held, and once both
    hold chunks of it kills the first (SIGKILL): the job's id and the survivor's API. The
    upstream stays held."""
    doomed, survivor = pair
    seat.gate.shut()
    job_id = await start(Api(doomed.url, seat.simulator), seat)
    assert await both_working(job_id) == {worker(s) for s in pair}
    os.kill(doomed.pid, signal.SIGKILL)
    return job_id, Api(survivor.url, seat.simulator)


async def test_a_replica_killed_mid_chunk_loses_only_that_chunk(
    seat: SimulatorSeat, two: list[Served]
):
    job_id, survivor_api = await killed_mid_job(seat, two)
    seat.gate.open()
    job = await ended(survivor_api, job_id)
    assert job["state"] == "SUCCEEDED"
    assert job["progress"]["chunksDone"] == DEVICES
    assert job["progress"]["chunksReclaimed"] == 1
    rows = await chunks(job_id)
    assert all(row.state == ReportChunkState.DONE for row in rows)
    assert {row.worker for row in rows} == {worker(two[1])}  # the dead one finished none
    assert [row.reclaimed for row in rows].count(1) == 1
    assert job["result"] == await one_request(survivor_api, seat)


async def test_cancelling_stops_the_chunks_on_both_replicas(seat: SimulatorSeat, two: list[Served]):
    one, other = (Api(s.url, seat.simulator) for s in two)
    seat.gate.shut()
    job_id = await start(one, seat)
    await both_working(job_id)
    raw = parse_global_id(job_id)[1][0]
    queue = Queue.from_url(REDIS_URL, name=QUEUE_NAME)
    await queue.connect()
    try:
        steps = await queue.jobs(chunk_key(raw, index) for index in range(DEVICES))
        held = [step for step in steps if step is not None and step.status == Status.ACTIVE]
        assert {step.worker_id for step in held} == {worker(s) for s in two}
        cancelled = await other.query(CANCEL, {"id": job_id})
        assert cancelled["data"]["cancelProvisioningReport"]["state"] == "CANCELLED"
        for step in held:  # stopped while its upstream call is still held
            await stopped(step)
            assert step.status == Status.ABORTED
        waiting = [s for s in steps if s is not None and s not in held]
        for step in waiting:
            await step.refresh()
            assert step.status == Status.ABORTED
    finally:
        await queue.disconnect()
    seat.gate.open()
    job = (await one.query(JOB, {"id": job_id}))["data"]["provisioningReportJob"]
    assert job["state"] == "CANCELLED"
    assert job["progress"]["chunksDone"] == 0


@pytest.fixture
def two_with_one_attempt(seat: SimulatorSeat, shared: dict[str, str]) -> Iterator[list[Served]]:
    yield from replicas(seat, shared, 2, REPORT_CHUNK_ATTEMPTS="1")


async def test_a_chunk_whose_last_attempt_died_fails_its_job_instead_of_leaving_it_running(
    seat: SimulatorSeat, two_with_one_attempt: list[Served]
):
    """No attempt is left for the killed replica's chunk, so no worker will run it again:
    the job ends FAILED, saying why, and its other chunks stop, instead of RUNNING for
    ever."""
    doomed = two_with_one_attempt[0]
    job_id, survivor_api = await killed_mid_job(seat, two_with_one_attempt)
    job = await ended(survivor_api, job_id)  # with the gate still shut
    assert job["state"] == "FAILED"
    assert job["errorCode"] == "CHUNK_LOST"
    rows = await chunks(job_id)
    (lost,) = [row.index for row in rows if row.worker == worker(doomed)]
    assert f"chunk {lost} was lost" in job["error"]
    assert job["progress"]["chunksDone"] == 0
    raw = parse_global_id(job_id)[1][0]
    queue = Queue.from_url(REDIS_URL, name=QUEUE_NAME)
    await queue.connect()
    try:
        steps = await queue.jobs(chunk_key(raw, row.index) for row in rows)
        for step in steps:  # the survivor's held chunk too, its call still held
            assert step is not None
            await stopped(step)
            # Aborted where SAQ stopped it; a chunk that saw its job ended first stops
            # quietly, which SAQ records as complete (having done nothing: chunksDone 0).
            assert step.status in (Status.ABORTED, Status.COMPLETE)
        assert any(step.status == Status.ABORTED for step in steps)
    finally:
        await queue.disconnect()


CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CALLER = {"traceparent": f"00-{CALLER_TRACE:032x}-{0xB7AD6B7169203331:016x}-01"}


class Collector:
    """An OTLP/HTTP collector: the spans every replica exports, as they arrive."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.changed = threading.Condition()
        spans, changed = self.spans, self.changed

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                with changed:
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            spans.extend(scope.spans)
                    changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def named(self, name: str) -> list[Span]:
        with self.changed:
            return [span for span in self.spans if span.name == name]

    async def until(self, name: str, count: int) -> list[Span]:
        """The first ``count`` spans called ``name``, once that many have arrived."""

        def wait() -> bool:
            with self.changed:
                return self.changed.wait_for(lambda: len(self.named(name)) >= count, WAIT_S)

        assert await asyncio.to_thread(wait), f"fewer than {count} spans {name!r}"
        return self.named(name)[:count]


@pytest.fixture
def collector() -> Iterator[Collector]:
    collecting = Collector()
    thread = threading.Thread(target=collecting.server.serve_forever)
    thread.start()
    yield collecting
    collecting.server.shutdown()
    thread.join()


@pytest.fixture
def traced_two(
    seat: SimulatorSeat, shared: dict[str, str], collector: Collector
) -> Iterator[list[Served]]:
    yield from replicas(
        seat,
        shared,
        2,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="50",  # ms: export soon after a span ends
    )


def attribute(span: Span, name: str) -> Any:
    (value,) = [a.value for a in span.attributes if a.key == name]
    return getattr(value, value.WhichOneof("value"))


async def test_each_chunk_is_a_trace_linked_to_its_job_wherever_it_runs(
    seat: SimulatorSeat, traced_two: list[Served], collector: Collector
):
    one, other = (Api(s.url, seat.simulator) for s in traced_two)
    seat.gate.shut()
    job_id = await start(one, seat, CALLER)
    assert await both_working(job_id) == {worker(s) for s in traced_two}
    seat.gate.open()
    assert (await ended(other, job_id))["state"] == "SUCCEEDED"

    (job,) = await collector.until("report job", 1)
    (mutation,) = await collector.until("mutation Start", 1)
    assert int.from_bytes(mutation.trace_id) == CALLER_TRACE
    assert job.parent_span_id == b""
    assert int.from_bytes(job.trace_id) != CALLER_TRACE
    assert [(link.trace_id, link.span_id) for link in job.links] == [
        (mutation.trace_id, mutation.span_id)
    ]
    raw = parse_global_id(job_id)[1][0]
    assert attribute(job, "provgraph.report_job.id") == raw
    chunk_spans = await collector.until("report job chunk", DEVICES)
    assert sorted(attribute(c, "provgraph.report_job.chunk") for c in chunk_spans) == list(
        range(DEVICES)
    )
    assert {attribute(c, "provgraph.worker") for c in chunk_spans} == {
        worker(s) for s in traced_two
    }
    for chunk in chunk_spans:
        assert chunk.parent_span_id == b""
        assert chunk.trace_id != job.trace_id
        assert [(link.trace_id, link.span_id) for link in chunk.links] == [
            (job.trace_id, job.span_id)
        ]
    # Each chunk's upstream exchanges are in its trace.
    calls = await collector.until("IDeviceService/GetDeviceProvisioningHistory", DEVICES)
    assert {call.trace_id for call in calls} <= {chunk.trace_id for chunk in chunk_spans}
