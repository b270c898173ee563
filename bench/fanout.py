"""Recipe events fanned out to many live subscribers, against a bare WebSocket broadcast.

    .venv/bin/python -m bench.fanout [--subscribers 1000] [--events 30] [--bursts 3]

Needs PostgreSQL (127.0.0.1:5432, database test) and Redis (127.0.0.1:6379), as the
machine provides; TEST_POSTGRES_URL and TEST_REDIS_URL name others, as for the tests.
Servers run as processes of their own, with the default settings; the subscribers are
real WebSocket clients (graphql-transport-ws) in this process, all from one address, each
a dashboard with a credential of its own, all sending the same document.

1. The floor: a bare ``websockets`` server in a process of its own, which answers the
   protocol's handshake and, told so over one more socket, broadcasts one pre-encoded
   frame (the service's message for an event, in the same shape and size) to the same
   connections; the same client code receives it.
2. One process: events created one at a time, latency from the mutation being sent (its
   commit happens during it) to each subscriber's receipt, median and p99; then bursts
   of as many events at once: deliveries per second until every subscriber has every
   event of a burst, the median of the bursts.
3. Two processes on Redis: subscribers on one, mutations on the other: the same figures.

Both servers compress each frame for each connection (permessage-deflate), as uvicorn and
websockets do by default. Beside the figures, the CPU time the subscribers' server spent
per delivery during the bursts (for one process, the mutations' share included): it moves
little with what else the machine runs, where the rates do.

Bars, against the floor of the same run: p99 <= 3x the floor's p99, deliveries per second
in the bursts >= 0.5x the floor's. Exits 1 if a figure misses its bar.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvloop
import websockets
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.auth import IDENTITY, bearer, headers
from bench.environment import settings_line
from resolvers.database import create_engine, migrate
from server.settings import SIMULATOR_MOUNT
from soap.simulator.background import Served, listening_socket, serving, serving_process
from soap.simulator.server import Simulator

POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
P99_BAR = 3.0
DELIVERIES_BAR = 0.5
SUBSCRIBE = "subscription { provisioningRecipeCreated { id json } }"
CREATE = """mutation ($input: CreateProvisioningRecipeInput!) {
  createProvisioningRecipe(input: $input) { event { id json } userErrors { code } } }"""
PROTOCOL = websockets.Subprotocol("graphql-transport-ws")
TRIGGER_PATH = "/broadcast"

Trigger = Callable[[int], Awaitable[tuple[str, float]]]
"""Makes event number n happen; its id, and when it was asked for."""


async def fresh_database() -> None:
    engine = create_engine(POSTGRES)
    try:
        await migrate(engine)
        async with engine.begin() as connection:
            await connection.execute(
                text("TRUNCATE provisioning_recipes, outbox_events RESTART IDENTITY")
            )
    finally:
        await engine.dispose()


class Subscriber:
    """A dashboard: the client code for the service and the floor alike."""

    def __init__(self, number: int) -> None:
        self.token = bearer(subject=f"dashboard-{number}")
        self.received: dict[str, float] = {}
        self.ready = asyncio.Event()

    async def run(self, url: str, stop: asyncio.Event) -> None:
        async with websockets.connect(
            url, subprotocols=[PROTOCOL], max_queue=None, open_timeout=120
        ) as socket:
            await socket.send(
                json.dumps({"type": "connection_init", "payload": headers(self.token)})
            )
            await socket.recv()  # connection_ack
            await socket.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}})
            )
            self.ready.set()
            receiver = asyncio.create_task(self._receive(socket))
            await stop.wait()
            receiver.cancel()

    async def _receive(self, socket: websockets.ClientConnection) -> None:
        async for message in socket:
            data = json.loads(message)
            if data.get("type") == "next":
                event_id = data["payload"]["data"]["provisioningRecipeCreated"]["id"]
                self.received[event_id] = time.perf_counter()


@dataclass(frozen=True)
class Figures:
    p50_ms: float
    p99_ms: float
    events_per_s: float
    deliveries_per_s: float
    cpu_us: float
    """CPU time of the subscribers' server per delivery, over the bursts."""


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (Linux): unlike wall time, what others on the machine
    do hardly moves it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def everyone_has(subscribers: list[Subscriber], ids: list[str], limit_s: float) -> None:
    deadline = time.perf_counter() + limit_s
    while any(i not in s.received for s in subscribers for i in ids):
        if time.perf_counter() > deadline:
            raise TimeoutError("events did not reach every subscriber in time")
        await asyncio.sleep(0.01)


