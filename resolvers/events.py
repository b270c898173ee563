"""Live recipe events: each replica's hub, the broker between replicas, the relay.

The outbox is the truth. After a commit the hub of the committing replica reads the new
outbox rows in sequence order and hands each to its subscribers; the relay tells the
other replicas through the broker (Redis pub/sub), whose hubs read the same rows. A
broker outage delays the others (the relay retries, and every hub also polls the outbox
now and then) but loses nothing. Subscribers replaying from an event id read the outbox
up to where the hub stood when they joined, then take live events from that point: no
gap and no duplicate at the seam.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as redis

from models.recipes import OutboxEvent
from resolvers.recipes import RecipeStore

log = logging.getLogger(__name__)

CHANNEL = "provgraph:outbox"


class SubscriberTooSlow(Exception):
    """A subscriber fell a whole queue behind and was dropped."""

    @classmethod
    def behind(cls, queue_size: int) -> "SubscriberTooSlow":
        return cls(
            f"Dropped: this subscriber fell {queue_size} events behind. "
            "Reconnect with after: <the last event id received>."
        )


_DROPPED = object()
_CLOSED = object()


@dataclass(eq=False)
class Listener:
    """The rows a hub delivers from the moment it made this (``EventHub.listen``) that
    ``accepts`` takes, in order; it ends when the hub stops, and raises SubscriberTooSlow
    once it has fallen a whole queue behind."""

    accepts: Callable[[OutboxEvent], bool]
    queue: asyncio.Queue[Any]

    def __aiter__(self) -> "Listener":
        return self

    async def __anext__(self) -> OutboxEvent:
        item = await self.queue.get()
        if item is _DROPPED:
            raise SubscriberTooSlow.behind(self.queue.maxsize)
        if item is _CLOSED:  # the server is shutting down: end the stream cleanly
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]


class Broker:
    """Tells other replicas that the outbox grew. In one process there is no one to tell."""

    reaches_others = False
    """Whether anyone hears what it publishes (else the relay has nothing to do)."""

    async def publish(self, seq: int) -> None:
        return None

    async def listen(self, wake: Callable[[], None]) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class RedisBroker(Broker):
    reaches_others = True

    def __init__(self, url: str) -> None:
        self._client = redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)

    async def publish(self, seq: int) -> None:
        await self._client.publish(CHANNEL, str(seq))

    async def listen(self, wake: Callable[[], None]) -> None:
        delay = 0.1
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    wake()  # anything published while we were away is in the outbox
                    delay = 0.1
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            wake()
            except (redis.RedisError, OSError) as exc:
                log.warning("broker unreachable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        await self._client.aclose()


def broker_from_url(url: str) -> Broker:
    if url.startswith("memory:"):
        return Broker()
    if url.startswith(("redis:", "rediss:")):
        return RedisBroker(url)
    raise ValueError(f"BROKER_URL must be memory:// or redis://..., not {url}")


@dataclass
class EventHub:
    store: RecipeStore
    broker: Broker
    queue_size: int = 1000
    poll_s: float = 5.0
    retention: timedelta = timedelta(days=7)
    delivered: int = 0
    """The last outbox sequence number handed to subscribers."""
    _subscribers: set[Listener] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _relay: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.delivered = await self.store.last_seq()
        self._tasks = [
            asyncio.create_task(self._pump()),
            asyncio.create_task(self._relay_loop()),
            asyncio.create_task(self.broker.listen(self._wake.set)),
        ]
        self._relay.set()  # rows a previous run left unannounced

    async def stop(self) -> None:
        for subscriber in list(self._subscribers):
            _replace_queue(subscriber.queue, _CLOSED)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.close()

    def committed(self) -> None:
        """Call after a transaction that wrote outbox rows has committed."""
        self._wake.set()
        self._relay.set()

    async def catch_up(self) -> None:
        """Hands subscribers every committed row they have not had yet."""
        while True:
            rows = await self.store.events_after(self.delivered)
            # Delivered in one go, without awaiting: a subscriber joining meanwhile
            # sees ``delivered`` and the queues agree.
            for row in rows:
                if row.seq is not None and row.seq > self.delivered:
                    self._deliver(row)
                    self.delivered = row.seq
            if len(rows) < 500:
                return

    def _deliver(self, row: OutboxEvent) -> None:
        for subscriber in list(self._subscribers):
            if not subscriber.accepts(row):
                continue
            try:
                subscriber.queue.put_nowait(row)
            except asyncio.QueueFull:
                self._subscribers.discard(subscriber)
                _replace_queue(subscriber.queue, _DROPPED)

    async def _pump(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                # Read, not handed over by the mutations: while the loop is busy sending,
                # the commits of a burst gather, and subscribers take them in one go.
                await self.catch_up()
            except Exception as exc:
                log.warning("reading the outbox failed (%s); retrying", type(exc).__name__)

    async def _relay_loop(self) -> None:
        delay = 0.1
        pruned = datetime.min.replace(tzinfo=UTC)
        while True:
            await self._relay.wait()
            self._relay.clear()
            try:
                if self.broker.reaches_others:
                    await self.store.announce(self.broker.publish)
                now = datetime.now(UTC)
                if now - pruned > timedelta(hours=1):
                    await self.store.prune(now - self.retention)
                    pruned = now
                delay = 0.1
            except Exception as exc:
                log.warning("relaying events failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._relay.set()

    async def subscribe(
        self, accepts: Callable[[OutboxEvent], bool], after: int | None
    ) -> AsyncIterator[OutboxEvent]:
        """Events that ``accepts`` takes: first those after ``after`` (replayed), then live."""
        listener = self.listen(accepts)
        seam = self.delivered  # rows up to here are replayed; later ones arrive queued
        try:
            if after is not None:
                async for row in self.replay(accepts, after, seam):
                    yield row
            async for row in listener:
                # The hub may lag the commits: a subscriber asking for what follows an
                # event it saw (the mutation's answer) before the hub had delivered that
                # event gets it queued live, and must not see it again.
                if after is not None and row.seq is not None and row.seq <= after:
                    continue
                yield row
        finally:
            self.unlisten(listener)

    def listen(self, accepts: Callable[[OutboxEvent], bool]) -> Listener:
        """A queue of every row delivered from now on that ``accepts`` takes (the rows up to
        ``delivered`` are the outbox's to replay); ``unlisten`` when done."""
        listener = Listener(accepts, asyncio.Queue(self.queue_size))
        self._subscribers.add(listener)
        return listener

    def unlisten(self, listener: Listener) -> None:
        self._subscribers.discard(listener)

    async def replay(
        self, accepts: Callable[[OutboxEvent], bool], after: int, until: int
    ) -> AsyncIterator[OutboxEvent]:
        """The outbox's rows after ``after`` up to ``until`` that ``accepts`` takes."""
        cursor = after
        while cursor < until:
            rows = await self.store.events_after(cursor, until=until)
            if not rows:
                break
            for row in rows:
                if accepts(row):
                    yield row
            cursor = rows[-1].seq or until


def _replace_queue(queue: asyncio.Queue[Any], item: object) -> None:
    """Empties a queue and leaves one item in it: its reader's last word."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(item)
