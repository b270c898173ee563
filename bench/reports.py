"""A fleet report at realistic upstream latency, and CSV exports of very long histories.

    .venv/bin/python -m bench.reports [--devices 1000] [--latency-ms 50] [--shared 2000]

The simulator and the service run as processes of their own, as in production.

1. A report job over 1,000 devices with every upstream call taking 50 ms, in one service
   process with the defaults (SQLite, no queue): wall time against the ideal (upstream
   calls x latency / UPSTREAM_CONCURRENCY), and the service's peak memory. Bar: within
   1.3x of the ideal.
2. One report job over 2,000 devices shared by two service processes over PostgreSQL and
   Redis (the SAQ queue, REPORT_QUEUE_URL; one upstream budget of 8 calls in flight for
   both, UPSTREAM_BUDGET_URL): wall time against the ideal (upstream calls x latency /
   8), bar 1.2x; the simulator's peak of calls in flight, bar 8; and the chunks each
   replica ran, bar: both ran some. Needs PostgreSQL and Redis as the tests do
   (TEST_POSTGRES_URL, TEST_REDIS_URL; its database is emptied of report jobs).
3. The history CSV export of a 1,000,000-event device against a 10,000-event one, each
   in a fresh service process: time to the first byte, rows, and the process's peak
   memory. Bar: the long export's peak within 1.5x of the short one's.
"""

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bench.auth import IDENTITY, headers
from bench.environment import settings_line
from resolvers.database import create_engine, migrate
from server.settings import Settings
from soap.simulator import MOUNT
from soap.simulator.background import Served, serving_process
from soap.simulator.fleet import Fleet

CONCURRENCY = Settings.model_fields["upstream_concurrency"].default
WALL_BAR = 1.3
SHARED_WALL_BAR = 1.2
SHARED_BUDGET = 8
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MEMORY_BAR = 1.5
BULK = (10_000, 1_000_000)
RANGE = ("2000-01-01T00:00:00Z", "2030-01-01T00:00:00Z")
START = """mutation ($input: ProvisioningReportInput!) {
  startProvisioningReport(input: $input) { job { id } userErrors { message } } }"""
JOB = """query ($id: ID!) { provisioningReportJob(id: $id) {
  state progress { devicesDone upstreamCalls cacheHits } result { totalEvents devicesScanned }
  error } }"""


