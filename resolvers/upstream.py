"""Upstream reads through the window cache and the resilience layer, with what each
request costs and the budget of calls it may spend, and history windows read ahead for
clients paging forward."""

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from typing import TypeVar

from opentelemetry import trace

from models.devices import DeviceIdentifier, DeviceListPage
from models.events import HistoryWindow
from models.instants import TICKS_PER_SECOND, format_instant
from resolvers.budget import INTERACTIVE, Priority
from resolvers.cache import Described, Found, UpstreamCache
from resolvers.history import (
    FetchWindow,
    HistoryGap,
    HistoryPage,
    HistoryPagingError,
    next_window,
    start_after,
)
from resolvers.resilience import Resilience
from soap.client import UwsClient
from soap.errors import UpstreamError
from soap.replies import HistoryHead

T = TypeVar("T")
log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)


READ_AHEAD_WINDOWS = 2
"""Windows a client paging forward has read ahead: the one its next page needs, and the
one after, whose call leaves while the first's reply is still being read."""


class UpstreamBudgetExceeded(Exception):
    """A request would pass its budget of upstream calls: the call was not made.

    Not an ``UpstreamError``: nothing is wrong with the upstream, so the circuit breaker
    and retries leave it alone, and a report fails as a whole rather than listing every
    device it did not get to.
    """

    def __init__(self, cost: "Cost", budget: int) -> None:
        super().__init__(
            f"This request reached its budget of {budget} upstream calls "
            "(MAX_UPSTREAM_CALLS_PER_REQUEST), so no further call was made. Ask for less "
            "in one request (fewer aliases, devices, filters or totalCount over shorter "
            "ranges), or start a report job for a large fleet."
        )
        self.cost = cost
        self.budget = budget


