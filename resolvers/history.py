"""The lossless history pager over GetDeviceProvisioningHistory.

The upstream returns at most 500 events a call, oldest first, and says whether that was
all (IsComplete). Its documented rule, "ask again from the last event plus 1 ms", drops
every later event of that millisecond. This pager asks again from the last event's exact
instant and skips the events of that instant it already delivered, so it loses nothing;
that re-read is the whole price (docs/ARCHITECTURE.md).

Windows are cut the same way on every read: each next window's start follows from the
previous reply alone. So a ``Position`` (window start, offset into its reply) names any
event for good, a cursor can resume from one with a single call, and a cache can key on
windows. This relies on the upstream ordering events of one instant the same way on
every call, as it does.

Pages (``read_forward``, ``read_backward``) read windows as ``KnownWindow``s: a window
object the cache hands out again has its items made once, and keeps what the GraphQL
layer makes of them (edges, cursors, response dicts), so a warm page costs little more
than slicing.
"""

import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice, repeat
from operator import attrgetter
from typing import NamedTuple

from models.devices import DeviceIdentifier
from models.events import HistoryWindow, ProvisioningEvent
from models.instants import format_instant, parse_instant

RANGE_START = parse_instant("2000-01-01T00:00:00Z")
"""The earliest instant a range may name, and where a range without a start begins."""
RANGE_END = parse_instant("2100-01-01T00:00:00Z")
"""Instants a range may name lie before this."""


def range_problem(
    occurred_after: int | None, occurred_before: int | None
) -> tuple[str, str] | None:
    """(argument, message) for a range that cannot be asked for, else None."""
    for name, value in (("occurredAfter", occurred_after), ("occurredBefore", occurred_before)):
        if value is not None and not RANGE_START <= value < RANGE_END:
            return name, f"{name} must lie from 2000-01-01T00:00:00Z to before 2100-01-01."
    if (
        occurred_after is not None
        and occurred_before is not None
        and occurred_after > occurred_before
    ):
        return "occurredAfter", "occurredAfter must not be later than occurredBefore."
    return None


FetchWindow = Callable[[DeviceIdentifier, int, int], Awaitable[HistoryWindow]]
"""Reads one upstream window: (device, earliest, latest) in ticks, both inclusive."""


class Position(NamedTuple):
    """Where an event stands: the start of the window that returns it, and its index there."""

    window_start: int
    offset: int


class HistoryGap(NamedTuple):
    """Events the upstream cannot deliver: more than one reply's worth at one instant."""

    instant: int
    delivered: int

    @property
    def message(self) -> str:
        return (
            f"The upstream returned {self.delivered} events at {format_instant(self.instant)} "
            "and cannot page within one instant; any further events at that instant "
            "are unreachable."
        )


class PagedEvent(NamedTuple):
    event: ProvisioningEvent
    window_start: int
    offset: int
    """This event's own position: ``at``, kept as its parts (one object fewer an event
    for every event a window holds, and for the collector to walk while it is kept)."""
    rank: int
    """How many events of the same instant come before this one."""
    last: bool
    """Whether this is its window's last event."""
    following: Position | None
    """For a window's last event, where the next window begins (None: the range ends);
    None for the others."""

    @property
    def at(self) -> Position:
        """This event's own position."""
        return Position(self.window_start, self.offset)

    @property
    def after(self) -> Position | None:
        """The next event's position, or None when this is the last event of the range."""
        if self.last:
            return self.following
        return Position(self.window_start, self.offset + 1)

    @property
    def order(self) -> tuple[int, int]:
        """Sorts events in history order: by instant, then upstream order within it."""
        return self.event.occurred_at, self.rank


class EventRef(NamedTuple):
    """What a cursor remembers of an event: enough to find it, and the next, again."""

    at: Position
    instant: int
    rank: int
    after: Position | None

    @property
    def order(self) -> tuple[int, int]:
        return self.instant, self.rank

    @classmethod
    def of(cls, item: PagedEvent) -> "EventRef":
        return cls(item.at, item.event.occurred_at, item.rank, item.after)


class HistoryPagingError(Exception):
    """The upstream said a window was incomplete but returned no event to resume after."""


def start_after(first_at: int, last_at: int, latest: int) -> int | None:
    """Where the window after an incomplete one whose events run from ``first_at`` to
    ``last_at`` begins: at its last instant, read again. When the whole reply is that one
    instant, asking again from it returns the same events, so the rest of that instant
    cannot be had: just after it (None past ``latest``)."""
    if first_at != last_at:
        return last_at
    return last_at + 1 if last_at < latest else None