def memory_mib(pid: int, field: str = "VmHWM") -> float:
    """A process's memory from /proc: its peak resident size, or ``field`` (VmRSS: now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def base_environment(upstream: Served) -> dict[str, str]:
    return {
        "UWS_BASE_URL": upstream.url + MOUNT,
        "UWS_USERNAME": "demo",
        "UWS_PASSWORD": "demo",
        "LOG_LEVEL": "warning",
        **IDENTITY.environment(),
    }


def environment(upstream: Served, database: Path) -> dict[str, str]:
    """Every tuning setting at its default: UPSTREAM_CONCURRENCY is 8, and no
    UPSTREAM_CALLS_PER_SECOND caps it (a default of 100 once made this 1.5x the ideal)."""
    return {**base_environment(upstream), "DATABASE_URL": f"sqlite+aiosqlite:///{database}"}


def service(upstream: Served, database: Path):
    return serving_process("server.app:create_app", environment(upstream, database))


async def run_job(base: str, devices: list[dict]) -> tuple[dict[str, Any], float]:
    """The job once it has ended, and the wall time from its start."""
    async with httpx.AsyncClient(base_url=base, timeout=600, headers=headers()) as http:
        # Both processes answer only once started: wait for that outside the timing.
        assert (await http.get("/readyz")).status_code == 200
        started = time.perf_counter()
        response = await http.post(
            "/graphql",
            json={
                "query": START,
                "variables": {
                    "input": {
                        "devices": devices,
                        "occurredAfter": RANGE[0],
                        "occurredBefore": RANGE[1],
                        "groupBy": ["EVENT_TYPE", "STATUS"],
                        "bucket": "MONTH",
                    }
                },
            },
        )
        job_id = response.json()["data"]["startProvisioningReport"]["job"]["id"]
        while True:  # the job runs in the service; this only watches it
            job = await http.post("/graphql", json={"query": JOB, "variables": {"id": job_id}})
            job = job.json()["data"]["provisioningReportJob"]
            if job["state"] not in ("QUEUED", "RUNNING"):
                break
            await asyncio.sleep(0.1)
        return job, time.perf_counter() - started


async def report(base: str, devices: list[dict], latency_s: float) -> bool:
    job, wall = await run_job(base, devices)
    calls = job["progress"]["upstreamCalls"]
    ideal = calls * latency_s / CONCURRENCY
    print(
        f"report over {len(devices)} devices ({job['state']}): "
        f"{job['result']['totalEvents']:,} events, {calls:,} upstream calls at "
        f"{latency_s * 1000:.0f} ms, concurrency {CONCURRENCY}"
    )
    print(
        f"  wall {wall:6.2f} s   ideal {ideal:6.2f} s   ratio {wall / ideal:4.2f}x "
        f"(bar <= {WALL_BAR}x)"
    )
    return job["state"] == "SUCCEEDED" and wall / ideal <= WALL_BAR


async def empty_database() -> None:
    """The bench's PostgreSQL database at the newest schema, with no report jobs."""
    engine = create_engine(POSTGRES)
    try:
        await migrate(engine)
        async with engine.begin() as connection:
            await connection.execute(text("TRUNCATE report_jobs, report_job_chunks"))
    finally:
        await engine.dispose()


async def chunk_workers() -> Counter[str]:
    """The chunks each worker (host:pid) ran, of the jobs in the database."""
    engine = create_engine(POSTGRES)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT worker FROM report_job_chunks"))
            return Counter(row[0] for row in rows)
    finally:
        await engine.dispose()


