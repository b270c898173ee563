"""The upstream budget: who may start an upstream call now, interactive requests first.

The UWS limits the account, not a process. In process (the default) the budget is the
process's own: ``UPSTREAM_CONCURRENCY`` slots and the ``UPSTREAM_CALLS_PER_SECOND``
limiter, so a single process is never slower than its concurrency allows. On Redis
(``UPSTREAM_BUDGET_URL``) every replica shares one budget: each call in flight holds a
lease in a sorted set, scored by when it expires, so a dead process's leases free
themselves; calls per second are a sliding window of start times beside it. One Lua
script takes a slot atomically, by Redis's own clock (replicas' clocks may differ).

The budget gates the network exchange only (the client enters it around each exchange,
``in_flight``), not building the request or reading the reply: what the upstream sees
in flight is what it counts. Who is asking travels with the call (``calling_as``), from
the resolver that knows it to the client that waits.

Priorities: a report job's call waits while any interactive request waits, in this
process or another; interactive callers never wait behind a job's queue, only for a
slot to free. So a job may use the whole budget when nobody else asks, and never keeps
an interactive request from the next free slot.
"""

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Literal, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from resolvers.metrics import BUDGET_IN_FLIGHT, BUDGET_WAIT_SECONDS

log = logging.getLogger(__name__)

Priority = Literal["interactive", "job"]
INTERACTIVE: Priority = "interactive"
JOB: Priority = "job"
_CALLER: ContextVar[Priority] = ContextVar("upstream_caller", default=INTERACTIVE)


_FOLLOWING: ContextVar[bool] = ContextVar("upstream_following", default=False)


@contextmanager
def calling_as(priority: Priority) -> Iterator[None]:
    """The upstream calls made inside the block wait for the budget as ``priority``."""
    token = _CALLER.set(priority)
    try:
        yield
    finally:
        _CALLER.reset(token)


@contextmanager
def following_up() -> Iterator[None]:
    """A job's calls inside the block continue a read under way (a device's next window
    of history): they go before the job's first calls for other devices. A history read
    one window after another is the job's longest chain of calls; behind every other
    device's first call, each of its windows waited for dozens of others, and a job's
    last seconds went by with one call in flight."""
    token = _FOLLOWING.set(True)
    try:
        yield
    finally:
        _FOLLOWING.reset(token)


class UpstreamBudget(Protocol):
    def slot(self, priority: Priority) -> AbstractAsyncContextManager[None]:
        """Held for one exchange; waits (cancellably) until the budget allows it."""
        ...

    def gate(self) -> AbstractAsyncContextManager[None]:
        """A slot for whoever calls (``calling_as``): the client's ``in_flight``."""
        ...

    async def close(self) -> None: ...


def _rank(priority: Priority) -> int:
    """Who goes first: interactive callers, then a job's calls that continue a read under
    way (``following_up``), then a job's other calls."""
    if priority == INTERACTIVE:
        return 0
    return 1 if _FOLLOWING.get() else 2


@contextmanager
def _in_flight(priority: Priority, started: float) -> Iterator[None]:
    """What a caller holding a slot (since ``started``, perf_counter) is measured by: how
    long it waited for it, and that it is in flight until it lets it go."""
    BUDGET_WAIT_SECONDS.labels(priority).observe(time.perf_counter() - started)
    BUDGET_IN_FLIGHT.inc()
    try:
        yield
    finally:
        BUDGET_IN_FLIGHT.dec()


class _Turns:
    """``slots`` slots handed out by rank, first come first served within one: nobody
    overtakes a waiter of their own rank or a higher one."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque(), deque())

    @asynccontextmanager
    async def held(self, rank: int) -> AsyncIterator[None]:
        await self._take(rank)
        try:
            yield
        finally:
            self._give()

    async def _take(self, rank: int) -> None:
        if self._free > 0 and not any(self._waiting[: rank + 1]):
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[rank]
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._give()  # handed a slot just as it was cancelled: pass it on
            elif future in queue:
                queue.remove(future)
            raise

    def _give(self) -> None:
        for queue in self._waiting:
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self._free += 1


class LocalBudget:
    """The process's own budget: ``concurrency`` slots handed out interactive first."""

    def __init__(self, concurrency: int) -> None:
        self._turns = _Turns(concurrency)

    @asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        started = time.perf_counter()
        async with self._turns.held(_rank(priority)):
            with _in_flight(priority, started):
                yield

    def gate(self) -> AbstractAsyncContextManager[None]:
        return self.slot(_CALLER.get())

    async def close(self) -> None:
        pass


# KEYS: leases, interactive waiters, call starts. ARGV: lease id, priority, in-flight
# limit, lease ms, calls per window (0: no rate), window ms, waiter ms, most ms to wait.
# Returns 0 when the lease is taken, else how many ms to wait at most before asking again
# (a release is also announced, which wakes waiters sooner).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, priority = ARGV[1], ARGV[2]
local limit, lease_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local rate, window_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local waiter_ms, poll_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window_ms)
end
local function wait(ms)
  if priority == 'interactive' then
    redis.call('ZADD', KEYS[2], now + waiter_ms, lease)
    redis.call('PEXPIRE', KEYS[2], waiter_ms)
  end
  return math.max(1, math.min(ms, poll_ms))
