"""The window cache: bounded and immutable in process; shared, and single-flight, on Redis."""

import asyncio
import gc
import json
import logging
import uuid

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from support import bearer

from graph.context import Context
from models.devices import DeviceIdentifier, DeviceListPage, DeviceRecord
from models.events import ExtendedAttribute, HistoryWindow, ProvisioningEvent
from resolvers.cache import (
    BoundedMemoryCache,
    Found,
    RedisCache,
    Stamped,
    UpstreamCache,
    ValueCodec,
    backend_from_url,
    size_in_bytes,
)
from soap.client import UwsClient

SEED_MEID = DeviceIdentifier("meid", "54689785258599")
MONTH = """query ($from: DateTime!, $to: DateTime!) {
  device(kind: MEID, identifier: "54689785258599") {
    provisioningHistory(occurredAfter: $from, occurredBefore: $to, first: 1) {
      edges { cursor } } } }"""


def window(size: int, start: int = 0) -> HistoryWindow:
    return HistoryWindow(
        tuple(
            ProvisioningEvent(
                start + i,
                "Success",
                None,
                "Activation",
                None,
                "5",
                None,
                (ExtendedAttribute("k", None),),
            )
            for i in range(size)
        ),
        True,
    )


def stored_size(size: int) -> int:
    return size_in_bytes(Stamped(window(size), 0.0))


async def test_the_memory_cache_evicts_least_recently_used_by_bytes():
    backend = BoundedMemoryCache(max_bytes=3 * stored_size(9))
    cache = UpstreamCache(backend, lock_ttl_s=1)
    loads: list[str] = []

    def loader(key: str, size: int):
        async def load():
            loads.append(key)
            return window(size)

        return load

    for key in ("a", "b", "c"):
        await cache.get_or_load(key, loader(key, 9), 60)  # a third each: full
    await cache.get_or_load("a", loader("a", 9), 60)  # a is now the most recent
    await cache.get_or_load("d", loader("d", 9), 60)  # evicts b, the least recent
    assert backend.size <= backend.max_bytes
    for key in ("a", "c", "d", "b"):
        await cache.get_or_load(key, loader(key, 9), 60)
    assert loads == ["a", "b", "c", "d", "b"]


async def test_expiry_gives_the_bytes_back():
    now = [0.0]
    backend = BoundedMemoryCache(max_bytes=1 << 20, timer=lambda: now[0])
    cache = UpstreamCache(backend, lock_ttl_s=1)

    async def load():
        return window(9)

    await cache.get_or_load("short", load, ttl_s=10)
    await cache.get_or_load("long", load, ttl_s=30)
    assert backend.size == 2 * stored_size(9)
    assert REGISTRY.get_sample_value("provgraph_cache_bytes") == backend.size
    now[0] = 20.0
    assert await backend.get("v1:long") is not None
    assert backend.size == stored_size(9)
    assert REGISTRY.get_sample_value("provgraph_cache_bytes") == backend.size
    await backend.delete("v1:long")
    assert backend.size == 0


async def test_a_value_larger_than_the_whole_bound_is_not_kept_and_evicts_nothing():
    backend = BoundedMemoryCache(max_bytes=stored_size(9))
    cache = UpstreamCache(backend, lock_ttl_s=1)
    loads = 0

    async def load(size: int):
        nonlocal loads
        loads += 1
        return window(size)

    assert await cache.get_or_load("small", lambda: load(9), 60) == (window(9), Found.LOADED)
    assert await cache.get_or_load("big", lambda: load(10), 60) == (window(10), Found.LOADED)
    assert backend.size == stored_size(9)
    assert await cache.get_or_load("small", lambda: load(9), 60) == (window(9), Found.CACHED)
    assert await cache.get_or_load("big", lambda: load(10), 60) == (window(10), Found.LOADED)
    assert loads == 3


async def test_the_size_estimate_tracks_the_memory_a_parsed_reply_holds(uws: UwsClient):
    """The byte bound is only as good as the estimate: compare it with what CPython
    allocates for the same window, rebuilt from a pickle so that no object is shared with
    the parser's."""
    import pickle
    import tracemalloc

    from models.instants import parse_instant

    reply = await uws.get_device_provisioning_history(
        SEED_MEID, parse_instant("2000-01-01T00:00:00Z"), parse_instant("2030-01-01T00:00:00Z")
    )
    assert len(reply.events) == 500
    pickled = pickle.dumps(reply)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        copy = pickle.loads(pickled)
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert copy == reply
    assert 0.8 <= size_in_bytes(reply) / allocated <= 1.25


