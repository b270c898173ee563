"""A fleet report at realistic upstream latency, and CSV exports of very long histories.

    .venv/bin/python -m bench.reports [--devices 1000] [--latency-ms 50]

The simulator and the service run as processes of their own, as in production.

1. A report job over 1,000 devices with every upstream call taking 50 ms: wall time
   against the ideal (upstream calls x latency / UPSTREAM_CONCURRENCY), and the service's
   peak memory. Bar: within 1.3x of the ideal.
2. The history CSV export of a 1,000,000-event device against a 10,000-event one, each
   in a fresh service process: time to the first byte, rows, and the process's peak
   memory. Bar: the long export's peak within 1.5x of the short one's.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.auth import IDENTITY, headers
from bench.environment import settings_line
from server.settings import Settings
from soap.simulator import MOUNT
from soap.simulator.background import Served, serving_process
from soap.simulator.fleet import Fleet

CONCURRENCY = Settings.model_fields["upstream_concurrency"].default
WALL_BAR = 1.3
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


def environment(upstream: Served, database: Path) -> dict[str, str]:
    """Every tuning setting at its default: UPSTREAM_CONCURRENCY is 8, and no
    UPSTREAM_CALLS_PER_SECOND caps it (a default of 100 once made this 1.5x the ideal)."""
    return {
        "UWS_BASE_URL": upstream.url + MOUNT,
        "UWS_USERNAME": "demo",
        "UWS_PASSWORD": "demo",
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "LOG_LEVEL": "warning",
        **IDENTITY.environment(),
    }


def service(upstream: Served, database: Path):
    return serving_process("server.app:create_app", environment(upstream, database))


async def report(base: str, devices: list[dict], latency_s: float) -> bool:
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
        wall = time.perf_counter() - started
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


async def main(count: int, latency_ms: float) -> int:
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
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.devices, options.latency_ms)))