@dataclass
class Cost:
    """What one request spent upstream, and what it could not get: shown in its response."""

    budget: int | None = None
    """Upstream calls this request may make, retries included; None: no bound (report
    jobs and CSV exports, which are bounded by their devices and stream their result)."""
    upstream_calls: int = 0
    """Calls made, retries included."""
    cache_hits: int = 0
    stale_reads: int = 0
    """Answers taken from the cache past their freshness because the upstream was down."""
    gaps: list[tuple[DeviceIdentifier, HistoryGap]] = field(default_factory=list)
    device_list_unavailable: UpstreamError | None = None
    """Why the device list could not be read where a device's identifiers needed it."""
    priority: Priority = INTERACTIVE
    """Which callers' calls go first when the upstream budget is spent: report jobs'
    wait while interactive requests wait."""

    def count(self, found: Found) -> None:
        self.cache_hits += found is Found.CACHED
        self.stale_reads += found is Found.STALE

    def check(self) -> None:
        """UpstreamBudgetExceeded when the budget has no call left."""
        if self.budget is not None and self.upstream_calls >= self.budget:
            raise UpstreamBudgetExceeded(self, self.budget)

    def spend(self) -> None:
        """Counts a call about to be made; refuses it (UpstreamBudgetExceeded) instead
        when it would pass the budget. Check and count happen with no await between, so
        calls made side by side never pass the budget together."""
        self.check()
        self.upstream_calls += 1


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
        read_ahead: int = 0,
    ) -> None:
        self.client = client
        self.cache = cache
        self.policy = policy
        self.resilience = resilience
        self._clock = clock
        self._read_ahead = read_ahead
        self._reading_ahead: set[asyncio.Task[None]] = set()

    def now(self) -> int:
        """The current instant in ticks."""
        return int(self._clock() * TICKS_PER_SECOND)

    def history(
        self,
        cost: Cost,
        keep: bool = True,
        on_head: Callable[[HistoryHead], None] | None = None,
    ) -> FetchWindow:
        """A window reader for one request, counting calls and cache hits into ``cost``.

        With ``keep`` false, windows are taken from the cache but not put there: a bulk
        export reads each window once and must not push out what interactive use keeps.
        ``on_head``: told each reply's head, for the windows this reader calls for itself.
        """

        async def fetch(device: DeviceIdentifier, earliest: int, latest: int) -> HistoryWindow:
            def window() -> dict[str, str]:
                # The identifier stays out of traces: it names a subscriber's device.
                return {
                    "provgraph.upstream.operation": "GetDeviceProvisioningHistory",
                    "provgraph.device.kind": device.kind,
                    "provgraph.window.earliest": format_instant(earliest),
                    "provgraph.window.latest": format_instant(latest),
                }

            load = self._load(
                "GetDeviceProvisioningHistory",
                cost,
                lambda: self.client.get_device_provisioning_history(
                    device, earliest, latest, on_head
                ),
                window,
            )
            settled = latest < self.now() - int(self.policy.settle_s * TICKS_PER_SECOND)
            ttl = self.policy.immutable_ttl_s if settled else self.policy.recent_ttl_s
            key = f"h:{device.kind}:{device.identifier}:{earliest}:{latest}"
            if keep:
                value, found = await _own(
                    cost, lambda: self.cache.get_or_load(key, load, ttl, described=window)
                )
            else:
                value, found = await self.cache.get_or_read(key, load, described=window)
            cost.count(found)
            assert isinstance(value, HistoryWindow)
            return value

        return fetch

    def read_ahead(
        self, cost: Cost, device: DeviceIdentifier, page: HistoryPage, first: int, latest: int
    ) -> asyncio.Task[None] | None:
        """After a forward page of ``first`` events with more to come: when the next page
        of that size needs a window this one did not read, starts reading it and the one
        after (``READ_AHEAD_WINDOWS``), so that the upstream answers while the client
        takes this page. The task, or None.

        For a client paging on (the caller's to judge: one that stops wasted the calls),
        and only while ``cost``'s request has calls of its budget left, at the request's
        priority. The calls are not counted in ``cost``: the windows are the next
        requests', cache hits there. At most ``read_ahead`` tasks at once; ``aclose``
        cancels them.
        """
        if not page.has_next or not page.items or len(self._reading_ahead) >= self._read_ahead:
            return None
        start = _unread_window(page, first, latest)
        left = None if cost.budget is None else cost.budget - cost.upstream_calls
        if start is None or (left is not None and left <= 0):
            return None
        ahead = Cost(budget=left, priority=cost.priority)
        # A context of its own: the task must not keep the request's (its caller, its
        # response) alive, as an expiry timer made in a request once did.
        task = asyncio.get_running_loop().create_task(
            self._read_on(ahead, device, start, latest, READ_AHEAD_WINDOWS),
            context=contextvars.Context(),
        )
        self._reading_ahead.add(task)
        task.add_done_callback(self._reading_ahead.discard)
        return task

    async def _read_on(
        self, cost: Cost, device: DeviceIdentifier, start: int, latest: int, windows: int
    ) -> None:
        """Reads the window at ``start`` and the ``windows - 1`` after it. Each next call
        leaves once the reply before it says where it starts (its head), while that
        reply's events are still being read: windows come one after another, and
        reading a reply took as long as the upstream took to answer it."""
        following: asyncio.Task[None] | None = None

        def on_head(head: HistoryHead) -> None:
            nonlocal following
            if head.is_complete or head.first_at is None or head.last_at is None:
                return
            begin = start_after(head.first_at, head.last_at, latest)
            if begin is not None and following is None:
                following = asyncio.ensure_future(
                    self._read_on(cost, device, begin, latest, windows - 1)
                )

        try:
            window = await self.history(cost, on_head=on_head if windows > 1 else None)(
                device, start, latest
            )
            if following is None and windows > 1:
                # Cached, or read by another request: its events say where the next begins.
                after, _ = next_window(window, latest)
                if after is not None:
                    await self._read_on(cost, device, after.window_start, latest, windows - 1)
        except (UpstreamError, UpstreamBudgetExceeded, HistoryPagingError) as error:
            # The next page reads the window itself, and reports what goes wrong then.
            log.debug("reading a window ahead failed: %s", error)
        finally:
            if following is not None:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    following.cancel()
                await asyncio.gather(following, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancels the windows still being read ahead, and waits for them to end."""
        for task in self._reading_ahead:
            task.cancel()
        await asyncio.gather(*self._reading_ahead, return_exceptions=True)

    def _load(
        self,
        operation: str,
        cost: Cost,
        call: Callable[[], Awaitable[T]],
        described: Described | None = None,
    ) -> Callable[[], Awaitable[T]]:
        """Loads one answer for ``cost``'s request: every attempt, retries included,
        spends a call of its budget, and none is made past it. Each attempt has a span,
        with what ``described`` says of the call."""

        async def load() -> T:
            attempts = count(1)

            async def attempt() -> T:
                cost.spend()
                number = next(attempts)
                with _tracer.start_as_current_span(f"upstream {operation}") as span:
                    if span.is_recording():
                        span.set_attributes(described() if described else {})
                        span.set_attribute("provgraph.upstream.operation", operation)
                        span.set_attribute("provgraph.upstream.attempt", number)
                    try:
                        value = await call()
                    except UpstreamError as error:
                        span.set_attribute("provgraph.upstream.outcome", error.category)
                        raise
                    span.set_attribute("provgraph.upstream.outcome", "ok")
                    return value

            # Before the breaker and the rate limit: a call that cannot be made takes
            # neither the half-open probe nor a slot of the process's call rate.
            cost.check()
            return await self.resilience.call(operation, attempt, cost.priority)

        return load

    async def device_list(self, largest_seen: int | None, cost: Cost) -> DeviceListPage:
        load = self._load("GetDeviceList", cost, lambda: self.client.get_device_list(largest_seen))
        key = _device_list_key(largest_seen)
        ttl = self.policy.device_list_ttl_s
        value, found = await _own(
            cost, lambda: self.cache.get_or_load(key, load, ttl, described=_device_list)
        )
        cost.count(found)
        assert isinstance(value, DeviceListPage)
        return value

    async def cached_device_list(
        self, largest_seen: int | None, cost: Cost
    ) -> DeviceListPage | None:
        """The device-list page ``device_list`` would give, if the cache holds it fresh;
        never an upstream call."""

        async def refuse() -> DeviceListPage:
            raise _NotCached

        try:
            value, found = await self.cache.get_or_read(
                _device_list_key(largest_seen), refuse, described=_device_list
            )
        except _NotCached:
            return None
        cost.count(found)
        assert isinstance(value, DeviceListPage)
        return value


async def _own(cost: Cost, read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, a cache lookup that may wait on a load another request started: when
    that request's budget ran out, this one is not refused for it but loads for itself."""
    while True:
        try:
            return await read()
        except UpstreamBudgetExceeded as exceeded:
            if exceeded.cost is cost:
                raise


def _unread_window(page: HistoryPage, first: int, latest: int) -> int | None:
    """The start of the window that a page of ``first`` events after ``page`` needs
    beyond the windows ``page`` read, if any."""
    after = page.items[-1].after
    if after is None:
        return None
    known = page.windows.get(after.window_start)
    if known is None:  # the page ended with a window's last event
        return after.window_start
    if len(known.items) - after.offset >= first:
        return None
    following, _ = next_window(known.window, latest)
    return following.window_start if following is not None else None


class _NotCached(Exception):
    """Stands in for a load where only what the cache holds is wanted."""


def _device_list() -> dict[str, str]:
    return {"provgraph.upstream.operation": "GetDeviceList"}


def _device_list_key(largest_seen: int | None) -> str:
    return f"d:{largest_seen if largest_seen is not None else ''}"