end
if priority ~= 'interactive' and redis.call('ZCARD', KEYS[2]) > 0 then
  return wait(poll_ms)
end
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return wait(tonumber(first[2]) - now)
end
if rate > 0 and redis.call('ZCARD', KEYS[3]) >= rate then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return wait(tonumber(oldest[2]) + window_ms - now)
end
redis.call('ZADD', KEYS[1], now + lease_ms, lease)
redis.call('PEXPIRE', KEYS[1], lease_ms)
if rate > 0 then
  redis.call('ZADD', KEYS[3], now, lease)
  redis.call('PEXPIRE', KEYS[3], window_ms)
end
redis.call('ZREM', KEYS[2], lease)
return 0
"""

POLL_S = 0.25
"""Longest wait before asking again: a lease that ran out is announced by nobody."""
WAITER_S = 2.0
"""How long an interactive waiter holds jobs back without asking again (a dead one)."""


class RedisBudget:
    """One budget for every replica on the same Redis and ``name``."""

    def __init__(
        self,
        client: Redis,
        concurrency: int,
        calls_per_second: float | None,
        lease_s: float,
        name: str = "provgraph:upstream-budget",
    ) -> None:
        self._client = client
        self._concurrency = concurrency
        self._fallback = LocalBudget(concurrency)
        # As the in-process limiter: a second's worth at once, or one a period below one.
        burst = max(1.0, calls_per_second) if calls_per_second else 0.0
        self._rate = int(burst)
        self._window_ms = round(burst / calls_per_second * 1000) if calls_per_second else 0
        self._lease_ms = round(lease_s * 1000)
        # One hash tag: the script's keys must live on one node of a cluster.
        self._keys = [f"{{{name}}}:leases", f"{{{name}}}:waiting", f"{{{name}}}:starts"]
        self._channel = f"{name}:freed"
        self._acquire = client.register_script(_ACQUIRE)
        self._freed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()
        # One caller of each priority asks Redis at a time, the others wait their turn
        # here (by rank): a freed lease wakes two askers a process, not every waiting call.
        self._turn = {INTERACTIVE: _Turns(1), JOB: _Turns(1)}

    @asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())
        started = time.perf_counter()
        lease = uuid.uuid4().hex
        try:
            async with self._turn[priority].held(_rank(priority)):
                await self._take(lease, priority)
        except RedisError as error:
            # Redis down says nothing about the upstream: as the cache does, the process
            # goes on, with its own UPSTREAM_CONCURRENCY meanwhile (as with memory://).
            log.warning("upstream budget: Redis unreachable (%s), local budget", error)
            async with self._fallback.slot(priority):
                yield
            return
        with _in_flight(priority, started):
            try:
                yield
            finally:
                # In a task of its own: the caller reads its reply meanwhile, and a
                # cancelled call still gives its lease back now, not at expiry.
                releasing = asyncio.create_task(self._release(lease))
                self._releasing.add(releasing)
                releasing.add_done_callback(self._releasing.discard)

    def gate(self) -> AbstractAsyncContextManager[None]:
        return self.slot(_CALLER.get())

    async def _take(self, lease: str, priority: Priority) -> None:
        arguments: list[str | int] = [
            lease,
            priority,
            self._concurrency,
            self._lease_ms,
            self._rate,
            self._window_ms,
            round(WAITER_S * 1000),
            round(POLL_S * 1000),
        ]
        try:
            while True:
                freed = self._freed
                wait_ms = int(await self._acquire(keys=self._keys, args=arguments))
                if wait_ms == 0:
                    return
                try:
                    async with asyncio.timeout(wait_ms / 1000):
                        await freed.wait()
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            if priority == INTERACTIVE:
                await asyncio.shield(self._client.zrem(self._keys[1], lease))
            raise

    async def _release(self, lease: str) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zrem(self._keys[0], lease)
                pipe.publish(self._channel, lease)
                await pipe.execute()
        except RedisError as error:
            # The call itself is done, whatever its outcome: the lease runs out instead.
            log.warning("upstream budget: a lease was not given back (%s)", error)
            return
        # This process's askers ask again now, not once the announcement comes back.
        self._wake()

    def _wake(self) -> None:
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    async def _listen(self) -> None:
        """Wakes this process's waiters whenever any replica gives a lease back."""
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake()
            except RedisError as error:
                # Waiters still ask again every POLL_S meanwhile.
                log.warning("upstream budget: lost the release channel (%s)", error)
                await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        await asyncio.gather(*self._releasing)
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self._client.aclose()


def budget_from_url(
    url: str, concurrency: int, calls_per_second: float | None, lease_s: float
) -> UpstreamBudget:
    """The budget ``UPSTREAM_BUDGET_URL`` names: ``memory://`` (this process's, whose call
    rate the process's own limiter keeps) or ``redis[s]://...``, shared with its rate."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return LocalBudget(concurrency)
    if scheme in ("redis", "rediss"):
        client = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        return RedisBudget(client, concurrency, calls_per_second, lease_s)
    raise ValueError(f"UPSTREAM_BUDGET_URL must be memory:// or redis://..., not {scheme}://")