async def test_cached_windows_keep_nothing_of_the_requests_that_loaded_them(api):
    """An expiry timer keeps the context it is made in: made in a request, it kept that
    whole request (its caller, loaders, cost) alive for the entry's life, a week for a
    final window, and the service's memory grew with every window it cached."""
    subject = f"memory-probe-{uuid.uuid4().hex}"
    token = {"Authorization": f"Bearer {bearer(subject=subject)}"}

    async def a_window_a_month(first: int, last: int) -> int:
        """Requests of the probe still alive after a window of 2017 is cached for these
        days of each month."""
        for month in range(1, 13):
            days = {
                "from": f"2017-{month:02d}-{first:02d}T00:00:00Z",
                "to": f"2017-{month:02d}-{last:02d}T00:00:00Z",
            }
            body = await api.query(MONTH, days, token)
            assert "errors" not in body
        gc.collect()
        return sum(
            1
            for o in gc.get_objects()
            if isinstance(o, Context) and o.principal.subject.endswith(subject)
        )

    after_twelve = await a_window_a_month(1, 14)
    after_twenty_four = await a_window_a_month(15, 28)
    assert api.calls() == 1 + 24  # the device's probe, then a window each: all cached
    # What stays is bounded (the last request of a kept-alive connection, a pending
    # connection timer), not one per cached window.
    assert after_twenty_four <= after_twelve < 12


async def test_cached_values_cannot_be_changed_by_a_caller():
    cache = UpstreamCache(BoundedMemoryCache(max_bytes=1 << 20), lock_ttl_s=1)

    async def load():
        return window(2)

    value, _ = await cache.get_or_load("k", load, 60)
    with pytest.raises((TypeError, AttributeError)):
        value.events[0] = None  # type: ignore[index]
    with pytest.raises(AttributeError):
        value.events[0].status = "Failure"  # type: ignore[misc]
    assert (await cache.get_or_load("k", load, 60))[0] == window(2)


async def test_concurrent_misses_in_one_process_share_one_load():
    cache = UpstreamCache(BoundedMemoryCache(max_bytes=1 << 20), lock_ttl_s=1)
    calls = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def load():
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return window(3)

    waiting = [asyncio.create_task(cache.get_or_load("k", load, 60)) for _ in range(20)]
    await started.wait()
    release.set()
    results = await asyncio.gather(*waiting)
    assert calls == 1
    assert {value for value, _ in results} == {window(3)}
    assert sorted(hit for _, hit in results) == [False] + [True] * 19


async def test_a_failed_load_fails_every_waiter_and_is_not_cached():
    cache = UpstreamCache(BoundedMemoryCache(max_bytes=1 << 20), lock_ttl_s=1)
    started, release = asyncio.Event(), asyncio.Event()

    async def failing():
        started.set()
        await release.wait()
        raise RuntimeError("upstream down")

    waiting = [asyncio.create_task(cache.get_or_load("k", failing, 60)) for _ in range(5)]
    await started.wait()
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)

    async def working():
        return window(1)

    assert (await cache.get_or_load("k", working, 60)) == (window(1), False)


