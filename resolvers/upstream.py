"""Upstream reads through the window cache, with what each request costs."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from models.devices import DeviceIdentifier, DeviceListPage
from models.events import HistoryWindow
from models.instants import TICKS_PER_SECOND
from resolvers.cache import UpstreamCache
from resolvers.history import FetchWindow, HistoryGap
from soap.client import UwsClient


@dataclass
class Cost:
    """What one request spent upstream, and what it could not get: shown in its response."""

    upstream_calls: int = 0
    cache_hits: int = 0
    gaps: list[tuple[DeviceIdentifier, HistoryGap]] = field(default_factory=list)


@dataclass(frozen=True)
class CachePolicy:
    settle_s: float
    """A window whose range ended this long ago no longer changes."""
    immutable_ttl_s: float
    recent_ttl_s: float
    device_list_ttl_s: float


class Upstream:
    def __init__(
        self,
        client: UwsClient,
        cache: UpstreamCache,
        policy: CachePolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.cache = cache
        self.policy = policy
        self._clock = clock

    def now(self) -> int:
        """The current instant in ticks."""
        return int(self._clock() * TICKS_PER_SECOND)

    def history(self, cost: Cost, keep: bool = True) -> FetchWindow:
        """A window reader for one request, counting calls and cache hits into ``cost``.

        With ``keep`` false, windows are taken from the cache but not put there: a bulk
        export reads each window once and must not push out what interactive use keeps.
        """

        async def fetch(device: DeviceIdentifier, earliest: int, latest: int) -> HistoryWindow:
            async def load() -> HistoryWindow:
                cost.upstream_calls += 1
                return await self.client.get_device_provisioning_history(device, earliest, latest)

            settled = latest < self.now() - int(self.policy.settle_s * TICKS_PER_SECOND)
            ttl = self.policy.immutable_ttl_s if settled else self.policy.recent_ttl_s
            key = f"h:{device.kind}:{device.identifier}:{earliest}:{latest}"
            if keep:
                value, hit = await self.cache.get_or_load(key, load, ttl)
            else:
                value, hit = await self.cache.get_or_read(key, load)
            cost.cache_hits += hit
            assert isinstance(value, HistoryWindow)
            return value

        return fetch

    async def device_list(self, largest_seen: int | None, cost: Cost) -> DeviceListPage:
        async def load() -> DeviceListPage:
            cost.upstream_calls += 1
            return await self.client.get_device_list(largest_seen)

        key = f"d:{largest_seen if largest_seen is not None else ''}"
        value, hit = await self.cache.get_or_load(key, load, self.policy.device_list_ttl_s)
        cost.cache_hits += hit
        assert isinstance(value, DeviceListPage)
        return value
