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
one after, whose call leaves on the first reply's head."""


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
        self._chains: dict[tuple[DeviceIdentifier, int], _Chain] = {}

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
        of that size needs a window this one did not read, has that window and the one
        after (``READ_AHEAD_WINDOWS``) read, so that the upstream answers while the client
        takes this page. The task started, or None.

        One chain of calls per client read (device and range): each call leaves on the
        head of the reply before it, and each page lets the chain go on to the window its
        next page needs and the one after, so that a chain never stops to be started
        again. For a client paging on (the caller's to judge: one that stops wasted at
        most those two calls), and only while ``cost``'s request has calls of its budget
        left, at the request's priority. The calls are not counted in ``cost``: the
        windows are the next requests', cache hits there. At most ``read_ahead`` chains
        at once; ``aclose`` cancels them.
        """
        if not page.has_next or not page.items or self._read_ahead <= 0:
            return None
        start = _unread_window(page, first, latest)
        left = None if cost.budget is None else cost.budget - cost.upstream_calls
        if start is None or (left is not None and left <= 0):
            return None
        ahead = Cost(budget=left, priority=cost.priority)
        chain = self._chains.get((device, latest))
        if chain is not None and (start in chain.starts or start == chain.paused):
            # The windows before the one the next page needs are behind the client.
            del chain.starts[: chain.starts.index(start) if start in chain.starts else None]
            chain.cost = ahead
            if chain.paused is None or len(chain.starts) >= READ_AHEAD_WINDOWS:
                return None  # still on its way, or at the range's end
            begin, chain.paused = chain.paused, None
            return self._follow(chain, begin)
        # A client read has one chain: a page elsewhere in its range replaces it, in the
        # place it held (its calls under way end on their own, at most as far ahead).
        full = chain is None and len(self._chains) >= self._read_ahead
        if full and not self._drop_idle_chain():
            return None
        chain = self._chains[(device, latest)] = _Chain(device, latest, ahead)
        return self._follow(chain, start)

    def _drop_idle_chain(self) -> bool:
        """Forgets the oldest chain with no call under way, if any."""
        for key, chain in self._chains.items():
            if not chain.tasks:
                del self._chains[key]
                return True
        return False

    def _follow(self, chain: "_Chain", start: int) -> asyncio.Task[None]:
        """Starts ``chain``'s read of the window at ``start``, tracked for ``aclose``."""
        # A context of its own: the task must not keep the request's (its caller, its
        # response) alive, as an expiry timer made in a request once did.
        task = asyncio.get_running_loop().create_task(
            self._read_on(chain, start), context=contextvars.Context()
        )
        chain.tasks += 1
        self._reading_ahead.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._reading_ahead.discard(finished)
            chain.tasks -= 1

        task.add_done_callback(done)
        return task

    async def _read_on(self, chain: "_Chain", start: int) -> None:
        """Reads the window at ``start``; the chain goes on to the next window, as soon as
        the reply's head says where it starts, while it is fewer than
        ``READ_AHEAD_WINDOWS`` past the one the client's next page needs; else it waits
        there for the next page (``paused``)."""
        chain.starts.append(start)
        following: asyncio.Task[None] | None = None

        def go_on(begin: int) -> None:
            nonlocal following
            if following is not None or chain.paused is not None:
                return
            if len(chain.starts) < READ_AHEAD_WINDOWS:
                following = self._follow(chain, begin)
            else:
                chain.paused = begin

        def on_head(head: HistoryHead) -> None:
            if head.is_complete or head.first_at is None or head.last_at is None:
                return
            begin = start_after(head.first_at, head.last_at, chain.latest)
            if begin is not None:
                go_on(begin)

        try:
            window = await self.history(chain.cost, on_head=on_head)(
                chain.device, start, chain.latest
            )
            if following is None and chain.paused is None:
                # Cached, or read by another request: its events say where the next begins.
                after, _ = next_window(window, chain.latest)
                if after is not None:
                    go_on(after.window_start)
        except (UpstreamError, UpstreamBudgetExceeded, HistoryPagingError) as error:
            # The next page reads the window itself, and reports what goes wrong then; a
            # page after it starts a new chain.
            log.debug("reading a window ahead failed: %s", error)
            if self._chains.get((chain.device, chain.latest)) is chain:
                del self._chains[(chain.device, chain.latest)]
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


@dataclass(eq=False)
class _Chain:
    """One client read's windows read ahead: its device and range, the request whose
    budget its calls spend now, and the windows it called for from the one the client's
    next page needs."""

    device: DeviceIdentifier
    latest: int
    cost: Cost
    starts: list[int] = field(default_factory=list)
    paused: int | None = None
    """Where it goes on when the next page lets it (it is ``READ_AHEAD_WINDOWS`` ahead)."""
    tasks: int = 0
    """Its reads under way."""


class _NotCached(Exception):
    """Stands in for a load where only what the cache holds is wanted."""


def _device_list() -> dict[str, str]:
    return {"provgraph.upstream.operation": "GetDeviceList"}


def _device_list_key(largest_seen: int | None) -> str:
    return f"d:{largest_seen if largest_seen is not None else ''}"