class ReadWatcher(BoundedMemoryCache):
    """Says when a second caller has looked the key up: from there it goes straight on
    (no await suspends it) to wait for the load the first caller makes."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.reads = 0
        self.second_read = asyncio.Event()

    async def get(self, key: str) -> Stamped | None:
        self.reads += 1
        if self.reads == 2:
            self.second_read.set()
        return await super().get(key)


async def test_a_cancelled_loader_leaves_its_waiters_to_load_for_themselves():
    backend = ReadWatcher(max_bytes=1 << 20)
    cache = UpstreamCache(backend, lock_ttl_s=1)
    calls = 0
    first_started = asyncio.Event()

    async def load():
        nonlocal calls
        calls += 1
        if calls == 1:  # the first loader's request is cancelled while it waits upstream
            first_started.set()
            await asyncio.Event().wait()
        return window(2)

    owner = asyncio.create_task(cache.get_or_load("k", load, 60))
    await first_started.wait()
    waiter = asyncio.create_task(cache.get_or_load("k", load, 60))
    await backend.second_read.wait()  # the waiter now waits on the owner's load
    owner.cancel()
    assert (await waiter) == (window(2), False)
    assert calls == 2
    with pytest.raises(asyncio.CancelledError):
        await owner


def test_the_redis_codec_round_trips_every_value():
    codec = ValueCodec()
    page = DeviceListPage(
        (
            DeviceRecord(
                7,
                (DeviceIdentifier("imei", "35"), DeviceIdentifier("mdn", "5")),
                "acct",
                123,
                (ExtendedAttribute("a", "b"),),
            ),
        ),
        7,
        False,
    )
    for value in (window(3, start=10**16), HistoryWindow((), False), page):
        assert codec.loads(codec.dumps(value)) == value


class PollSpy(RedisCache):
    """A real Redis backend that tells when a waiter checks the lock."""

    def __init__(self, client: Redis):
        super().__init__(client)
        self.polled = asyncio.Event()

    async def locked(self, key):
        self.polled.set()
        return await super().locked(key)


async def test_redis_makes_other_replicas_wait_for_the_loading_one(redis_url):
    # Two caches on one Redis stand for two replicas, each with its own process state.
    first = UpstreamCache(backend_from_url(redis_url, 0), lock_ttl_s=5)
    spy = PollSpy(Redis.from_url(redis_url))
    second = UpstreamCache(spy, lock_ttl_s=5)
    key = f"test:{uuid.uuid4().hex}"
    loads = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def load():
        nonlocal loads
        loads += 1
        started.set()
        await release.wait()
        return window(4)

    try:
        loading = asyncio.create_task(first.get_or_load(key, load, 60))
        await started.wait()  # the first replica holds the lock, its value not yet stored
        waiting = asyncio.create_task(second.get_or_load(key, load, 60))
        await spy.polled.wait()  # the second replica found the lock taken, and waits
        release.set()

        assert await loading == (window(4), Found.LOADED)
        assert await waiting == (window(4), Found.CACHED)
        assert loads == 1
        assert not await spy.locked(f"lock:v1:{key}")  # released once the value was stored
        assert await first.get_or_load(key, load, 60) == (window(4), Found.CACHED)
    finally:
        await first.backend.delete(f"v1:{key}")
        await first.close()
        await second.close()


async def test_replicas_share_entries_under_the_same_key_and_json(redis_url):
    """What a replica of the previous release reads and writes: the value's JSON, with
    its freshness deadline beside it, under ``provgraph:v1:<key>``."""
    cache = UpstreamCache(backend_from_url(redis_url, 0), lock_ttl_s=5, clock=lambda: 1000.0)
    client = Redis.from_url(redis_url)
    key = f"test:{uuid.uuid4().hex}"

    async def load():
        return window(2)

    try:
        await cache.get_or_load(key, load, 60)
        stored = json.loads(await client.get(f"provgraph:v1:{key}"))
        assert stored == {**json.loads(ValueCodec().dumps(window(2))), "f": 1060.0}
        # Written bare by an older replica: read, and fresh.
        await client.set(f"provgraph:v1:{key}", ValueCodec().dumps(window(3)), px=60_000)
        assert await cache.get_or_load(key, load, 60) == (window(3), Found.CACHED)
    finally:
        await client.delete(f"provgraph:v1:{key}")
        await client.aclose()
        await cache.close()


async def test_redis_lock_left_by_a_dead_replica_expires(redis_url):
    backend = backend_from_url(redis_url, 0)
    cache = UpstreamCache(backend, lock_ttl_s=0.2)
    key = f"test:{uuid.uuid4().hex}"

    async def load():
        return window(1)

    try:
        assert await backend.lock(f"lock:v1:{key}", 0.2).acquire()  # never released
        assert await cache.get_or_load(key, load, 60) == (window(1), Found.LOADED)
    finally:
        await backend.delete(f"v1:{key}")
        await cache.close()


async def test_a_load_that_outlives_its_redis_lock_still_answers(redis_url, caplog):
    backend = backend_from_url(redis_url, 0)
    cache = UpstreamCache(backend, lock_ttl_s=5)
    key = f"test:{uuid.uuid4().hex}"

    async def load():
        await backend.delete(f"lock:v1:{key}")  # as if it had expired
        return window(1)

    try:
        with caplog.at_level(logging.WARNING, logger="resolvers.cache"):
            assert await cache.get_or_load(key, load, 60) == (window(1), Found.LOADED)
        assert "outlived its cache lock" in caplog.text
        assert await cache.get_or_load(key, load, 60) == (window(1), Found.CACHED)
    finally:
        await backend.delete(f"v1:{key}")
        await cache.close()


def test_an_unknown_cache_url_is_refused():
    with pytest.raises(ValueError, match="CACHE_URL"):
        backend_from_url("memcached://x", 10)
