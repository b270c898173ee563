"""The upstream window cache: parsed replies, keyed by the call that produced them.

Backed by aiocache: a bounded in-process LRU by default, Redis when ``CACHE_URL`` says so.
Identical concurrent misses make one upstream call: within a process through a shared
future, and across processes on Redis through a short lock that the others wait out.
Cached values are immutable tuples, so handing the same object to many callers is safe.

Entries outlive their freshness by ``stale_for_s``: past its deadline an entry counts
as a miss, but when the load that should replace it fails because the upstream is down
(unreachable, timing out, or its circuit open), the old value is served, marked stale.
"""

import asyncio
import contextvars
import json
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from aiocache import RedisCache, SimpleMemoryCache
from aiocache.base import BaseCache
from aiocache.serializers import BaseSerializer

from models.devices import DeviceIdentifier, DeviceListPage, DeviceRecord
from models.events import ExtendedAttribute, HistoryWindow, ProvisioningEvent
from resolvers.metrics import CACHE_BYTES, CACHE_LOOKUPS
from soap.errors import UpstreamError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "v1"
"""Part of every key: bump it when the shape of cached values changes."""

CachedValue = HistoryWindow | DeviceListPage


class Stamped(NamedTuple):
    """A value as stored: with the instant (clock seconds) its freshness ends."""

    value: CachedValue
    fresh_until: float


class Found(IntEnum):
    """Where ``get_or_load`` found its value; true when it was not loaded for the caller."""

    LOADED = 0
    CACHED = 1
    """From the cache, or from a load another caller made at the same time."""
    STALE = 2
    """From the cache past its freshness: the load failed with the upstream down."""


_LOOKUP_RESULTS = {Found.LOADED: "miss", Found.CACHED: "hit", Found.STALE: "stale"}


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


def _event_bytes(event: ProvisioningEvent) -> int:
    return (
        _TUPLE
        + len(event) * _SLOT
        + _INT
        + _text(event.status)
        + _text(event.event_by)
        + _text(event.event_type)
        + _text(event.service_plan)
        + _text(event.mdn)
        + _text(event.msisdn)
        + _attributes_bytes(event.extended_attributes)
    )


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
        return _TUPLE + 2 * _SLOT + _TUPLE + sum(map(_event_bytes, value.events))
    if isinstance(value, DeviceListPage):
        return 2 * _TUPLE + 3 * _SLOT + _INT + sum(map(_device_bytes, value.devices))
    return sys.getsizeof(value)