def next_window(window: HistoryWindow, latest: int) -> tuple[Position | None, HistoryGap | None]:
    """Where the window after ``window`` begins, and any gap the upstream leaves before it."""
    if window.is_complete:
        return None, None
    events = window.events
    if not events:
        raise HistoryPagingError("the upstream reported an incomplete window with no events")
    last = events[-1].occurred_at
    start = start_after(events[0].occurred_at, last, latest)
    if start != last:  # the whole reply is one instant
        return (Position(start, 0) if start is not None else None), HistoryGap(last, len(events))
    same = 1
    while events[-1 - same].occurred_at == last:
        same += 1
    return Position(last, same), None


class HistoryPager:
    """All events of one device in [earliest, latest], oldest first, read lazily.

    Iterate it once. ``gaps`` lists what the upstream could not deliver and ``calls``
    counts the windows read, both as of the iteration so far.
    """

    def __init__(
        self,
        fetch: FetchWindow,
        device: DeviceIdentifier,
        earliest: int,
        latest: int,
        start: Position | None = None,
    ) -> None:
        self._fetch = fetch
        self.device = device
        self.earliest = earliest
        self.latest = latest
        self.start = start or Position(earliest, 0)
        self.gaps: list[HistoryGap] = []
        self.calls = 0

    async def _read(self) -> AsyncIterator[tuple[int, HistoryWindow, int, Position | None]]:
        """Each window read: its start, the reply, the offset to begin at, what follows."""
        position: Position | None = self.start
        while position is not None:
            window_start, offset = position
            window = await self._fetch(self.device, window_start, self.latest)
            self.calls += 1
            position, gap = next_window(window, self.latest)
            if gap is not None:
                self.gaps.append(gap)
            yield window_start, window, offset, position

    async def windows(self) -> AsyncIterator[tuple[Iterator[PagedEvent], bool]]:
        """Each window's events from the current position on, and whether more follow."""
        async for start, window, offset, following in self._read():
            yield islice(_items(start, window, following), offset, None), following is not None

    async def known(self) -> AsyncIterator[tuple["KnownWindow", int, bool]]:
        """Each window as a ``KnownWindow``, the offset to begin at, and whether more
        windows follow: for readers of windows the cache keeps, read again and again."""
        async for start, window, offset, following in self._read():
            known = known_windows.get(start, window, self.latest, following)
            yield known, offset, following is not None

    async def events(self) -> AsyncIterator[tuple[ProvisioningEvent, ...]]:
        """The events alone, a window's worth at a time: for readers that need no
        positions (reports, exports), which then cost nothing per event."""
        async for _, window, offset, _ in self._read():
            yield window.events[offset:]

    async def __aiter__(self) -> AsyncIterator[PagedEvent]:
        async for items, _ in self.windows():
            for item in items:
                yield item


_occurred_at = attrgetter("occurred_at")


def _items(
    start: int, window: HistoryWindow, next_position: Position | None
) -> tuple[PagedEvent, ...]:
    """A window's events, each with its position and rank. Made for every event of every
    window read: so built by ``map`` in C (``tuple.__new__`` from zipped fields, without
    the records' Python-level ``__new__``)."""
    events = window.events
    ranks: list[int] = []
    rank, previous = 0, None
    for instant in map(_occurred_at, events):
        rank = rank + 1 if instant == previous else 0
        previous = instant
        ranks.append(rank)
    items = list(
        map(
            _new_item,
            zip(events, repeat(start), range(len(events)), ranks, repeat(False), repeat(None)),
        )
    )
    if items:
        items[-1] = items[-1]._replace(last=True, following=next_position)
    return tuple(items)


_new_item = partial(tuple.__new__, PagedEvent)


REMEMBERED_EVENTS = 24_000
"""Events of the windows kept as ``KnownWindow``s, most recently read first: two years of
a busy device. With what the GraphQL layer keeps of them (edges, their cursors, their
completed response dicts) that is about 1.1 KiB an event (`bench/whole_history.py`), on
top of the cache's own: some 26 MiB at most."""


@dataclass(eq=False, slots=True)
class KnownWindow:
    """A window as paged items, made once for every read of the same window object.

    The in-process cache hands out the very object it stored, and an object the cache
    holds never changes: so its items, and whatever readers make of them, hold for every
    read of it. ``derived`` keeps what readers make, under keys of their own that name
    whatever else it depends on (a cursor's range and secret, say).
    """

    start: int
    window: HistoryWindow
    latest: int
    items: tuple[PagedEvent, ...]
    derived: dict[object, object] = field(default_factory=dict)


