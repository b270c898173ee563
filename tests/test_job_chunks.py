"""A report job in chunks in the process that started it (the embedded default, SQLite):
its chunks run side by side, and what each spent adds up exactly, with the same result
as the report computed in one request."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from support import RANGE, WAIT_S, Api, api_server, document, ident, ordinary

DEVICES = 12
INPUT = {"groupBy": ["EVENT_TYPE", "STATUS"], "bucket": "MONTH", **RANGE}
START = """
mutation Start($input: ProvisioningReportInput!) {
  startProvisioningReport(input: $input) { job { id } userErrors { code message } }
}
"""
PROGRESS = """
subscription Progress($jobId: ID!) { provisioningReportProgress(jobId: $jobId) { state } }
"""
JOB = """
query Job($id: ID!) {
  provisioningReportJob(id: $id) {
    state error errorCode
    progress { devicesDone devicesTotal upstreamCalls cacheHits chunksTotal chunksDone }
    result {
      totalEvents devicesScanned
      failures { device { kind identifier } code message }
      rows {
        key { eventType status eventBy servicePlan device { kind identifier } bucketStart }
        count firstOccurredAt lastOccurredAt
      }
    }
  }
}
"""
REPORT = document("FleetReport")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    # One device a chunk, two chunks starting at once: many chunks, side by side.
    yield from api_server(tmp_path, report_chunk_devices=1, report_worker_chunks=2)


async def test_a_job_in_chunks_counts_every_call_once_and_equals_one_request(api: Api):
    devices = [ident(d) for d in ordinary(api, DEVICES)]
    started = await api.query(START, {"input": {"devices": devices, **INPUT}})
    assert started["data"]["startProvisioningReport"]["userErrors"] == []
    job_id = started["data"]["startProvisioningReport"]["job"]["id"]
    async with asyncio.timeout(WAIT_S), Client(transport=api.websocket()) as session:
        async for _ in session.subscribe(
            GraphQLRequest(PROGRESS, variable_values={"jobId": job_id})
        ):
            pass
    job: dict[str, Any] = (await api.query(JOB, {"id": job_id}))["data"]["provisioningReportJob"]
    assert job["state"] == "SUCCEEDED", job["error"]
    progress = job["progress"]
    assert progress["chunksTotal"] == progress["chunksDone"] == DEVICES
    assert progress["devicesDone"] == progress["devicesTotal"] == DEVICES
    # Every call the chunks made reached the simulator, and each counts once.
    assert progress["upstreamCalls"] == api.calls() >= DEVICES
    assert progress["cacheHits"] == 0
    answer = await api.query(REPORT, {"input": {"devices": devices, **INPUT}})
    report = answer["data"]["provisioningReport"]
    assert job["result"] == report
