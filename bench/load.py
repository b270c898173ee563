"""A load run: many clients at once while the upstream fails now and then.

    .venv/bin/python -m bench.load [--clients 24] [--seconds 60] [--failure-rate 0.03]

Loopback only, bounded in time and in clients. The simulator and the service run as
processes of their own, the service with its default settings (rate limit included: each
client carries a credential of its own, as people do); the simulator answers after 20 ms
and fails a share of its calls at random (HTTP 503 or a SOAP fault, seeded). For the
whole period:

- history readers page through random devices' histories, 50 events a page, over
  ranges cut at random so that many pages miss the cache;
- recipe writers create recipes (each with an idempotency key);
- subscribers hold graphql-transport-ws subscriptions to recipe creations.

Printed: requests served and their rate, errors by code, latency percentiles per kind,
events created against events delivered to every subscriber, and the service's resident
memory over the run with its window cache's share (``provgraph_cache_bytes``, bounded by
CACHE_MAX_BYTES). Verdicts: no error outside the injected failures' codes, every
created event delivered to every subscriber, memory flat: the last quarter's median,
less the window cache (which fills by design, up to its bound), within 1.15x of the
second quarter's.
"""

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import websockets
from limits import parse

from bench.auth import IDENTITY, bearer, headers
from bench.environment import settings_line
from bench.reports import memory_mib
from server.settings import Settings
from soap.simulator import MOUNT
from soap.simulator.background import serving_process
from soap.simulator.fleet import Fleet

INJECTED = {"UPSTREAM_UNAVAILABLE", "UPSTREAM_FAULT"}
"""What the simulator's random failures (HTTP 503, SOAP fault) become in the API."""
MEMORY_BAR = 1.15
ORGANIZATION = "0123456789abcdef0123456789abcdef"
HISTORY = """query ($kind: DeviceIdentifierKind!, $identifier: String!, $after: String,
  $from: DateTime, $to: DateTime) {
  device(kind: $kind, identifier: $identifier) {
    provisioningHistory(first: 50, after: $after, occurredAfter: $from, occurredBefore: $to) {
      edges { node { occurredAt eventType status } }
      pageInfo { hasNextPage endCursor } } } }"""
CREATE = """mutation ($input: CreateProvisioningRecipeInput!) {
  createProvisioningRecipe(input: $input) { event { id } userErrors { code message } } }"""
SUBSCRIBE = "subscription { provisioningRecipeCreated { id } }"


class Tally:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {"history": [], "create": []}
        self.codes: Counter[str] = Counter()
        self.created: set[str] = set()

    def record(self, kind: str, started: float, body: dict) -> None:
        self.latencies[kind].append(time.perf_counter() - started)
        for error in body.get("errors") or []:
            self.codes[(error.get("extensions") or {}).get("code", "NO_CODE")] += 1
        if not body.get("errors"):
            self.codes["ok"] += 1


class Pace:
    """One client's requests spread to 80% of the default per-credential rate limit: a
    client of the product keeps to it (or is told 429), so the run measures the service,
    not its refusals of a client that never pauses."""

    _limit = parse(Settings.model_fields["rate_limit"].default)
    interval_s = _limit.get_expiry() / (_limit.amount * 0.8)

    def __init__(self) -> None:
        self._next = time.perf_counter()

    async def turn(self) -> None:
        self._next = max(self._next + self.interval_s, time.perf_counter())
        await asyncio.sleep(self._next - time.perf_counter())


async def post(
    http: httpx.AsyncClient, query: str, variables: dict, token: str, pace: Pace
) -> dict:
    await pace.turn()
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers=headers(token),
    )
    if response.status_code >= 500:
        return {"errors": [{"message": response.text, "extensions": {"code": "HTTP_5XX"}}]}
    return response.json()


async def reader(
    http: httpx.AsyncClient, devices: list, tally: Tally, until: float, seed: int
) -> None:
    rng = random.Random(seed)  # each reader its own devices and ranges
    token = bearer(subject=f"reader-{seed}")  # and its own rate limit, as a person has
    pace = Pace()
    while time.perf_counter() < until:
        kind, identifier = rng.choice(devices)
        year = rng.randint(2015, 2024)
        variables = {
            "kind": kind,
            "identifier": identifier,
            "from": f"{year}-{rng.randint(1, 12):02d}-01T00:00:00Z",
            "to": f"{year + 1}-{rng.randint(1, 12):02d}-01T00:00:00Z",
        }
        for _ in range(rng.randint(1, 4)):  # a few pages, as a scrolling table would
            started = time.perf_counter()
            body = await post(http, HISTORY, variables, token, pace)
            tally.record("history", started, body)
            history = ((body.get("data") or {}).get("device") or {}).get("provisioningHistory")
            if not history or not history["pageInfo"]["hasNextPage"]:
                break
            variables["after"] = history["pageInfo"]["endCursor"]


async def writer(http: httpx.AsyncClient, number: int, tally: Tally, until: float) -> None:
    sequence = 0
    token = bearer(subject=f"writer-{number}")
    pace = Pace()
    while time.perf_counter() < until:
        sequence += 1
        started = time.perf_counter()
        body = await post(
            http,
            CREATE,
            {
                "input": {
                    "organizationUid": ORGANIZATION,
                    "owner": {},
                    "brand": f"load-{number}-{sequence}",
                    "idempotencyKey": f"load-{number}-{sequence}",
                }
            },
            token,
            pace,
        )
        tally.record("create", started, body)
        event = ((body.get("data") or {}).get("createProvisioningRecipe") or {}).get("event")
        if event:
            tally.created.add(event["id"])