async def measure(
    ws_url: str, pid: int, trigger: Trigger, count: int, events: int, bursts: int
) -> Figures:
    stop = asyncio.Event()
    subscribers = [Subscriber(number) for number in range(count)]
    tasks = [asyncio.create_task(s.run(ws_url, stop)) for s in subscribers]
    try:
        await asyncio.gather(*(s.ready.wait() for s in subscribers))
        await everyone_has(subscribers, [(await trigger(-1))[0]], 120)
        latencies: list[float] = []
        for number in range(events):  # one at a time: latency
            event_id, sent = await trigger(number)
            await everyone_has(subscribers, [event_id], 120)
            latencies += [s.received[event_id] - sent for s in subscribers]
        elapsed: list[float] = []
        cpu = cpu_s(pid)
        for round_ in range(bursts):  # bursts: throughput
            start = time.perf_counter()
            burst = await asyncio.gather(*(trigger(1000 * (round_ + 1) + n) for n in range(events)))
            await everyone_has(subscribers, [event_id for event_id, _ in burst], 300)
            elapsed.append(time.perf_counter() - start)
        cpu = cpu_s(pid) - cpu
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()
    return Figures(
        statistics.median(latencies) * 1e3,
        latencies[int(len(latencies) * 0.99) - 1] * 1e3,
        events / statistics.median(elapsed),
        events * count / statistics.median(elapsed),
        cpu / (bursts * events * count) * 1e6,
    )


def mutations(http: httpx.AsyncClient, base: str) -> Trigger:
    async def create(number: int) -> tuple[str, float]:
        sent = time.perf_counter()
        response = await http.post(
            f"{base}/graphql",
            json={
                "query": CREATE,
                "variables": {
                    "input": {"owner": {}, "organizationUid": "a" * 32, "brand": f"bench-{number}"}
                },
            },
        )
        event = response.json()["data"]["createProvisioningRecipe"]["event"]
        return event["id"], sent

    return create


def service_frame(event: dict[str, object]) -> str:
    """The message the service sends a subscriber for ``event``, with ``{id}`` for its id."""
    data = {"provisioningRecipeCreated": {"id": "{id}", "json": event}}
    payload = {"data": data, "extensions": {"cost": {"upstreamCalls": 0, "cacheHits": 0}}}
    return json.dumps({"id": "1", "type": "next", "payload": payload}, separators=(",", ":"))


# --- The floor --------------------------------------------------------------------------


async def _broadcast_server(sock: socket.socket) -> None:
    subscribers: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path == TRIGGER_PATH:
            async for frame in connection:  # encoded by the one who asks, sent as it is
                broadcast(subscribers, frame)
            return
        await connection.recv()  # connection_init
        await connection.send('{"type":"connection_ack"}')
        await connection.recv()  # subscribe
        subscribers.add(connection)
        try:
            await connection.wait_closed()
        finally:
            subscribers.discard(connection)

    async with serve(handler, sock=sock, subprotocols=[PROTOCOL], max_queue=None):
        await asyncio.Future()


