"""Recipe events fanned out to many live subscribers.

    .venv/bin/python -m bench.fanout [--subscribers 1000] [--events 30]

Needs PostgreSQL (127.0.0.1:5432, database test) and Redis (127.0.0.1:6379), as the
machine provides; TEST_POSTGRES_URL and TEST_REDIS_URL name others, as for the tests.
Servers run as processes of their own, with the default settings (RATE_LIMIT among them)
but for SUBSCRIBER_QUEUE_SIZE=100000; the subscribers are real WebSocket clients
(graphql-transport-ws) in this process, all from one address, each a dashboard with a
credential of its own.

1. One process: N subscribers, events created one at a time: latency from the mutation
   being sent (its commit happens during it) to each subscriber's receipt, median and
   p99; then a burst of events: sustained events per second until every subscriber has
   every event.
2. Two processes on Redis: subscribers on one, mutations on the other: the same figures.
3. The floor, measured in the same run: a bare Redis PUBLISH-to-receive round trip.
"""

import argparse
import asyncio
import json
import os
import statistics
import time
from contextlib import ExitStack

import httpx
import redis.asyncio as redis
import websockets
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.routing import Mount

from bench.auth import IDENTITY, bearer, headers
from bench.environment import settings_line
from resolvers.database import create_engine, migrate
from server.settings import SIMULATOR_MOUNT
from soap.simulator.background import serving, serving_process
from soap.simulator.server import Simulator

POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SUBSCRIBE = "subscription { provisioningRecipeCreated { id json } }"
CREATE = """mutation ($input: CreateProvisioningRecipeInput!) {
  createProvisioningRecipe(input: $input) { event { id } userErrors { code } } }"""


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
    def __init__(self, number: int) -> None:
        self.token = bearer(subject=f"dashboard-{number}")
        self.received: dict[str, float] = {}
        self.ready = asyncio.Event()

    async def run(self, url: str, stop: asyncio.Event) -> None:
        async with websockets.connect(
            url, subprotocols=["graphql-transport-ws"], max_queue=None, open_timeout=120
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

    async def _receive(self, socket) -> None:
        async for message in socket:
            data = json.loads(message)
            if data.get("type") == "next":
                event_id = data["payload"]["data"]["provisioningRecipeCreated"]["id"]
                self.received[event_id] = time.perf_counter()


async def create(http: httpx.AsyncClient, base: str, number: int) -> tuple[str, float]:
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
    return response.json()["data"]["createProvisioningRecipe"]["event"]["id"], sent


async def everyone_has(subscribers: list[Subscriber], ids: list[str], limit_s: float) -> None:
    deadline = time.perf_counter() + limit_s
    while any(i not in s.received for s in subscribers for i in ids):
        if time.perf_counter() > deadline:
            raise TimeoutError("events did not reach every subscriber in time")
        await asyncio.sleep(0.01)


async def measure(label: str, write_url: str, read_url: str, count: int, events: int) -> float:
    stop = asyncio.Event()
    subscribers = [Subscriber(number) for number in range(count)]
    ws_url = read_url.replace("http://", "ws://") + "/graphql"
    tasks = [asyncio.create_task(s.run(ws_url, stop)) for s in subscribers]
    await asyncio.gather(*(s.ready.wait() for s in subscribers))
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=120, headers=headers()) as http:
        await everyone_has(subscribers, [(await create(http, write_url, -1))[0]], 120)
        for number in range(events):  # one at a time: latency
            event_id, sent = await create(http, write_url, number)
            await everyone_has(subscribers, [event_id], 120)
            latencies += [s.received[event_id] - sent for s in subscribers]
        start = time.perf_counter()  # a burst: throughput
        burst = await asyncio.gather(*(create(http, write_url, 1000 + n) for n in range(events)))
        await everyone_has(subscribers, [event_id for event_id, _ in burst], 300)
        elapsed = time.perf_counter() - start
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()
    median = statistics.median(latencies) * 1e3
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1e3
    print(
        f"{label:<34}{count:>6}{median:>10.1f}{p99:>10.1f}{events / elapsed:>10.1f}"
        f"{events * count / elapsed:>12.0f}"
    )
    return median


async def redis_floor(rounds: int = 300) -> float:
    client = redis.from_url(REDIS)
    samples = []
    async with client.pubsub() as pubsub:
        await pubsub.subscribe("bench:floor")
        await pubsub.get_message(timeout=5)  # the subscribe confirmation
        for _ in range(rounds):
            sent = time.perf_counter()
            await client.publish("bench:floor", "x")
            while (await pubsub.get_message(timeout=5)) is None:
                pass
            samples.append(time.perf_counter() - sent)
    await client.aclose()
    return statistics.median(samples) * 1e3


async def main(count: int, events: int) -> None:
    await fresh_database()
    floor = await redis_floor()
    simulator = Simulator()
    app = Starlette(routes=[Mount(SIMULATOR_MOUNT, app=simulator.app)])
    print(f"{'':<34}{'subs':>6}{'p50 ms':>10}{'p99 ms':>10}{'events/s':>10}{'deliveries/s':>12}")
    with serving(app) as upstream, ExitStack() as stack:
        environment = {
            "DATABASE_URL": POSTGRES,
            "UWS_BASE_URL": upstream + SIMULATOR_MOUNT,
            "UWS_USERNAME": "demo",
            "UWS_PASSWORD": "demo",
            "SUBSCRIBER_QUEUE_SIZE": "100000",
            **IDENTITY.environment(),
        }
        print(settings_line(environment) + "; BROKER_URL memory://, then Redis")
        single = stack.enter_context(
            serving_process("server.app:create_app", {**environment, "BROKER_URL": "memory://"})
        ).url
        one_process = await measure("one process", single, single, count, events)
        stack.close()
        on_redis = {**environment, "BROKER_URL": REDIS, "EVENTS_POLL_S": "3600"}
        writer = stack.enter_context(serving_process("server.app:create_app", on_redis)).url
        reader = stack.enter_context(serving_process("server.app:create_app", on_redis)).url
        two_processes = await measure("two processes on Redis", writer, reader, count, events)
    print(f"\nfloor: bare Redis PUBLISH-to-receive round trip, median {floor:.2f} ms")
    print(
        f"one process p50 = {one_process / floor:.0f}x the floor; "
        f"two processes p50 = {two_processes / floor:.0f}x the floor"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=30)
    options = parser.parse_args()
    asyncio.run(main(options.subscribers, options.events))