class BoundedMemoryCache(SimpleMemoryCache):
    """aiocache's memory cache with a bound in bytes: least recently used entries go first.

    A bound on entries or events did not bound memory: windows hold 0 to 500 events, and
    an event's extended attributes can outweigh the rest of it many times.
    """

    def __init__(self, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_bytes = max_bytes
        self._sizes: dict[str, int] = {}
        self.size = 0
        CACHE_BYTES.set_function(lambda: self.size)

    async def _get(self, key: str, encoding: str = "utf-8", _conn: Any = None) -> Any:
        value = self._cache.get(key)
        if value is not None:
            self._cache[key] = self._cache.pop(key)  # most recently used goes last
        return value

    async def _set(
        self, key: str, value: Any, ttl: Any = None, _cas_token: Any = None, _conn: Any = None
    ) -> Any:
        self._forget(key)
        # aiocache expires an entry with loop.call_later, and a timer keeps the context it
        # was made in until it fires: made in a request, it held that whole request (its
        # caller, loaders, cost: some 4 KB) for the entry's life, a week for a final
        # window. The load run's memory grew 1.3x in a minute. Set from an empty context.
        result = await asyncio.create_task(
            super()._set(key, value, ttl=ttl, _cas_token=_cas_token),
            context=contextvars.Context(),
        )
        if key in self._cache:
            self._sizes[key] = size_in_bytes(value)
            self.size += self._sizes[key]
        while self.size > self.max_bytes and len(self._cache) > 1:
            await self._delete(next(iter(self._cache)))
        return result

    async def _delete(self, key: str, _conn: Any = None) -> int:
        self._forget(key)
        return await super()._delete(key)

    async def _clear(self, namespace: str | None = None, _conn: Any = None) -> bool:
        result = await super()._clear(namespace)
        for key in [k for k in self._sizes if k not in self._cache]:
            self._forget(key)
        return result

    # aiocache's TTL timers call this name-mangled method directly; overriding it keeps
    # the size right when an entry expires.
    def _SimpleMemoryBackend__delete(self, key: str) -> int:
        self._forget(key)
        return super()._SimpleMemoryBackend__delete(key)  # type: ignore[misc]

    def _forget(self, key: str) -> None:
        self.size -= self._sizes.pop(key, 0)


_COMPACT = (",", ":")


class ValueCodec(BaseSerializer):
    """Cached values as compact JSON for Redis (never pickle: Redis is shared)."""

    def dumps(self, value: object) -> str:
        if isinstance(value, Stamped):
            return json.dumps(
                {**self._encode(value.value), "f": value.fresh_until}, separators=_COMPACT
            )
        return json.dumps(self._encode(value), separators=_COMPACT)

    @staticmethod
    def _encode(value: object) -> Any:
        if isinstance(value, HistoryWindow):
            events = [[*e[:7], [list(a) for a in e.extended_attributes]] for e in value.events]
            return {"w": events, "c": value.is_complete}
        if isinstance(value, DeviceListPage):
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
        return value

    def loads(self, value: str | None) -> object:
        if value is None:
            return None
        data = json.loads(value)
        # The deadline rides beside the value's own keys: a replica of an older version
        # reads the value and ignores it, and a value it wrote (no deadline) reads fresh.
        if isinstance(data, dict) and "f" in data:
            return Stamped(self._decode(data), data["f"])  # type: ignore[arg-type]
        return self._decode(data)

    @staticmethod
    def _decode(data: Any) -> object:
        if isinstance(data, dict) and "w" in data:
            return HistoryWindow(
                tuple(
                    ProvisioningEvent(*e[:7], tuple(ExtendedAttribute(*a) for a in e[7]))
                    for e in data["w"]
                ),
                data["c"],
            )
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
        return data


def backend_from_url(url: str, max_bytes: int) -> BaseCache:
    """``memory://`` or ``redis://[:password@]host[:port][/db]``."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return BoundedMemoryCache(max_bytes=max_bytes)
    if parts.scheme in ("redis", "rediss"):
        return RedisCache(
            serializer=ValueCodec(),
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(parts.path.strip("/") or 0),
            password=parts.password,
            ssl=parts.scheme == "rediss",
            namespace="provgraph",
            timeout=5,
        )
    raise ValueError(f"CACHE_URL must be memory:// or redis://..., not {parts.scheme}://")


class UpstreamCache:
    """Caches upstream values and makes identical concurrent misses share one load."""

    def __init__(
        self,
        backend: BaseCache,
        *,
        lock_ttl_s: float,
        poll_s: tuple[float, float] = (0.005, 0.1),
        stale_for_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self._shared = isinstance(backend, RedisCache)
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
    ) -> tuple[CachedValue, Found]:
        """The value under ``key``, fresh for ``ttl_s``, and where it was found."""
        try:
            value, found = await self._get_or_load(f"{SCHEMA_VERSION}:{key}", load, ttl_s)
        except Exception:
            CACHE_LOOKUPS.labels("miss").inc()
            raise
        CACHE_LOOKUPS.labels(_LOOKUP_RESULTS[found]).inc()
        return value, found

    async def get_or_read(
        self, key: str, load: Callable[[], Awaitable[CachedValue]]
    ) -> tuple[CachedValue, Found]:
        """The fresh cached value under ``key``, or a load that is not stored.

        Never a stale value: these reads feed downloads, which have no way to say so.
        """
        value, _ = self._fresh(await self._get(f"{SCHEMA_VERSION}:{key}"))
        if value is not None:
            CACHE_LOOKUPS.labels("hit").inc()
            return value, Found.CACHED
        CACHE_LOOKUPS.labels("miss").inc()
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
                value, found = await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The loader's own request was cancelled (its deadline, a client gone):
                # that is no failure of this request, which loads for itself instead.
                return await self._get_or_load(key, load, ttl_s)
            return value, Found.STALE if found is Found.STALE else Found.CACHED
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

    def _fresh(self, stored: object) -> tuple[CachedValue | None, CachedValue | None]:
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
        if not self._shared:
            value = await load()
            await self._set(key, value, ttl_s)
            return value, Found.LOADED
        lock = f"lock:{key}"
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self._lock_ttl_s
        delay = self._poll_s[0]
        while True:
            if await self._try_lock(lock, token):
                try:
                    value = await load()
                    await self._set(key, value, ttl_s)
                    return value, Found.LOADED
                finally:
                    await self._unlock(lock, token)
            # Another process holds the lock: wait for its value, or for the lock to go.
            while time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._poll_s[1])
                fresh, _ = self._fresh(await self._get(key))
                if fresh is not None:
                    return fresh, Found.CACHED
                if not await self._locked(lock):
                    break
            else:
                value = await load()
                await self._set(key, value, ttl_s)
                return value, Found.LOADED

    async def _get(self, key: str) -> Any:
        try:
            return await self.backend.get(key)
        except Exception as exc:
            log.warning("cache read failed (%s); reading upstream", type(exc).__name__)
            return None

    async def _set(self, key: str, value: CachedValue, ttl: float) -> None:
        stamped = Stamped(value, self._clock() + ttl)
        try:
            await self.backend.set(key, stamped, ttl=ttl + self._stale_for_s)
        except Exception as exc:
            log.warning("cache write failed (%s)", type(exc).__name__)

    async def _try_lock(self, lock: str, token: str) -> bool:
        try:
            await self.backend.add(lock, token, ttl=self._lock_ttl_s)
        except ValueError:
            return False
        except Exception:
            return True
        return True

    async def _locked(self, lock: str) -> bool:
        try:
            return bool(await self.backend.exists(lock))
        except Exception:
            return False

    async def _unlock(self, lock: str, token: str) -> None:
        try:
            stored = self.backend.serializer.dumps(token)
            await self.backend._redlock_release(self.backend.build_key(lock), stored)
        except Exception as exc:
            log.warning("cache unlock failed (%s); the lock will expire", type(exc).__name__)
