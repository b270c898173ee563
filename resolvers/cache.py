"""The upstream window cache: parsed replies, keyed by the call that produced them.

In process by default (cachetools: an LRU bounded in bytes), on Redis (redis-py) when
``CACHE_URL`` says so. Identical concurrent misses make one upstream call: within a process
through a shared future, and across processes on Redis through a short lock that the
others wait out.
Cached values are immutable tuples, so handing the same object to many callers is safe.

Entries outlive their freshness by ``stale_for_s``: past its deadline an entry counts
as a miss, but when the load that should replace it fails because the upstream is down
(unreachable, timing out, or its circuit open), the old value is served, marked stale.
"""

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from enum import IntEnum
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from cachetools import TLRUCache
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError

from models.devices import DeviceIdentifier, DeviceListPage, DeviceRecord
from models.events import ExtendedAttribute, HistoryWindow, ProvisioningEvent
from resolvers.metrics import CACHE_BYTES, CACHE_LOOKUPS
from soap.errors import UpstreamError

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

SCHEMA_VERSION = "v1"
"""Part of every key: bump it when the shape of cached values changes."""

CachedValue = HistoryWindow | DeviceListPage


class Stamped(NamedTuple):
    """A value as stored: with the instant (clock seconds) its freshness ends."""

    value: CachedValue
    fresh_until: float


Stored = Stamped | CachedValue
"""What a backend holds: stamped, or bare when an older replica wrote it to Redis."""


class Found(IntEnum):
    """Where ``get_or_load`` found its value; true when it was not loaded for the caller."""

    LOADED = 0
    CACHED = 1
    """From the cache, or from a load another caller made at the same time."""
    STALE = 2
    """From the cache past its freshness: the load failed with the upstream down."""


_LOOKUP_RESULTS = {Found.LOADED: "miss", Found.CACHED: "hit", Found.STALE: "stale"}

Described = Callable[[], Mapping[str, AttributeValue]]
"""What a lookup's span says of the value looked up (the key may name a device, so it is
not shown), asked for only where the span is recorded."""


def _describe(span: Span, described: Described | None) -> None:
    if described is not None and span.is_recording():
        span.set_attributes(described())


def _counted(span: Span, result: str) -> None:
    CACHE_LOOKUPS.labels(result).inc()
    span.set_attribute("provgraph.cache.result", result)


def _lookup_span() -> AbstractContextManager[Span]:
    """A span for one lookup. A failed load is recorded on the upstream call's span, and
    a lookup that only probes the cache fails on purpose: neither is an error here."""
    return _tracer.start_as_current_span(
        "cache lookup", record_exception=False, set_status_on_exception=False
    )


# What CPython spends on the parts of a cached value (64-bit builds): measured once, so
# that sizing a 500-event window costs a pass over its strings, not a walk of every
# object (sys.getsizeof on each took ~2 ms a window, a third of parsing it).
_TEXT = sys.getsizeof("")
_TUPLE = sys.getsizeof(())
_SLOT = sys.getsizeof((None,)) - _TUPLE
_INT = sys.getsizeof(1 << 60)


def _text(value: str | None) -> int:
    return 0 if value is None else _TEXT + len(value)


def _attributes_bytes(attributes: tuple[ExtendedAttribute, ...]) -> int:
    size = _TUPLE + _SLOT * len(attributes)
    for key, value in attributes:
        size += _TUPLE + 2 * _SLOT + _text(key) + _text(value)
    return size


_EVENT_TEXTS = itemgetter(1, 2, 3, 4, 5, 6)
_EVENT_ATTRIBUTES = itemgetter(7)
_EVENT = _TUPLE + 8 * _SLOT + _INT
"""An event's tuple and its instant; its texts and attributes come on top."""


def _events_bytes(events: tuple[ProvisioningEvent, ...]) -> int:
    """What a window's events hold, in passes that run in C: a window is sized each time
    one is cached, 500 events at a time."""
    # The empty string is a shared singleton: only texts with characters are their own.
    texts = list(filter(None, chain.from_iterable(map(_EVENT_TEXTS, events))))
    size = _TUPLE + len(events) * (_SLOT + _EVENT) + len(texts) * _TEXT + sum(map(len, texts))
    return size + sum(map(_attributes_bytes, filter(None, map(_EVENT_ATTRIBUTES, events))))