class KnownWindows:
    """The ``KnownWindow``s of the windows most recently read, up to ``events`` events."""

    def __init__(self, events: int) -> None:
        self._max_events = events
        self._events = 0
        # Keyed by the window's identity: each entry holds its window, so no other
        # object can take that identity while the entry lives.
        self._known: OrderedDict[tuple[int, int, int], KnownWindow] = OrderedDict()
        # Servers in tests share the process, each on a thread of its own.
        self._lock = threading.Lock()

    def get(
        self, start: int, window: HistoryWindow, latest: int, following: Position | None
    ) -> KnownWindow:
        key = (id(window), start, latest)
        with self._lock:
            known = self._known.get(key)
            if known is not None:
                self._known.move_to_end(key)
                return known
        known = KnownWindow(start, window, latest, _items(start, window, following))
        with self._lock:
            if key in self._known:  # made meanwhile on another thread
                return self._known[key]
            self._known[key] = known
            self._events += len(known.items)
            while self._events > self._max_events and len(self._known) > 1:
                _, gone = self._known.popitem(last=False)
                self._events -= len(gone.items)
        return known


known_windows = KnownWindows(REMEMBERED_EVENTS)


Matcher = Callable[[ProvisioningEvent], bool]


def match_all(event: ProvisioningEvent) -> bool:
    return True


def matcher(
    event_types: Sequence[str] | None,
    statuses: Sequence[str] | None,
    users: Sequence[str] | None,
) -> tuple[Matcher, list[list[str] | None] | None]:
    """Keeps events whose fields equal one of the values, in any case; and the filter in
    canonical form (for cursor scopes and stored requests). No values at all: no filter."""
    if event_types is None and statuses is None and users is None:
        return match_all, None
    canonical = [
        sorted({v.lower() for v in values}) if values is not None else None
        for values in (event_types, statuses, users)
    ]
    types_, statuses_, users_ = (set(c) if c is not None else None for c in canonical)

    def matches(event: ProvisioningEvent) -> bool:
        return (
            (types_ is None or event.event_type.lower() in types_)
            and (statuses_ is None or event.status.lower() in statuses_)
            and (users_ is None or (event.event_by or "").lower() in users_)
        )

    return matches, canonical


@dataclass
class HistoryPage:
    items: list[PagedEvent]
    has_next: bool
    has_previous: bool
    gaps: list[HistoryGap] = field(default_factory=list)
    windows: dict[int, KnownWindow] = field(default_factory=dict)
    """The windows read, by start: most items are some window's own (``KnownWindow.items``)."""


async def read_forward(
    fetch: FetchWindow,
    device: DeviceIdentifier,
    earliest: int,
    latest: int,
    first: int,
    after: EventRef | None = None,
    before: EventRef | None = None,
    matches: Matcher = match_all,
) -> HistoryPage:
    """Up to ``first`` matching events after ``after`` (and before ``before``), oldest first.

    Reads no window beyond the one that fills the page: hasNext is decided from what that
    window shows (with a filter, it can be true when the rest of the range holds no match).
    """
    if after is not None and after.after is None:
        return HistoryPage([], False, True)
    pager = HistoryPager(fetch, device, earliest, latest, after.after if after else None)
    items: list[PagedEvent] = []
    windows: dict[int, KnownWindow] = {}

    def page(has_next: bool) -> HistoryPage:
        return HistoryPage(items, has_next, after is not None, pager.gaps, windows)

    unbounded = before is None and matches is match_all
    async for known, offset, more in pager.known():
        windows[known.start] = known
        if unbounded and first:
            # Every event counts: the page is a slice of each window in turn.
            items += known.items[offset : offset + first - len(items)]
            if len(items) == first:
                return page(more or items[-1].after is not None)
            continue
        for item in islice(known.items, offset, None):
            if before is not None and item.order >= before.order:
                return page(True)
            if not matches(item.event):
                continue
            if len(items) == first:
                return page(True)
            items.append(item)
            if len(items) == first and (more or unbounded):
                # What follows is known without reading another window.
                return page(more or item.after is not None)
        if more and len(items) == first:
            return page(True)
    return page(False)


async def count(
    fetch: FetchWindow,
    device: DeviceIdentifier,
    earliest: int,
    latest: int,
    matches: Matcher = match_all,
) -> tuple[int, list[HistoryGap]]:
    """How many events of the range match (a full read of the range), and any gaps."""
    total = 0
    pager = HistoryPager(fetch, device, earliest, latest)
    async for events in pager.events():
        total += len(events) if matches is match_all else sum(map(matches, events))
    return total, pager.gaps


FIRST_SPAN = 86_400 * 10_000_000
"""A backward search first looks one day back, then eight times further each step."""
SPAN_GROWTH = 8


