"""Upstream reads through the window cache and the resilience layer, with what each
request costs."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from models.devices import DeviceIdentifier, DeviceListPage
from models.events import HistoryWindow
from models.instants import TICKS_PER_SECOND
from resolvers.cache import Found, UpstreamCache
from resolvers.history import FetchWindow, HistoryGap
from resolvers.resilience import Resilience
from soap.client import UwsClient


@dataclass
class Cost:
    """What one request spent upstream, and what it could not get: shown in its response."""

    upstream_calls: int = 0
    """Calls made, retries included."""
    cache_hits: int = 0
    stale_reads: int = 0
    """Answers taken from the cache past their freshness because the upstream was down."""
    gaps: list[tuple[DeviceIdentifier, HistoryGap]] = field(default_factory=list)

    def count(self, found: Found) -> None:
        self.cache_hits += found is Found.CACHED
        self.stale_reads += found is Found.STALE


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
        resilience: Resilience,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.cache = cache
        self.policy = policy
        self.resilience = resilience
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
            async def attempt() -> HistoryWindow:
                cost.upstream_calls += 1
                return await self.client.get_device_provisioning_history(device, earliest, latest)

            async def load() -> HistoryWindow:
                return await self.resilience.call("GetDeviceProvisioningHistory", attempt)

            settled = latest < self.now() - int(self.policy.settle_s * TICKS_PER_SECOND)
            ttl = self.policy.immutable_ttl_s if settled else self.policy.recent_ttl_s
            key = f"h:{device.kind}:{device.identifier}:{earliest}:{latest}"
            if keep:
                value, found = await self.cache.get_or_load(key, load, ttl)
            else:
                value, found = await self.cache.get_or_read(key, load)
            cost.count(found)
            assert isinstance(value, HistoryWindow)
            return value

        return fetch

    async def device_list(self, largest_seen: int | None, cost: Cost) -> DeviceListPage:
        async def attempt() -> DeviceListPage:
            cost.upstream_calls += 1
            return await self.client.get_device_list(largest_seen)

        async def load() -> DeviceListPage:
            return await self.resilience.call("GetDeviceList", attempt)

        key = f"d:{largest_seen if largest_seen is not None else ''}"
        value, found = await self.cache.get_or_load(key, load, self.policy.device_list_ttl_s)
        cost.count(found)
        assert isinstance(value, DeviceListPage)
        return value