def _device_bytes(device: DeviceRecord) -> int:
    identifiers = device.identifiers
    return (
        _TUPLE
        + len(device) * _SLOT
        + 2 * _INT
        + _TUPLE
        + _SLOT * len(identifiers)
        + sum(_TUPLE + 2 * _SLOT + _text(i.kind) + _text(i.identifier) for i in identifiers)
        + _text(device.account_name)
        + _attributes_bytes(device.extended_attributes)
    )


def size_in_bytes(value: object) -> int:
    """An estimate of the memory a cached value holds (within a few percent for windows
    parsed from replies: tests/test_cache.py measures it)."""
    if isinstance(value, Stamped):
        return _TUPLE + 2 * _SLOT + size_in_bytes(value.value)
    if isinstance(value, HistoryWindow):
        return _TUPLE + 2 * _SLOT + _events_bytes(value.events)
    if isinstance(value, DeviceListPage):
        return 2 * _TUPLE + 3 * _SLOT + _INT + sum(map(_device_bytes, value.devices))
    return sys.getsizeof(value)


class _Entry(NamedTuple):
    """A value in the memory cache, with how long it may stay."""

    stamped: Stamped
    lifetime_s: float


def _expiry(_key: str, entry: _Entry, now: float) -> float:
    return now + entry.lifetime_s


def _entry_bytes(entry: _Entry) -> int:
    return size_in_bytes(entry.stamped)


class BoundedMemoryCache:
    """The in-process cache, bounded in bytes: least recently used entries go first.

    A bound on entries or events did not bound memory: windows hold 0 to 500 events, and
    an event's extended attributes can outweigh the rest of it many times. Entries expire
    on ``timer`` when their lifetime is over, with no timer of their own: an expiry timer
    keeps the context it is made in, and one made in a request kept that whole request
    alive for the entry's life (a week for a final window).
    """

    def __init__(self, max_bytes: int, timer: Callable[[], float] = time.monotonic) -> None:
        self._entries: TLRUCache[str, _Entry, float] = TLRUCache(
            max_bytes, _expiry, timer, _entry_bytes
        )
        CACHE_BYTES.set_function(lambda: self.size)

    @property
    def max_bytes(self) -> int:
        return int(self._entries.maxsize)

    @property
    def size(self) -> int:
        """The bytes its entries hold; expired ones are let go at the next get or set."""
        return int(self._entries.currsize)

    async def get(self, key: str) -> Stamped | None:
        self._entries.expire()
        entry = self._entries.get(key)
        return None if entry is None else entry.stamped

    async def set(self, key: str, value: Stamped, ttl_s: float) -> None:
        try:
            self._entries[key] = _Entry(value, ttl_s)
        except ValueError:
            # Larger than the whole bound: kept, it would have every other entry evicted.
            log.info("a value of %d bytes is beyond the cache's bound", size_in_bytes(value))

    async def delete(self, key: str) -> None:
        self._entries.expire()  # an expired entry would not be found, and stay counted
        self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()


_COMPACT = (",", ":")


def _decode_event(fields: list[Any]) -> ProvisioningEvent:
    occurred_at, status, event_by, event_type, service_plan, mdn, msisdn, attributes = fields
    return ProvisioningEvent(
        occurred_at,
        status,
        event_by,
        event_type,
        service_plan,
        mdn,
        msisdn,
        tuple(ExtendedAttribute(*a) for a in attributes),
    )


class ValueCodec:
    """Cached values as compact JSON for Redis (never pickle: Redis is shared)."""

    def dumps(self, value: Stored) -> str:
        if isinstance(value, Stamped):
            return json.dumps(
                {**self._encode(value.value), "f": value.fresh_until}, separators=_COMPACT
            )
        return json.dumps(self._encode(value), separators=_COMPACT)

    @staticmethod
    def _encode(value: CachedValue) -> dict[str, object]:
        if isinstance(value, HistoryWindow):
            events = [[*e[:7], [list(a) for a in e.extended_attributes]] for e in value.events]
            return {"w": events, "c": value.is_complete}
        devices = [
            [
                d.device_id,
                [list(i) for i in d.identifiers],
                d.account_name,
                d.last_activation_ticks,
                [list(a) for a in d.extended_attributes],
            ]
            for d in value.devices
        ]
        return {"d": devices, "l": value.largest_device_id_seen, "c": value.is_complete}

    def loads(self, value: str | bytes) -> Stored:
        data = json.loads(value)
        # The deadline rides beside the value's own keys: a replica of an older version
        # reads the value and ignores it, and a value it wrote (no deadline) reads fresh.
        if isinstance(data, dict) and "f" in data:
            return Stamped(self._decode(data), data["f"])
        return self._decode(data)

    @staticmethod
    def _decode(data: Any) -> CachedValue:
        if isinstance(data, dict) and "w" in data:
            return HistoryWindow(tuple(map(_decode_event, data["w"])), data["c"])
        if isinstance(data, dict) and "d" in data:
            return DeviceListPage(
                tuple(
                    DeviceRecord(
                        d[0],
                        tuple(DeviceIdentifier(*i) for i in d[1]),
                        d[2],
                        d[3],
                        tuple(ExtendedAttribute(*a) for a in d[4]),
                    )
                    for d in data["d"]
                ),
                data["l"],
                data["c"],
            )
        raise ValueError("not a cached value")