def _reach(window: HistoryWindow, target: EventRef | None) -> int | None:
    """How many events of ``window`` come before ``target`` (None: range end), or None
    when the window stops short of it."""
    events = window.events
    if target is None:
        return len(events) if window.is_complete else None
    first_at = bisect_left(events, target.instant, key=_occurred_at)
    index = first_at + target.rank
    if index < len(events) and events[index].occurred_at == target.instant:
        return index
    if window.is_complete or (events and events[-1].occurred_at > target.instant):
        # The target's instant holds fewer events than its rank says: the history
        # changed since the cursor was made. Everything of that instant comes before.
        return bisect_left(events, target.instant + 1, key=_occurred_at)
    return None


class _Found(NamedTuple):
    start: int
    window: HistoryWindow
    reached: int
    """How many events of the window come before the target."""
    crowded: int | None
    """An instant just before the window holding over 500 events, which stopped the search."""


async def _window_before(
    fetch: FetchWindow,
    device: DeviceIdentifier,
    earliest: int,
    latest: int,
    target: EventRef | None,
    wanted: int,
    hint: int | None,
) -> _Found:
    """A window [s, latest] holding ``wanted`` events before ``target``, or all there are
    from ``earliest`` on."""
    ceiling = target.instant if target is not None else latest
    too_early: int | None = None
    too_late = ceiling + 1  # a window from here has no event before the target
    best = _Found(too_late, HistoryWindow((), True), 0, None)
    span = FIRST_SPAN
    start = hint if hint is not None and earliest <= hint <= ceiling else None
    if start is None and target is None:
        # Most histories fit one window: then the whole range answers at once, and it is
        # the very window a forward read starts with.
        window = await fetch(device, earliest, latest)
        if window.is_complete:
            return _Found(earliest, window, len(window.events), None)
    if start is None:
        start = max(earliest, ceiling - span)
    while True:
        window = await fetch(device, start, latest)
        reached = _reach(window, target)
        if reached is None:
            too_early = start
        elif reached >= wanted or start <= earliest:
            return _Found(start, window, reached, None)
        else:
            too_late, best = start, _Found(start, window, reached, None)
        if too_early is None:
            while max(earliest, ceiling - span) >= too_late:
                span *= SPAN_GROWTH
            start = max(earliest, ceiling - span)
            span *= SPAN_GROWTH
        elif too_late - too_early <= 1:
            return best._replace(crowded=too_early)
        else:
            start = (too_early + too_late) // 2


async def read_backward(
    fetch: FetchWindow,
    device: DeviceIdentifier,
    earliest: int,
    latest: int,
    last: int,
    before: EventRef | None = None,
    after: EventRef | None = None,
    matches: Matcher = match_all,
) -> HistoryPage:
    """The ``last`` matching events before ``before`` (or the range end), oldest first.

    The upstream only reads forward from a start instant, so this searches for a start
    whose window holds enough events before the target: the whole range when it fits one
    window, else one day back, then eight times further each step, then halving the gap
    once a window overshoots (holds more than 500 events before the target). It never
    reads the range from its beginning.
    """
    wanted = last + 1  # one more than the page, to tell whether earlier events exist
    collected: list[PagedEvent] = []
    gaps: list[HistoryGap] = []
    windows: dict[int, KnownWindow] = {}

    def page(exhausted: bool) -> HistoryPage:
        has_previous = len(collected) > last or not exhausted
        return HistoryPage(collected[:last][::-1], before is not None, has_previous, gaps, windows)

    target, hint = before, before.at.window_start if before else None
    while True:
        found = await _window_before(
            fetch, device, earliest, latest, target, wanted - len(collected), hint
        )
        following = next_window(found.window, latest)[0]
        known = known_windows.get(found.start, found.window, latest, following)
        windows[known.start] = known
        batches = [known.items[: found.reached]]
        if found.crowded is not None:
            # The instant just before this window holds too many events to read it and
            # what follows in one window: read that instant alone. Where it holds over
            # 500, the upstream gives the first 500 (as to the forward pager): a gap.
            crowd = await fetch(device, found.crowded, latest)
            crowd_known = known_windows.get(
                found.crowded, crowd, latest, next_window(crowd, latest)[0]
            )
            windows[crowd_known.start] = crowd_known
            batches.append(
                tuple(i for i in crowd_known.items if i.event.occurred_at == found.crowded)
            )
            if len(batches[-1]) == len(crowd.events) and not crowd.is_complete:
                gaps.append(HistoryGap(found.crowded, len(crowd.events)))
        for batch in batches:
            for item in reversed(batch):
                if after is not None and item.order <= after.order:
                    return page(exhausted=True)
                if matches(item.event):
                    collected.append(item)
        oldest = batches[-1][0] if batches[-1] else None
        exhausted = found.start <= earliest and found.crowded is None
        if len(collected) >= wanted or exhausted or oldest is None:
            return page(exhausted)
        target, hint = EventRef.of(oldest), None
