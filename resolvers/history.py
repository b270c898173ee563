"""The lossless history pager over GetDeviceProvisioningHistory.

The upstream returns at most 500 events a call, oldest first, and says whether that was
all (IsComplete). Its documented rule, "ask again from the last event plus 1 ms", drops
every later event of that millisecond. This pager asks again from the last event's exact
instant and skips the events of that instant it already delivered, so it loses nothing;
that re-read is the whole price (DESIGN.md).

Windows are cut the same way on every read: each next window's start follows from the
previous reply alone. So a ``Position`` (window start, offset into its reply) names any
event for good, a cursor can resume from one with a single call, and a cache can key on
windows. This relies on the upstream ordering events of one instant the same way on
every call, as it does.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

from models.devices import DeviceIdentifier
from models.events import HistoryWindow, ProvisioningEvent
from models.instants import format_instant

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
    at: Position
    """This event's own position."""
    after: Position | None
    """The next event's position, or None when this is the last event of the range."""


class HistoryPagingError(Exception):
    """The upstream said a window was incomplete but returned no event to resume after."""


def next_window(window: HistoryWindow, latest: int) -> tuple[Position | None, HistoryGap | None]:
    """Where the window after ``window`` begins, and any gap the upstream leaves before it."""
    if window.is_complete:
        return None, None
    events = window.events
    if not events:
        raise HistoryPagingError("the upstream reported an incomplete window with no events")
    last = events[-1].occurred_at
    same = 1
    while same < len(events) and events[-1 - same].occurred_at == last:
        same += 1
    if same < len(events):
        return Position(last, same), None
    # The whole reply is one instant: asking again from it returns the same events, so
    # the rest of that instant cannot be had. Go on just after it and say so.
    gap = HistoryGap(last, same)
    return (Position(last + 1, 0) if last < latest else None), gap


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

    async def __aiter__(self) -> AsyncIterator[PagedEvent]:
        position: Position | None = self.start
        while position is not None:
            window_start, offset = position
            window = await self._fetch(self.device, window_start, self.latest)
            self.calls += 1
            position, gap = next_window(window, self.latest)
            if gap is not None:
                self.gaps.append(gap)
            events = window.events
            for index in range(offset, len(events)):
                after = Position(window_start, index + 1) if index + 1 < len(events) else position
                yield PagedEvent(events[index], Position(window_start, index), after)