async def subscriber(url: str, token: str, received: set[str], ready: asyncio.Event) -> None:
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        await socket.recv()  # connection_ack
        await socket.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}})
        )
        ready.set()
        async for message in socket:
            data = json.loads(message)
            if data.get("type") == "next":
                received.add(data["payload"]["data"]["provisioningRecipeCreated"]["id"])


async def cache_mib(http: httpx.AsyncClient) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("provgraph_cache_bytes "):
            return float(line.split()[1]) / 2**20
    raise RuntimeError("no provgraph_cache_bytes in /metrics")


async def sample_memory(
    http: httpx.AsyncClient, pid: int, samples: list[tuple[float, float]], until: float
) -> None:
    """The service's resident memory and its cache's share, once a second."""
    while time.perf_counter() < until:
        samples.append((memory_mib(pid, "VmRSS"), await cache_mib(http)))
        await asyncio.sleep(1)


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    pick = [values[min(len(values) - 1, int(len(values) * q))] * 1e3 for q in (0.5, 0.95, 0.99)]
    return "p50 {:7.1f} ms  p95 {:7.1f} ms  p99 {:7.1f} ms".format(*pick)


async def run(base: str, pid: int, options: argparse.Namespace) -> bool:
    devices = [
        (d.primary.kind.upper(), d.primary.identifier)
        for d in Fleet(ordinary=options.devices).devices
        if d.profile.name == "ordinary"
    ]
    tally = Tally()
    received: list[set[str]] = [set() for _ in range(options.subscribers)]
    ready = [asyncio.Event() for _ in received]
    ws_url = base.replace("http://", "ws://") + "/graphql"
    listeners = [
        asyncio.create_task(subscriber(ws_url, bearer(subject=f"dashboard-{n}"), got, event))
        for n, (got, event) in enumerate(zip(received, ready, strict=True))
    ]
    await asyncio.gather(*(event.wait() for event in ready))
    memory: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=options.clients + 1)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        started = time.perf_counter()
        until = started + options.seconds
        writers = max(1, options.clients // 4)
        await asyncio.gather(
            sample_memory(http, pid, memory, until),
            *(writer(http, n, tally, until) for n in range(writers)),
            *(reader(http, devices, tally, until, n) for n in range(options.clients - writers)),
        )
        elapsed = time.perf_counter() - started
    # Deliveries still in flight when the clock stopped: give them a bounded grace.
    stopped = time.perf_counter()
    deadline = stopped + 30
    while any(tally.created - got for got in received) and time.perf_counter() < deadline:  # noqa: ASYNC110 -- polls sets filled by other tasks, bounded
        await asyncio.sleep(0.1)
    behind = time.perf_counter() - stopped
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)

    served = sum(len(v) for v in tally.latencies.values())
    rate = served / elapsed
    print(f"{served:,} requests in {elapsed:.0f} s ({rate:.0f}/s), {options.clients} clients")
    for kind, values in tally.latencies.items():
        print(f"  {kind:<8} {len(values):>7,}   {percentiles(values)}")
    print("  outcomes: " + ", ".join(f"{code} {n:,}" for code, n in tally.codes.most_common()))
    unexpected = {c: n for c, n in tally.codes.items() if c != "ok" and c not in INJECTED}
    missing = sum(len(tally.created - got) for got in received)
    print(
        f"events: {len(tally.created):,} created, each to {options.subscribers} subscribers: "
        f"{missing:,} deliveries missing, the last {behind:.1f} s after the clock stopped"
    )
    quarter = max(1, len(memory) // 4)
    # The window cache fills for as long as new windows are read, up to CACHE_MAX_BYTES:
    # that growth is by design and shown apart; what the bar watches is the rest.
    early = statistics.median(m - c for m, c in memory[quarter : 2 * quarter] or memory)
    late = statistics.median(m - c for m, c in memory[-quarter:])
    ends = [memory[min(len(memory), q * quarter) - 1] for q in (1, 2, 3, 4)]
    print(
        "service memory at each quarter's end: "
        + ", ".join(f"{m:.0f}" for m, _ in ends)
        + " MiB, of which the window cache "
        + ", ".join(f"{c:.0f}" for _, c in ends)
        + f" MiB; without the cache: second quarter {early:.0f} MiB, last quarter "
        f"{late:.0f} MiB ({late / early:.2f}x, bar <= {MEMORY_BAR}x)"
    )
    print(f"unexpected errors: {sum(unexpected.values())} {unexpected or ''}")
    return not unexpected and missing == 0 and late / early <= MEMORY_BAR


async def main(options: argparse.Namespace) -> int:
    simulator = {
        "SIMULATOR_DEVICES": str(options.devices),
        "SIMULATOR_LATENCY_MS": "20",
        "SIMULATOR_FAILURE_RATE": str(options.failure_rate),
        "SIMULATOR_FAILURE_MIX": "http503,fault",
        "SIMULATOR_WARM": "1",
    }
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite+aiosqlite:///{Path(tmp) / 'load.db'}"
        with serving_process("soap.simulator.server:create_app", simulator) as upstream:
            environment = {
                "UWS_BASE_URL": upstream.url + MOUNT,
                "UWS_USERNAME": "demo",
                "UWS_PASSWORD": "demo",
                "DATABASE_URL": database,
                "LOG_LEVEL": "warning",
                **IDENTITY.environment(),
            }
            print(settings_line(environment))
            with serving_process("server.app:create_app", environment) as api:
                ok = await run(api.url, api.pid, options)
    print("\nall verdicts hold" if ok else "\nSOME VERDICTS FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--subscribers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--failure-rate", type=float, default=0.03)
    sys.exit(asyncio.run(main(parser.parse_args())))