async def simulator_control(upstream: Served, change: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(base_url=upstream.url + MOUNT, timeout=30) as http:
        if change is None:
            return (await http.get("/_control")).json()
        return (await http.post("/_control", json=change)).json()


async def shared_job(count: int, latency_ms: float) -> bool:
    """One job over ``count`` devices run by two replicas on one queue and one budget."""
    fleet = Fleet(ordinary=count)
    devices = [
        {"kind": d.primary.kind.upper(), "identifier": d.primary.identifier} for d in fleet.devices
    ][:count]
    await empty_database()
    simulator = {
        "SIMULATOR_DEVICES": str(count),
        "SIMULATOR_LATENCY_MS": str(latency_ms),
        "SIMULATOR_WARM": "1",
    }
    with ExitStack() as stack:
        upstream = stack.enter_context(
            serving_process("soap.simulator.server:create_app", simulator)
        )
        shared = {
            "DATABASE_URL": POSTGRES,
            "REPORT_QUEUE_URL": REDIS,
            "UPSTREAM_BUDGET_URL": REDIS,
            "UPSTREAM_CONCURRENCY": str(SHARED_BUDGET),
        }
        environment = {**base_environment(upstream), **shared}
        replicas = [
            stack.enter_context(serving_process("server.app:create_app", environment))
            for _ in range(2)
        ]
        print(settings_line(environment))
        for replica in replicas:  # both started, their workers listening
            async with httpx.AsyncClient(base_url=replica.url, timeout=60) as http:
                assert (await http.get("/readyz")).status_code == 200
        await simulator_control(upstream, {"reset_calls": True})
        job, wall = await run_job(replicas[0].url, devices)
        seen = await simulator_control(upstream)
    calls = job["progress"]["upstreamCalls"]
    ideal = calls * latency_ms / 1000 / SHARED_BUDGET
    peak = seen["peakInFlight"]
    by_worker = await chunk_workers()
    shares = [by_worker[f"{socket.gethostname()}:{replica.pid}"] for replica in replicas]
    print(
        f"report over {count} devices on two replicas ({job['state']}): "
        f"{job['result']['totalEvents']:,} events, {calls:,} upstream calls at "
        f"{latency_ms:.0f} ms, one budget of {SHARED_BUDGET} in flight"
    )
    print(
        f"  wall {wall:6.2f} s   ideal {ideal:6.2f} s   ratio {wall / ideal:4.2f}x "
        f"(bar <= {SHARED_WALL_BAR}x)"
    )
    print(f"  simulator peak in flight {peak} (bar <= {SHARED_BUDGET})")
    print(
        f"  chunks per replica {shares[0]} + {shares[1]} of {sum(by_worker.values())} "
        "(bar: both ran some)"
    )
    return (
        job["state"] == "SUCCEEDED"
        and wall / ideal <= SHARED_WALL_BAR
        and peak <= SHARED_BUDGET
        and all(shares)
    )


async def export(base: str, identifier: str) -> tuple[int, float]:
    params = {
        "kind": "IMEI",
        "identifier": identifier,
        "occurredAfter": RANGE[0],
        "occurredBefore": RANGE[1],
    }
    rows, first_byte = 0, None
    started = time.perf_counter()
    async with (
        httpx.AsyncClient(timeout=900, headers=headers()) as http,
        http.stream("GET", f"{base}/exports/provisioning-history.csv", params=params) as response,
    ):
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            first_byte = first_byte or time.perf_counter() - started
            rows += chunk.count(b"\r\n")
    print(
        f"  {rows - 1:>9,} rows in {time.perf_counter() - started:6.1f} s, first byte after "
        f"{(first_byte or 0) * 1000:6.0f} ms",
        end="",
    )
    return rows - 1, first_byte or 0


async def main(count: int, latency_ms: float, shared: int) -> int:
    fleet = Fleet(ordinary=count, bulk=BULK)
    devices = [
        {"kind": d.primary.kind.upper(), "identifier": d.primary.identifier}
        for d in fleet.devices
        if not d.profile.name.startswith("bulk")
    ][:count]
    bulk = {
        d.profile.size: d.primary.identifier
        for d in fleet.devices
        if d.profile.name.startswith("bulk")
    }
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        simulator = {
            "SIMULATOR_DEVICES": str(count),
            "SIMULATOR_BULK": ",".join(map(str, BULK)),
            "SIMULATOR_LATENCY_MS": str(latency_ms),
            "SIMULATOR_WARM": "1",
        }
        with (
            serving_process("soap.simulator.server:create_app", simulator) as upstream,
            service(upstream, Path(tmp) / "report.db") as api,
        ):
            print(settings_line(environment(upstream, Path(tmp) / "report.db")))
            ok &= await report(api.url, devices, latency_ms / 1000)
            print(f"  service peak memory {memory_mib(api.pid):.0f} MiB")
        print()
        ok &= await shared_job(shared, latency_ms)
        print("\nhistory CSV export, each in a fresh service process")
        peaks = {}
        with serving_process(
            "soap.simulator.server:create_app", {**simulator, "SIMULATOR_LATENCY_MS": "0"}
        ) as upstream:
            for size in BULK:
                with service(upstream, Path(tmp) / f"export-{size}.db") as api:
                    rows, _ = await export(api.url, bulk[size])
                    peaks[size] = memory_mib(api.pid)
                    print(f", service peak memory {peaks[size]:.0f} MiB")
                    ok &= rows == size
    ratio = peaks[BULK[1]] / peaks[BULK[0]]
    print(f"  peak memory {BULK[1]:,} rows / {BULK[0]:,} rows: {ratio:.2f}x (bar <= {MEMORY_BAR}x)")
    ok &= ratio <= MEMORY_BAR
    print("\nall figures within their bars" if ok else "\nSOME FIGURES MISS THEIR BARS")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--shared", type=int, default=2000, help="devices of the shared job")
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.devices, options.latency_ms, options.shared)))