@contextmanager
def broadcast_server() -> Iterator[Served]:
    """The floor's server in a process of its own; yields its WebSocket URL and pid."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    command = [sys.executable, "-m", "bench.fanout", "--broadcast-server", str(sock.fileno())]
    process = subprocess.Popen(command, pass_fds=[sock.fileno()])
    sock.close()
    try:
        yield Served(f"ws://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)


async def floor(server: Served, frame: str, count: int, events: int, bursts: int) -> Figures:
    async with websockets.connect(
        server.url + TRIGGER_PATH, subprotocols=[PROTOCOL], open_timeout=120
    ) as control:

        async def trigger(number: int) -> tuple[str, float]:
            event_id = f"floor-{number}"
            encoded = frame.replace("{id}", event_id)  # the frame is ready before the clock
            sent = time.perf_counter()
            await control.send(encoded)
            return event_id, sent

        return await measure(server.url, server.pid, trigger, count, events, bursts)


# --- The run ----------------------------------------------------------------------------


def row(label: str, count: int, figures: Figures) -> str:
    return (
        f"{label:<26}{count:>6}{figures.p50_ms:>10.1f}{figures.p99_ms:>10.1f}"
        f"{figures.events_per_s:>10.1f}{figures.deliveries_per_s:>14.0f}{figures.cpu_us:>10.1f}"
    )


def verdict(label: str, figures: Figures, base: Figures) -> bool:
    p99 = figures.p99_ms / base.p99_ms
    deliveries = figures.deliveries_per_s / base.deliveries_per_s
    print(
        f"{label:<26}p99 {p99:5.2f}x the floor's (bar <= {P99_BAR}x)   "
        f"deliveries/s {deliveries:5.2f}x the floor's (bar >= {DELIVERIES_BAR}x)"
    )
    return p99 <= P99_BAR and deliveries >= DELIVERIES_BAR


async def main(count: int, events: int, bursts: int) -> bool:
    await fresh_database()
    simulator = Simulator()
    app = Starlette(routes=[Mount(SIMULATOR_MOUNT, app=simulator.app)])
    with serving(app) as upstream, ExitStack() as stack:
        environment = {
            "DATABASE_URL": POSTGRES,
            "UWS_BASE_URL": upstream + SIMULATOR_MOUNT,
            "UWS_USERNAME": "demo",
            "UWS_PASSWORD": "demo",
            **IDENTITY.environment(),
        }
        print(settings_line(environment) + "; BROKER_URL memory://, then Redis")
        print(
            f"{'':<26}{'subs':>6}{'p50 ms':>10}{'p99 ms':>10}{'events/s':>10}"
            f"{'deliveries/s':>14}{'cpu us':>10}"
        )
        single = stack.enter_context(
            serving_process("server.app:create_app", {**environment, "BROKER_URL": "memory://"})
        )
        async with httpx.AsyncClient(timeout=120, headers=headers()) as http:
            # The floor's frame: an event as the service sends it (the service idles).
            first = await http.post(
                f"{single.url}/graphql",
                json={
                    "query": CREATE,
                    "variables": {
                        "input": {"owner": {}, "organizationUid": "a" * 32, "brand": "bench"}
                    },
                },
            )
            event = first.json()["data"]["createProvisioningRecipe"]["event"]["json"]
            with broadcast_server() as server:
                base = await floor(server, service_frame(event), count, events, bursts)
            print(row("floor: bare broadcast", count, base))
            one = await measure(
                single.url.replace("http://", "ws://") + "/graphql",
                single.pid,
                mutations(http, single.url),
                count,
                events,
                bursts,
            )
            print(row("one process", count, one))
            stack.close()
            on_redis = {**environment, "BROKER_URL": REDIS, "EVENTS_POLL_S": "3600"}
            writer = stack.enter_context(serving_process("server.app:create_app", on_redis))
            reader = stack.enter_context(serving_process("server.app:create_app", on_redis))
            two = await measure(
                reader.url.replace("http://", "ws://") + "/graphql",
                reader.pid,
                mutations(http, writer.url),
                count,
                events,
                bursts,
            )
            print(row("two processes on Redis", count, two))
    print()
    ok = verdict("one process", one, base)
    ok &= verdict("two processes on Redis", two, base)
    print("\nall figures within their bars" if ok else "\nSOME FIGURES MISS THEIR BARS")
    return ok


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--broadcast-server", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.broadcast_server is not None:
        # The service runs on uvloop (uvicorn's choice where it is installed): so does the floor.
        uvloop.run(_broadcast_server(socket.socket(fileno=options.broadcast_server)))
    else:
        sys.exit(0 if asyncio.run(main(options.subscribers, options.events, options.bursts)) else 1)