class RedisCache:
    """The cache shared by every replica: values as JSON (``ValueCodec``) under
    ``provgraph:<key>``, and short locks beside them for loads made once across replicas.
    """

    NAMESPACE = "provgraph"

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._codec = ValueCodec()

    def _name(self, key: str) -> str:
        return f"{self.NAMESPACE}:{key}"

    async def get(self, key: str) -> Stored | None:
        data = await self.client.get(self._name(key))
        return None if data is None else self._codec.loads(data)

    async def set(self, key: str, value: Stamped, ttl_s: float) -> None:
        await self.client.set(self._name(key), self._codec.dumps(value), px=int(ttl_s * 1000))

    async def delete(self, key: str) -> None:
        await self.client.delete(self._name(key))

    def lock(self, key: str, ttl_s: float) -> Lock:
        """A lock named ``key``, taken without waiting, that expires after ``ttl_s``."""
        return self.client.lock(self._name(key), timeout=ttl_s, blocking=False)

    async def locked(self, key: str) -> bool:
        """Whether some replica holds the lock named ``key``."""
        return bool(await self.client.exists(self._name(key)))

    async def close(self) -> None:
        await self.client.aclose()


CacheBackend = BoundedMemoryCache | RedisCache


def backend_from_url(url: str, max_bytes: int) -> CacheBackend:
    """``memory://`` or ``redis[s]://[[user]:password@]host[:port][/db]``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return BoundedMemoryCache(max_bytes=max_bytes)
    if scheme in ("redis", "rediss"):
        return RedisCache(Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5))
    raise ValueError(f"CACHE_URL must be memory:// or redis://..., not {scheme}://")


class UpstreamCache:
    """Caches upstream values and makes identical concurrent misses share one load."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        lock_ttl_s: float,
        poll_s: tuple[float, float] = (0.005, 0.1),
        stale_for_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self._lock_ttl_s = lock_ttl_s
        self._poll_s = poll_s
        self._stale_for_s = stale_for_s
        # Wall-clock time: freshness deadlines are shared between replicas through Redis.
        self._clock = clock
        self._loading: dict[str, asyncio.Future[tuple[CachedValue, Found]]] = {}

    async def close(self) -> None:
        await self.backend.close()

    async def get_or_load(
        self,
        key: str,
        load: Callable[[], Awaitable[CachedValue]],
        ttl_s: float,
        *,
        described: Described | None = None,
    ) -> tuple[CachedValue, Found]:
        """The value under ``key``, fresh for ``ttl_s``, and where it was found."""
        with _lookup_span() as span:
            _describe(span, described)
            try:
                value, found = await self._get_or_load(f"{SCHEMA_VERSION}:{key}", load, ttl_s)
            except Exception:
                _counted(span, "miss")
                raise
            _counted(span, _LOOKUP_RESULTS[found])
            return value, found

    async def get_or_read(
        self,
        key: str,
        load: Callable[[], Awaitable[CachedValue]],
        *,
        described: Described | None = None,
    ) -> tuple[CachedValue, Found]:
        """The fresh cached value under ``key``, or a load that is not stored.

        Never a stale value: these reads feed downloads, which have no way to say so.
        """
        with _lookup_span() as span:
            _describe(span, described)
            value, _ = self._fresh(await self._get(f"{SCHEMA_VERSION}:{key}"))
            if value is not None:
                _counted(span, "hit")
                return value, Found.CACHED
            _counted(span, "miss")
            return await load(), Found.LOADED

    async def _get_or_load(
        self,
        key: str,
        load: Callable[[], Awaitable[CachedValue]],
        ttl_s: float,
    ) -> tuple[CachedValue, Found]:
        value, stale = self._fresh(await self._get(key))
        if value is not None:
            return value, Found.CACHED
        pending = self._loading.get(key)
        if pending is not None:
            # Another task of this process is loading it: share its result (or error).
            try:
                loaded, found = await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The loader's own request was cancelled (its deadline, a client gone):
                # that is no failure of this request, which loads for itself instead.
                return await self._get_or_load(key, load, ttl_s)
            return loaded, Found.STALE if found is Found.STALE else Found.CACHED
        future: asyncio.Future[tuple[CachedValue, Found]] = (
            asyncio.get_running_loop().create_future()
        )
        self._loading[key] = future
        try:
            try:
                answer = await self._load_once(key, load, ttl_s)
            except UpstreamError as error:
                if stale is None or not error.transient:
                    raise
                log.info("serving a stale cache entry: %s", error.category)
                trace.get_current_span().add_event(
                    "stale entry served", {"error.type": error.category}
                )
                answer = stale, Found.STALE
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters may be none: keep asyncio from warning
            raise
        else:
            future.set_result(answer)
            return answer
        finally:
            del self._loading[key]

    def _fresh(self, stored: Stored | None) -> tuple[CachedValue | None, CachedValue | None]:
        """(the value if fresh, the value if stale) of what the backend holds."""
        if stored is None:
            return None, None
        if not isinstance(stored, Stamped):
            return stored, None  # written without a deadline (an older replica): fresh
        now = self._clock()
        if now < stored.fresh_until:
            return stored.value, None
        # Checked here too, not left to the backend's expiry: that runs on its own clock.
        if now < stored.fresh_until + self._stale_for_s:
            return None, stored.value
        return None, None

    async def _load_once(
        self,
        key: str,
        load: Callable[[], Awaitable[CachedValue]],
        ttl_s: float,
    ) -> tuple[CachedValue, Found]:
        shared = self.backend
        if not isinstance(shared, RedisCache):
            value = await load()
            await self._set(key, value, ttl_s)
            return value, Found.LOADED
        lock = shared.lock(f"lock:{key}", self._lock_ttl_s)
        deadline = time.monotonic() + self._lock_ttl_s
        delay = self._poll_s[0]
        while True:
            if await self._acquire(lock):
                try:
                    value = await load()
                    await self._set(key, value, ttl_s)
                    return value, Found.LOADED
                finally:
                    await self._release(lock)
            # Another process holds the lock: wait for its value, or for the lock to go.
            while time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._poll_s[1])
                fresh, _ = self._fresh(await self._get(key))
                if fresh is not None:
                    trace.get_current_span().add_event("loaded by another replica")
                    return fresh, Found.CACHED
                if not await self._locked(shared, f"lock:{key}"):
                    break
            else:
                value = await load()
                await self._set(key, value, ttl_s)
                return value, Found.LOADED

    async def _get(self, key: str) -> Stored | None:
        try:
            return await self.backend.get(key)
        except Exception as exc:
            log.warning("cache read failed (%s); reading upstream", type(exc).__name__)
            trace.get_current_span().add_event(
                "cache read failed", {"error.type": type(exc).__name__}
            )
            return None

    async def _set(self, key: str, value: CachedValue, ttl: float) -> None:
        stamped = Stamped(value, self._clock() + ttl)
        try:
            await self.backend.set(key, stamped, ttl + self._stale_for_s)
        except Exception as exc:
            log.warning("cache write failed (%s)", type(exc).__name__)
            trace.get_current_span().add_event(
                "cache write failed", {"error.type": type(exc).__name__}
            )

    @staticmethod
    async def _acquire(lock: Lock) -> bool:
        try:
            return bool(await lock.acquire())
        except Exception as exc:
            # Redis unreachable: load without the lock rather than fail the read.
            log.warning("cache lock failed (%s); loading without it", type(exc).__name__)
            return True

    @staticmethod
    async def _locked(shared: RedisCache, lock: str) -> bool:
        try:
            return await shared.locked(lock)
        except Exception:
            return False

    @staticmethod
    async def _release(lock: Lock) -> None:
        try:
            await lock.release()
        except LockNotOwnedError:
            # Expired before the load finished (and perhaps taken by another replica since):
            # the lock's time is too short for the upstream's slowest answers.
            log.warning("a load outlived its cache lock")
        except Exception as exc:
            log.warning("cache unlock failed (%s); the lock will expire", type(exc).__name__)
